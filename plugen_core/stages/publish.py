"""Stage `publish@<name>` of the pretraining pipeline (zoo/dvc.yaml): a backbone (an experiment of zoo/params.yaml) or
the dataset's judge (`--judge <dataset>`), trained by the same stages as the main pipeline, written as a shippable
checkpoint into build/: `<name>.safetensors`, its model card `<name>.card.yaml` (what it is, how it was made, how good
it is), its training curves `<name>.history.csv` and `<name>.curves.png`, and `<name>.samples.png`. Shipping is
copying those files into zoo/checkpoints/ and committing them; the main pipeline verifies them against the card."""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from plugen_core import checkpoints, config, plots
from plugen_core.backbones import load_backbone
from plugen_core.backbones.molecule_vae import SelfiesVAE
from plugen_core.evaluation import FeatureExtractor, fid_kid, summarise
from plugen_core.io import load_checkpoint, load_params, read_array, read_table, run_stage, seed_everything, write_table
from plugen_core.judge import Judge
from plugen_core.layout import DatasetLayout, Layout

BUILD = Path("build")
N_QUALITY = 2000  # samples (and test images) the card's quality figures are measured on


def provenance(seed: int) -> dict:
    """Where and from what a checkpoint was made."""
    git = lambda *args: subprocess.run(["git", *args], capture_output=True, text=True).stdout.strip()  # noqa: E731
    return {
        "seed": seed,
        "commit": git("describe", "--always", "--dirty", "--abbrev=40"),  # -dirty: trained from uncommitted code
        "hardware": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}, python {platform.python_version()}, torch {torch.__version__}",
    }


def publish_judge(params: dict, dataset: str) -> None:
    layout = DatasetLayout(dataset)
    judge = Judge.load(layout.judge)
    trained = load_checkpoint(layout.judge).get("trained", {})
    labels = read_table(layout.labels)
    test = (labels["split"] == "test").to_numpy()
    quality = summarise(judge.predict(read_array(layout.samples)[test]), labels[test].reset_index(drop=True), judge.schema, "judge")
    history = read_table(layout.judge_history)
    card = {
        "name": f"{dataset}-judge",
        "kind": "judge",
        "config": {"input_shape": list(judge.input_shape), "width": judge.width},
        "schema": judge.schema.to_dict(),
        "data": {"dataset": dataset, "params": params["datasets"][dataset], "trained_on": "train split, every combination"},
        "training": params["judge"] | trained,
        "reproduce": f"cd zoo && dvc repro publish-judge@{dataset}",
        **provenance(params.get("seed", 0)),
        "quality": {k: round(float(v), 4) for k, v in quality.items()},
    }
    write(f"{dataset}-judge", judge.state_dict(), card, history, ["loss"], None)


def latent_probe(backbone, judge: Judge, generator, n_fit: int = 8000, n_test: int = N_QUALITY) -> dict[str, float]:
    """How much of each attribute the latent a plugin works in carries: an MLP probe fit on `n_fit` prior draws to the
    judge's reading of what they decode to, scored on `n_test` more (accuracy for a discrete attribute, R^2 for a
    continuous one). What the probe cannot read off the latent, no plugin in that latent can set reliably."""
    from sklearn.neural_network import MLPClassifier, MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    latents = backbone.sample_prior(n_fit + n_test, generator)
    read, x = judge.predict(backbone.decode_data(latents)), latents.numpy()
    out = {}
    for a in judge.schema.attributes:
        y = read[a.name].to_numpy()
        kind, probe = ("r2", MLPRegressor) if a.kind == "continuous" else ("accuracy", MLPClassifier)
        fitted = make_pipeline(StandardScaler(), probe(hidden_layer_sizes=(256, 256), early_stopping=True, random_state=0)).fit(x[:n_fit], y[:n_fit])
        out[f"latent_probe.{a.name}.{kind}"] = float(fitted.score(x[n_fit:], y[n_fit:]))
    return out


def image_quality(backbone, layout, samples: np.ndarray, labels: pd.DataFrame, real: np.ndarray, test_labels: pd.DataFrame, generator) -> tuple[dict, str, Callable]:
    """Judge-feature FID/KID of prior samples (and reconstructions), the judge's accuracy on reconstructions and its
    confidence on samples, the latent probe; what the figures mean; what draws a grid of samples to a path."""
    judge = Judge.load(layout.judge)
    fakes = {"samples": backbone.decode_data(backbone.sample_prior(N_QUALITY, generator))}
    quality: dict[str, float] = {}
    if backbone.has_encoder:
        fakes["reconstructions"] = backbone.decode_data(backbone.encode_data(real))
        quality |= summarise(judge.predict(fakes["reconstructions"]), test_labels, judge.schema, "judge_on_reconstructions")
    quality |= fid_kid(FeatureExtractor(judge), real, fakes, 500, judge.to_input)
    _, confidence = judge.read(judge.outputs(fakes["samples"]))
    quality["judge_confident_on_samples"] = float((confidence >= 0.9).all(axis=1).mean())  # every discrete attribute readable
    quality |= latent_probe(backbone, judge, generator)
    grid = fakes["samples"][:64].reshape(8, 8, *real.shape[1:])
    draw = lambda path, title: plots.image_grid(grid, [""] * 8, [], path, title)  # noqa: E731
    return quality, f"FID/KID on the judge's features (not Inception), {N_QUALITY} samples vs {N_QUALITY} real test images; judge: {layout.judge}; latent_probe: judge's reading of prior samples off their latents", draw


def molecule_quality(backbone, layout, samples: np.ndarray, labels: pd.DataFrame, real: np.ndarray, test_labels: pd.DataFrame, generator) -> tuple[dict, str, Callable]:
    """Validity, uniqueness and novelty of prior samples, exact reconstruction and Tanimoto of test molecules, and how
    well each property can be read off the latent means (R^2 of a linear and of an MLP probe, fit on training
    molecules, scored on test ones); a drawing of prior samples."""
    from sklearn.linear_model import RidgeCV
    from sklearn.neural_network import MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from plugen_core import chemistry
    from plugen_core.molecule_evaluation import quality

    train = samples[(labels["split"] == "train").to_numpy()]
    prior = backbone.decode_data(backbone.sample_prior(N_QUALITY, generator))
    test_latents = backbone.encode_data(real)
    reconstructions = backbone.decode_data(test_latents)
    out = quality(prior, set(train), "samples") | {
        "reconstruction_exact": float((reconstructions == real).mean()),
        "reconstruction_tanimoto_median": float(np.median(chemistry.tanimoto(real, reconstructions))),
    }
    fit_rows = np.flatnonzero((labels["split"] == "train").to_numpy())[:5000]
    fit_latents, test_latents = backbone.encode_data(samples[fit_rows]).numpy(), test_latents.numpy()
    for name in chemistry.PROPERTIES:
        y_fit, y_test = labels[name].to_numpy(float)[fit_rows], test_labels[name].to_numpy(float)
        linear = make_pipeline(StandardScaler(), RidgeCV()).fit(fit_latents, y_fit)
        mlp = make_pipeline(StandardScaler(), MLPRegressor(hidden_layer_sizes=(256, 256), early_stopping=True, random_state=0)).fit(fit_latents, (y_fit - y_fit.mean()) / y_fit.std())
        out[f"probe_r2.linear.{name}"] = float(linear.score(test_latents, y_test))
        out[f"probe_r2.mlp.{name}"] = float(mlp.score(test_latents, (y_test - y_fit.mean()) / y_fit.std()))
    legends = [", ".join(f"{k} {v:.2f}" for k, v in row.items()) for _, row in chemistry.properties(prior[:24]).iterrows()]
    draw = lambda path, title: chemistry.draw_grid(prior[:24], legends, 6, path, title)  # noqa: E731
    return out, f"{N_QUALITY} prior samples and {len(real)} test molecules; novelty against the {len(train)} training molecules; probes fit on {len(fit_rows)} training molecules' latent means", draw


def publish_backbone(params: dict, experiment: str) -> None:
    cfg = config.experiment(params, experiment)
    layout = Layout(cfg)
    generator = seed_everything(cfg["seed"])
    backbone = load_backbone(layout.backbone, cfg["backbone"])
    trained = load_checkpoint(layout.backbone).get("trained", {})
    samples, labels = read_array(layout.samples), read_table(layout.labels)
    test = (labels["split"] == "test").to_numpy()
    real, test_labels = samples[test][:N_QUALITY], labels[test].reset_index(drop=True).iloc[:N_QUALITY]
    measure = molecule_quality if isinstance(backbone, SelfiesVAE) else image_quality
    quality, note, draw_samples = measure(backbone, layout, samples, labels, real, test_labels, generator)
    history = read_table(layout.backbone_history)
    p = cfg["backbone"]
    card = {
        "name": experiment,
        "kind": backbone.kind,
        "config": backbone.config(),
        "data": {"dataset": cfg["dataset"]["name"], "params": params["datasets"][cfg["dataset"]["name"]], "trained_on": "train split, no labels"},
        "training": {k: p[k] for k in ("epochs", "batch_size", "lr") if k in p} | trained,
        "reproduce": f"cd zoo && dvc repro publish@{experiment}",
        **provenance(cfg["seed"]),
        "quality": {k: round(float(v), 4) for k, v in quality.items()},
        "quality_note": note,
    }
    write(experiment, backbone.state_dict(), card, history, [c for c in history.columns if c not in ("epoch", "lr")], draw_samples)


def write(name: str, state: dict, card: dict, history: pd.DataFrame, curves: list[str], draw_samples: Callable | None) -> None:
    checkpoints.write(BUILD / f"{name}.safetensors", state, card | {"files": {"history": f"{name}.history.csv", "curves": f"{name}.curves.png"} | ({"samples": f"{name}.samples.png"} if draw_samples else {})})
    write_table(history, BUILD / f"{name}.history.csv")
    if curves and len(history):
        plots.training_curves(history, curves, BUILD / f"{name}.curves.png", f"{name}: pretraining")
    if draw_samples:
        draw_samples(BUILD / f"{name}.samples.png", f"{name}: samples from its prior")
    print(f"[publish] {BUILD}/{name}.safetensors and its card: {card['quality']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    which = ap.add_mutually_exclusive_group(required=True)
    which.add_argument("--experiment", help="a backbone: an entry of the params' experiments")
    which.add_argument("--judge", help="the judge of this dataset")
    args = ap.parse_args()
    params = load_params(args.params)
    if args.judge:
        config.dataset(params, args.judge)
        publish_judge(params, args.judge)
    else:
        publish_backbone(params, args.experiment)


if __name__ == "__main__":
    run_stage(main)
