"""Experiments and datasets as `params.yaml` lists them, resolved into the plain dict each stage reads.

    datasets:     {<name>: {source: shapes | images | latents | moses | molecules, input: <path DVC tracks>, ...}}
    experiments:  {<name>: {dataset: <name>, backbone: {kind: ...}, labeller: {...}, flow: {...}, evaluate: {...}}}

An experiment's `flow`, `evaluate` and `baselines` entries override the shared top-level sections key by key; `labeller` is
needed only by backbones without an encoder (their samples are labelled by a classifier). Every entry is
checked up front, so a typo fails the first stage with the entry's name, not a later one with a KeyError.
"""
from __future__ import annotations

import copy
import difflib
import math
import numbers
import re
from typing import Callable

from plugen_core.io import PlugenInputError, section

MOLECULE_SOURCES = ("moses", "molecules")  # SMILES samples, RDKit properties as attributes and as the judge
SOURCES = ("shapes", "images", "latents") + MOLECULE_SOURCES
SHARED = ("flow", "evaluate", "baselines")
EXPERIMENT_KEYS = {"dataset", "backbone", "labeller", "flow", "evaluate", "baselines"}
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # experiment and dataset names become folder names


def _number(v) -> bool:
    """A finite number (YAML reads `.inf` and `.nan` as numbers; no setting means either)."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def whole(low: int) -> Callable:
    return lambda v: None if isinstance(v, int) and not isinstance(v, bool) and v >= low else f"a whole number >= {low}"


def positive(v) -> str | None:
    return None if _number(v) and v > 0 else "a number > 0"


def at_least_zero(v) -> str | None:
    return None if _number(v) and v >= 0 else "a number >= 0"


def flag(v) -> str | None:
    return None if isinstance(v, bool) else "true or false"


def one_of(*choices) -> Callable:
    return lambda v: None if v in choices else f"one of {list(choices)}"


FLOW = {  # every key the train_flow stage reads, with what it must be
    "coupling": one_of("additive", "affine"),
    "couplings": whole(1),
    "hidden": whole(1),
    "layers": whole(1),
    "epochs": whole(0),  # 0: the untrained flow, the negative control
    "batch_size": whole(1),
    "lr": positive,
    "grad_clip": positive,
    "sigma0": positive,
    "sigma_gamma": lambda v: None if _number(v) and 0 < v <= 1 else "a number in (0, 1]",
    "sigma_min": positive,
    "balanced": flag,
    "continuous_sigma_scale": positive,
    "use_unlabelled": flag,
    "input_noise": at_least_zero,
    "labelled_share": lambda v: None if _number(v) and 0 <= v < 1 else "a number in [0, 1)",
    "min_epoch_rows": whole(0),
}


def fraction(v) -> str | None:
    return None if _number(v) and 0 <= v <= 1 else "a number in [0, 1]"


JUDGE = {  # the judge's network: the evaluation judge (train_judge) and a GAN's labeller (align_labels)
    "width": whole(1),
    "epochs": whole(1),
    "batch_size": whole(1),
    "lr": positive,
    "augment": fraction,
}
LABELLER = JUDGE | {
    "threshold": fraction,
    "count": lambda v: None if v is None or whole(1)(v) is None else "null (every training sample) or a whole number >= 1",
}


def text(v) -> str | None:
    return None if isinstance(v, str) and v else "a non-empty string"


def text_or_null(v) -> str | None:
    return None if v is None or text(v) is None else "a non-empty string or null"


def names_or_null(v) -> str | None:
    return None if v is None or (isinstance(v, list) and v and all(text(n) is None for n in v)) else "a list of names, or null"


def mapping(v) -> str | None:
    return None if isinstance(v, dict) else "a mapping"


def split_fraction(v) -> str | None:
    return None if _number(v) and 0 <= v < 1 else "a number in [0, 1)"


def interval(v) -> str | None:
    ok = isinstance(v, (list, tuple)) and len(v) == 2 and all(_number(x) for x in v) and v[0] < v[1]
    return None if ok else "[low, high] with low < high"


SHARED_DATASET = {"source": one_of(*SOURCES), "input": text, "labelled": mapping}  # the data stage checks labelled's rules
JUDGE_FILE = {"pretrained_judge": text_or_null, "pretrained_judge_sha256": text_or_null}  # image datasets' evaluation judge
DATASET = {  # per source: every key its reader (plugen_core/datasets/) takes, with what it must be
    "shapes": SHARED_DATASET | JUDGE_FILE | {
        "image_size": whole(8), "n_train": whole(1), "n_test": whole(1), "size_range": interval, "x_range": interval, "y_jitter": at_least_zero},
    "images": SHARED_DATASET | JUDGE_FILE | {
        "image_size": whole(1), "labels": text, "attributes": names_or_null, "crop": one_of("center", "none"), "test_fraction": split_fraction},
    "latents": SHARED_DATASET | {
        "latents": text, "labels": text, "attributes": names_or_null, "test_fraction": split_fraction, "judge_fraction": split_fraction},
    "moses": SHARED_DATASET | {
        "n_train": whole(1), "n_test": whole(1), "max_tokens": lambda v: None if v is None or whole(1)(v) is None else "null or a whole number >= 1",
        "properties": names_or_null},
    "molecules": SHARED_DATASET | {
        "smiles_column": text, "properties": names_or_null, "invalid": one_of("refuse", "skip"), "test_fraction": split_fraction},
}
DATASET_REQUIRED = {"shapes": ("n_train", "n_test", "image_size", "size_range", "x_range", "y_jitter"), "images": ("image_size",),
                    "moses": ("n_train", "n_test")}  # beyond source and input; every other key has a default
TRACKING = {
    "uri": lambda v: None if v in (None, False, "off") or text(v) is None else "a URI, or null (the local store), or off",
    "optional": flag,
    "primary_metric": text,
    "primary_direction": one_of("max", "min"),
}
TOP_LEVEL = {  # every section a params file may hold (published_judges: the pretraining pipeline's, zoo/)
    "seed": whole(0),
    "device": lambda v: None if v in ("auto", "cpu") or (isinstance(v, str) and re.fullmatch(r"cuda(:\d+)?", v)) else "auto, cpu, cuda or cuda:<n>",
    "threads": lambda v: None,  # checked where it is applied (plugen_core/threads.py)
    "datasets": mapping, "experiments": mapping, "judge": mapping, "flow": mapping, "evaluate": mapping, "baselines": mapping,
    "tracking": lambda v: None if v is None or isinstance(v, dict) else "a mapping, or null (no tracking)",
    "published_judges": lambda v: None,  # read by zoo/'s publish stage
}


def check(where: str, values: dict, rules: dict[str, Callable], optional: tuple[str, ...] = ()) -> None:
    """Refuse, before any work, a section with an unknown key (naming the closest known one), a missing key (unless
    `optional`), or a value of the wrong type or range, naming the key."""
    if not isinstance(values, dict):
        raise PlugenInputError(f"params: {where or 'the file'} must be a mapping, got {values!r}")
    at = (lambda key: f"{where}.{key}") if where else str
    refuse_unknown(where, values, list(rules))
    for key, rule in rules.items():
        if key not in values:
            if key in optional:
                continue
            raise PlugenInputError(f"params: {at(key)} is missing")
        expected = rule(values[key])
        if expected:
            raise PlugenInputError(f"params: {at(key)} must be {expected}, got {values[key]!r}")


def refuse_unknown(where: str, values: dict, known: list[str]) -> None:
    """A key of `values` not in `known` is a typo (it would be ignored and its default used): refused, naming the
    closest known key."""
    for key in sorted(set(values) - set(known)):
        close = difflib.get_close_matches(key, known, n=1)
        raise PlugenInputError(f"params: {f'{where}.{key}' if where else key} is not a setting"
                               + (f"; did you mean '{close[0]}'?" if close else f" (known: {sorted(known)})"))


def check_name(kind: str, name) -> None:
    if not isinstance(name, str) or not NAME.fullmatch(name) or ".." in name:
        raise PlugenInputError(f"params: {kind} name {name!r} must be letters, digits, '_', '-' or '.', starting with a letter or digit (it names folders)")


def merge(base: dict, override: dict) -> dict:
    """`base` with `override`'s keys replaced, recursively for nested dicts."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else copy.deepcopy(value)
    return out


def dataset(params: dict, name: str) -> dict:
    """The dataset entry `name`, with its name added."""
    datasets = section(params, "datasets")
    check_name("dataset", name)
    if name not in datasets:
        raise PlugenInputError(f"params: dataset '{name}' is not listed under datasets (known: {sorted(datasets)})")
    check_top_level(params)
    entry = datasets[name]
    if not isinstance(entry, dict) or entry.get("source") not in SOURCES:
        raise PlugenInputError(f"params: datasets.{name}.source must be one of {SOURCES}, got {entry.get('source') if isinstance(entry, dict) else entry!r}")
    if "input" not in entry:
        raise PlugenInputError(f"params: datasets.{name}.input is missing (the file or folder the dataset is read from)")
    rules = DATASET[entry["source"]]
    check(f"datasets.{name}", entry, rules, optional=tuple(set(rules) - {"source", "input"} - set(DATASET_REQUIRED.get(entry["source"], ()))))
    return {"name": name, **entry}


def check_top_level(params: dict) -> None:
    """An unknown section (a typo such as `flwo:`) would be ignored and its defaults used without a word."""
    check("", params, TOP_LEVEL, optional=tuple(TOP_LEVEL))


def experiment(params: dict, name: str) -> dict:
    """Everything one experiment's stages read: seed, device, its dataset, backbone and labeller, the shared sections
    with its overrides, and tracking with the experiment's name."""
    experiments = section(params, "experiments")
    check_name("experiment", name)
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
        "threads": params.get("threads", "auto"),
        "dataset": dataset(params, entry["dataset"]),
        "backbone": copy.deepcopy(entry["backbone"]),
        "labeller": copy.deepcopy(entry.get("labeller")),
    }
    for key in SHARED:  # optional here: the pretraining pipeline (zoo/) has neither; the stages that read one check it
        resolved[key] = merge(params.get(key) or {}, entry.get(key, {}))
    if resolved["flow"]:
        check(f"flow (with experiments.{name}.flow)", resolved["flow"], FLOW)
    if resolved["labeller"] is not None:
        check(f"experiments.{name}.labeller", resolved["labeller"], LABELLER, optional=("count",))
    if params.get("tracking"):
        check("tracking", params["tracking"], TRACKING, optional=tuple(TRACKING))
        resolved["tracking"] = {**params["tracking"], "experiment": name}
    return resolved
