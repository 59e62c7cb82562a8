"""Labels for backbones without an encoder (a GAN): their latents are sampled, so the labels come from a classifier
reading what each latent generates, as the paper did for StyleGAN with an external face classifier.

The labeller is the judge's network trained on the dataset's labelled subset only, the data a user really has; the
evaluation judge is trained separately on every combination, so what is judged never depends on what labelled the
training data. A discrete label predicted with less than `threshold` confidence is left missing (the prior treats it
as a mixture), and the dataset's `labelled` rules then apply to the predicted labels as to real ones: held-out
combinations removed (and half ones, such as a triangle of unsure colour, blanked), correlated pairs, `size` labelled
latents, where the labeller's own `size` (null: every training latent the pairing allows, as the paper labelled all its
StyleGAN samples) replaces the dataset's: labels cost nothing here.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from plugen_core.datasets.labels import select_labelled
from plugen_core.evaluation import summarise
from plugen_core.io import PlugenInputError
from plugen_core.judge import Judge
from plugen_core.resume import TrainingState
from plugen_core.schema import Schema

def train_labeller(schema: Schema, samples: np.ndarray, labelled: pd.DataFrame, p: dict, device, generator: torch.Generator, state: TrainingState | None = None) -> Judge:
    """A classifier trained on the labelled subset (`labelled.id` indexes `samples`)."""
    labeller = Judge(schema, input_shape=samples.shape[1:], width=p["width"])
    labeller.fit(samples[labelled["id"].to_numpy()], labelled.reset_index(drop=True), p["epochs"], p["batch_size"], p["lr"], p["augment"], device, generator, state)
    return labeller


def label_generated(labeller: Judge, generated: np.ndarray, index: pd.DataFrame, rules: dict, threshold: float, rng: np.random.Generator) -> tuple[pd.DataFrame, dict]:
    """The labelled table (id + attributes, NaN where unsure) for generated samples, and counts for the record."""
    predicted, confidence = labeller.read(labeller.outputs(generated))
    unsure = {name: int((confidence[name] < threshold).sum()) for name in confidence}
    for name in confidence:
        predicted[name] = predicted[name].astype(object).where(confidence[name].to_numpy() >= threshold, np.nan)
    table = pd.concat([index[["id", "split"]].reset_index(drop=True), predicted], axis=1)
    try:
        chosen, held_out = select_labelled(table, rules, rng)
    except PlugenInputError as e:
        raise PlugenInputError(f"labelling generated samples: {e}; lower labeller.count or the threshold") from e
    stats = {"generated": len(generated), "threshold": threshold, "labelled": len(chosen), "unsure": unsure, "held_out": held_out}
    return chosen.drop(columns="split"), stats


def accuracy_on_test(labeller: Judge, samples: np.ndarray, labels: pd.DataFrame) -> dict[str, float]:
    """How well the labeller reads real test samples (the labels it gives generated ones are as good as this)."""
    test = (labels["split"] == "test").to_numpy() & labels[labeller.schema.names].notna().all(axis=1).to_numpy()
    return summarise(labeller.predict(samples[test]), labels[test].reset_index(drop=True), labeller.schema, "labeller")
