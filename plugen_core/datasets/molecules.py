"""Molecules: SMILES strings whose attributes are properties RDKit computes exactly (logP, QED, SA score, weight).

    source: moses                # the MOSES benchmark (a cleaned ZINC subset) as the molsets wheel ships it
    input: plugen_core/datasets/molecules.py
    n_train: 12000               # random molecules of MOSES's 1.58 M training set (seeded)
    n_test: 2000                 # ... and of its test set
    max_tokens: 49               # optional: leave out molecules longer than this many SELFIES tokens
    properties: [logp, qed, sas, mw]   # the attributes (any of RDKit's four, chemistry.PROPERTIES)

    source: molecules            # bring-your-own: a CSV or parquet table with a SMILES column
    input: byo/molecules.csv
    smiles_column: SMILES
    properties: [logp, qed, sas, mw]
    invalid: refuse              # refuse: an invalid SMILES is an error naming its row | skip: listed, then left out
    test_fraction: 0.1

Samples are canonical SMILES (a fixed-width text array: stored without pickle). Every molecule's properties are computed
by RDKit (plugen_core/chemistry.py) once, here, and cached by DVC with the data; RDKit is also the judge that reads them
off generated molecules, so only properties it computes can be attributes.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd

from plugen_core import chemistry
from plugen_core.datasets.labels import assign_splits
from plugen_core.io import PlugenInputError, read_table, require_file

INVALID = ("refuse", "skip")


def moses_file(name: str) -> Path:
    """A data file of the molsets wheel, found without importing `moses` (whose import fails on current RDKit)."""
    spec = importlib.util.find_spec("moses")
    if spec is None or not spec.submodule_search_locations:
        raise PlugenInputError("source 'moses' needs the molsets wheel: pip install --no-deps molsets==0.3.1 (its pinned dependencies do not install; the data files need none of them)")
    return require_file(Path(spec.submodule_search_locations[0]) / "dataset" / "data" / name, "MOSES data")


def with_properties(entry: dict, smiles: np.ndarray, split: np.ndarray) -> tuple[np.ndarray, pd.DataFrame, list[dict]]:
    """Samples, labels (id, split, each property) and the spec: continuous attributes over the ranges the data spans."""
    names = entry.get("properties", list(chemistry.PROPERTIES))
    unknown = [n for n in names if n not in chemistry.PROPERTIES] if isinstance(names, list) and names else ["(none listed)"]
    if unknown:
        raise PlugenInputError(f"datasets.{entry['name']}.properties: {unknown} not computable; choose from {list(chemistry.PROPERTIES)}")
    props = chemistry.properties(smiles)[names]
    labels = pd.concat([pd.DataFrame({"id": np.arange(len(smiles)), "split": split}), props], axis=1)
    spec = [{"name": n, "kind": "continuous", "low": float(props[n].min()), "high": float(props[n].max()), "unit": chemistry.UNITS[n]} for n in names]
    return smiles.astype(str), labels, spec


def selfies_tokens(smiles: np.ndarray) -> np.ndarray:
    import selfies as sf

    return np.array([sf.len_selfies(e) for e in chemistry.selfies_of(smiles)])


def prepare_moses(entry: dict, rng: np.random.Generator) -> tuple[np.ndarray, pd.DataFrame, list[dict]]:
    """`max_tokens` (optional): leave out molecules longer than that many SELFIES tokens, the most a backbone reads
    (the shipped one: the longest of its 150k training molecules); the stage says how many it left out."""
    parts, longest = [], entry.get("max_tokens")
    for split, name, key in (("train", "train.csv.gz", "n_train"), ("test", "test.csv.gz", "n_test")):
        smiles = pd.read_csv(moses_file(name))["SMILES"].to_numpy(str)
        n = entry[key]
        if not isinstance(n, int) or not 0 < n <= len(smiles):
            raise PlugenInputError(f"datasets.{entry['name']}.{key} must be a whole number in [1, {len(smiles)}], got {n!r}")
        drawn = chemistry.canonical(smiles[np.sort(rng.permutation(len(smiles))[: min(len(smiles), n + n // 50 + 10)])])
        if longest:  # drawn with 2% to spare, the longest left out, then as many as asked
            fits = selfies_tokens(drawn) <= longest
            print(f"[data] {split}: {int((~fits[:n]).sum())} of the first {n} molecules drawn are over {longest} SELFIES tokens, left out")
            drawn = drawn[fits]
        if len(drawn) < n:
            raise PlugenInputError(f"datasets.{entry['name']}: only {len(drawn)} of the molecules drawn fit max_tokens {longest}; raise it")
        parts.append((drawn[:n], split))
    return with_properties(entry, np.concatenate([p[0] for p in parts]), np.concatenate([[s] * len(p) for p, s in parts]))


def prepare_table(entry: dict, rng: np.random.Generator) -> tuple[np.ndarray, pd.DataFrame, list[dict]]:
    path = require_file(entry["input"], f"datasets.{entry['name']}.input")
    table = read_table(path)
    column, invalid = entry.get("smiles_column", "SMILES"), entry.get("invalid", "refuse")
    if column not in table:
        raise PlugenInputError(f"{path}: no SMILES column '{column}' (the table has {list(table.columns)}); set smiles_column")
    if invalid not in INVALID:
        raise PlugenInputError(f"datasets.{entry['name']}.invalid must be one of {INVALID}, got {invalid!r}")
    smiles = chemistry.canonical(table[column].fillna("").astype(str))
    bad = np.flatnonzero(smiles == "")
    if len(bad):
        listed = ", ".join(f"row {r}: {table[column].iloc[r]!r}" for r in bad[:10])
        if invalid == "refuse":
            raise PlugenInputError(f"{path}: {len(bad)} invalid SMILES ({listed}{', ...' if len(bad) > 10 else ''}); fix them, or set invalid: skip to leave them out")
        print(f"[data] {path}: skipping {len(bad)} invalid SMILES of {len(table)}: {listed}{', ...' if len(bad) > 10 else ''}")
    keep = smiles[smiles != ""]
    return with_properties(entry, keep, assign_splits(len(keep), {"test": entry.get("test_fraction", 0.1)}, rng))
