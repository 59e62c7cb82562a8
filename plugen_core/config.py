"""Experiments and datasets as `params.yaml` lists them, resolved into the plain dict each stage reads.

    datasets:     {<name>: {source: shapes | images | latents, input: <path DVC tracks>, ...}}
    experiments:  {<name>: {dataset: <name>, backbone: {kind: ...}, labeller: {...}, flow: {...}, evaluate: {...}}}

An experiment's `flow` and `evaluate` entries override the shared top-level sections key by key; `labeller` is
needed only by backbones without an encoder (their samples are labelled by a classifier). Every entry is
checked up front, so a typo fails the first stage with the entry's name, not a later one with a KeyError.
"""
from __future__ import annotations

import copy

from plugen_core.io import PlugenInputError, section

SOURCES = ("shapes", "images", "latents")
SHARED = ("flow", "evaluate")
EXPERIMENT_KEYS = {"dataset", "backbone", "labeller", "flow", "evaluate"}


def merge(base: dict, override: dict) -> dict:
    """`base` with `override`'s keys replaced, recursively for nested dicts."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else copy.deepcopy(value)
    return out


def dataset(params: dict, name: str) -> dict:
    """The dataset entry `name`, with its name added."""
    datasets = section(params, "datasets")
    if name not in datasets:
        raise PlugenInputError(f"params: dataset '{name}' is not listed under datasets (known: {sorted(datasets)})")
    entry = datasets[name]
    if not isinstance(entry, dict) or entry.get("source") not in SOURCES:
        raise PlugenInputError(f"params: datasets.{name}.source must be one of {SOURCES}, got {entry.get('source') if isinstance(entry, dict) else entry!r}")
    if "input" not in entry:
        raise PlugenInputError(f"params: datasets.{name}.input is missing (the file or folder the dataset is read from)")
    return {"name": name, **entry}


def experiment(params: dict, name: str) -> dict:
    """Everything one experiment's stages read: seed, device, its dataset, backbone and labeller, the shared sections
    with its overrides, and tracking with the experiment's name."""
    experiments = section(params, "experiments")
    if name not in experiments:
        raise PlugenInputError(f"params: experiment '{name}' is not listed under experiments (known: {sorted(experiments)})")
    entry = experiments[name]
    if not isinstance(entry, dict):
        raise PlugenInputError(f"params: experiments.{name} must be a mapping, got {entry!r}")
    unknown = set(entry) - EXPERIMENT_KEYS
    if unknown:
        raise PlugenInputError(f"params: experiments.{name} has unknown key(s) {sorted(unknown)} (allowed: {sorted(EXPERIMENT_KEYS)})")
    for key in ("dataset", "backbone"):
        if key not in entry:
            raise PlugenInputError(f"params: experiments.{name}.{key} is missing")
    if not isinstance(entry["backbone"], dict) or "kind" not in entry["backbone"]:
        raise PlugenInputError(f"params: experiments.{name}.backbone needs a kind")
    resolved = {
        "name": name,
        "seed": params.get("seed", 0),
        "device": params.get("device", "auto"),
        "dataset": dataset(params, entry["dataset"]),
        "backbone": copy.deepcopy(entry["backbone"]),
        "labeller": copy.deepcopy(entry.get("labeller")),
    }
    for key in SHARED:  # optional here: the pretraining pipeline (zoo/) has neither; the stages that read one check it
        resolved[key] = merge(params.get(key) or {}, entry.get(key, {}))
    if params.get("tracking"):
        resolved["tracking"] = {**params["tracking"], "experiment": name}
    return resolved
