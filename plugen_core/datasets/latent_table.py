"""Bring-your-own latents: an array of latent codes (e.g. StyleFlow's 10k StyleGAN W latents) plus a labels table,
one row per latent in the same order. The plugin then trains and is judged in latent space, no decoder needed.

    source: latents
    input: byo/stylegan-w        # the folder DVC tracks
    latents: latents.npy         # inside `input`: .npy or .pt, shape (rows, dim)
    labels: labels.csv           # inside `input`: CSV, parquet or CelebA's list_attr_celeba.txt layout
    attributes: null             # the columns to use (null: every column but `file`)
    test_fraction: 0.1           # rows held out for evaluation
    judge_fraction: 0.1          # rows the latent-space judge trains on (the flow never sees their labels)
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from plugen_core.datasets.labels import assign_splits, infer_spec, read_labels
from plugen_core.io import PlugenInputError, read_array


def prepare(entry: dict, rng: np.random.Generator) -> tuple[np.ndarray, pd.DataFrame, list[dict]]:
    folder = Path(entry["input"])
    if not folder.is_dir():
        raise PlugenInputError(f"{folder}: folder not found (datasets.{entry['name']}.input)")
    latents_path, labels_path = folder / entry.get("latents", "latents.npy"), folder / entry.get("labels", "labels.csv")
    latents = read_array(latents_path)
    if latents.ndim != 2 or not np.issubdtype(latents.dtype, np.number):
        raise PlugenInputError(f"{latents_path}: expected a 2-D numeric array (rows, dim), got shape {latents.shape} of {latents.dtype}")
    bad_rows = np.flatnonzero(~np.isfinite(latents).all(axis=1))
    if len(bad_rows):
        raise PlugenInputError(f"{latents_path}: {len(bad_rows)} row(s) hold NaN or inf, first at row {bad_rows[0]}")
    table = read_labels(labels_path)
    if len(table) != len(latents):
        raise PlugenInputError(f"{labels_path} has {len(table)} rows but {latents_path} has {len(latents)} latents; they must match row by row")
    names = entry.get("attributes") or [c for c in table.columns if c != "file"]
    table, spec = infer_spec(table, names, labels_path)
    fractions = {"test": entry.get("test_fraction", 0.1), "judge": entry.get("judge_fraction", 0.1)}
    labels = pd.DataFrame({"id": np.arange(len(latents)), "split": assign_splits(len(latents), fractions, rng)})
    labels = pd.concat([labels, table[names].reset_index(drop=True)], axis=1)
    return latents.astype(np.float32), labels, spec
