"""Evaluation protocol of PLUGEN.md: judge agreement, seen/unseen generation, manipulation, FID/KID."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
from torch import nn

from plugen_core.config import refuse_unknown
from plugen_core.images import from_uint8
from plugen_core.datasets.labels import is_interval, matches, partial_matches
from plugen_core.io import PlugenInputError, inference_batch
from plugen_core.schema import Schema

# Keys every evaluation writes (PLUGEN.md, "Metrics contract"); RECONSTRUCTION_KEYS only for backbones that
# encode and decode (a VAE), not for a GAN or a latent-space experiment.
METRICS_CONTRACT = (
    "judge.accuracy",
    "judge.accuracy_reconstructions",
    "generation.seen.accuracy",
    "generation.unseen.accuracy",
    "generation.seen.continuous_mae",
    "generation.unseen.continuous_mae",
    "generation.seen.joint",
    "generation.unseen.joint",
    "manipulation.success",
    "manipulation.preservation",
    "manipulation.joint",
    "classifier.accuracy",
    "fid.backbone_reconstructions",
    "fid.backbone_samples",
    "fid.plugen_samples",
    "fid.ratio",
    "kid.plugen_samples",
    "time.train_flow_s",
    "time.generate_1000_s",
)
RECONSTRUCTION_KEYS = ("judge.accuracy_reconstructions", "fid.backbone_reconstructions")


# What `evaluate` reads from params.yaml's `evaluate` section: (key, type, check, what the check demands).
SETTINGS = (
    ("n_generation", int, lambda v: v > 0, "> 0"),
    ("n_manipulation", int, lambda v: v > 0, "> 0"),
    ("n_fid", int, lambda v: v > 1, "> 1"),
    ("kid_subset_size", int, lambda v: v > 1, "> 1"),
    ("temperature", float, lambda v: v >= 0, ">= 0"),
    ("style_temperature", float, lambda v: v >= 0, ">= 0"),
    ("continuous_tolerance", float, lambda v: 0 < v <= 1, "in (0, 1]"),
)


MOLECULE_SETTINGS = ("targets", "n_per_target", "edit_steps")  # what a molecule experiment reads besides SETTINGS


def check_settings(ev: dict) -> None:
    """Refuse an unknown (a typo would leave its default in place), missing, mistyped or out-of-range `evaluate`
    setting before any work, naming the key."""
    refuse_unknown("evaluate", ev, [key for key, *_ in SETTINGS] + ["inception_weights", *MOLECULE_SETTINGS])
    for key, kind, ok, demand in SETTINGS:
        value = ev.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int) or not math.isfinite(value):
            raise PlugenInputError(f"params: evaluate.{key} must be {'a finite number' if kind is float else 'an integer'}, got {value!r}")
        if not ok(value):
            raise PlugenInputError(f"params: evaluate.{key} must be {demand}, got {value!r}")
    if ev.get("inception_weights") is not None and not isinstance(ev["inception_weights"], str):
        raise PlugenInputError(f"params: evaluate.inception_weights must be a path or null, got {ev['inception_weights']!r}")


def combination_name(combination: dict) -> str:
    """A held-out combination as a metric name part, e.g. `shape:triangle/colour:blue` or, for a region,
    `logp:3.25..4.75/mw:250..290` (MLflow refuses '=', ',' and brackets)."""
    return "/".join(f"{name}:{value[0]:g}..{value[1]:g}" if is_interval(value) else f"{name}:{value}" for name, value in combination.items())


def metric_names(schema: Schema, held_out: list[dict]) -> set[str]:
    """Every metric name an evaluation of this schema and held-out set can write (what a primary metric may be)."""
    names = set(METRICS_CONTRACT) | {"kid.backbone_samples", "kid.backbone_reconstructions"}
    names |= {f"generation.unseen.{combination_name(c)}.joint" for c in held_out}
    for prefix in ("judge", "reconstructions", "generation.seen", "generation.unseen", "classifier"):
        names |= {f"{prefix}.accuracy", f"{prefix}.continuous_mae"} | {key for a in schema.attributes for key in attribute_keys(prefix, a)}
    names |= {f"manipulation.{a.name}.{kind}" for a in schema.attributes for kind in ("success", "preservation", "joint")}
    return names


def attribute_keys(prefix: str, attribute) -> tuple[str, ...]:
    """The per-attribute keys `summarise` writes."""
    if attribute.kind == "continuous":
        return (f"{prefix}.{attribute.name}.mae", f"{prefix}.{attribute.name}.mae_fraction")
    return (f"{prefix}.{attribute.name}.accuracy",)


def agreement(pred: pd.DataFrame, target: pd.DataFrame, schema: Schema, tolerance: float) -> dict[str, np.ndarray]:
    """Per attribute and row: True where the prediction matches the target (continuous: within
    `tolerance` of the range)."""
    return {
        a.name: (np.abs(pred[a.name].to_numpy(float) - target[a.name].to_numpy(float)) <= tolerance * a.range)
        if a.kind == "continuous"
        else same_value(a, pred[a.name], target[a.name])
        for a in schema.attributes
    }


def same_value(attribute, pred: pd.Series, target: pd.Series) -> np.ndarray:
    """Discrete values compared as numbers for a binary attribute (1 == 1.0, as labels tables store it), else as text."""
    if attribute.kind == "binary":
        return pred.to_numpy(float) == target.to_numpy(float)
    return pred.astype(str).to_numpy() == target.astype(str).to_numpy()


def summarise(pred: pd.DataFrame, target: pd.DataFrame, schema: Schema, prefix: str) -> dict[str, float]:
    """Mean accuracy over discrete attributes and mean absolute error (fraction of range) over continuous
    ones, plus one key per attribute."""
    out: dict[str, float] = {}
    acc, mae = [], []
    for a in schema.attributes:
        if a.kind == "continuous":
            err = np.abs(pred[a.name].to_numpy(float) - target[a.name].to_numpy(float)).mean()
            out |= dict(zip(attribute_keys(prefix, a), (float(err), float(err / a.range))))
            mae.append(err / a.range)
        else:
            hit = same_value(a, pred[a.name], target[a.name]).mean()
            out[attribute_keys(prefix, a)[0]] = float(hit)
            acc.append(hit)
    if acc:
        out[f"{prefix}.accuracy"] = float(np.mean(acc))
    if mae:
        out[f"{prefix}.continuous_mae"] = float(np.mean(mae))
    return out


def score_generation(pred: pd.DataFrame, targets: pd.DataFrame, schema: Schema, group: str, held_out: list[dict], tolerance: float) -> dict[str, float]:
    """`summarise` of generated samples against the targets they were drawn for, plus joint success: for `seen`
    targets, every discrete attribute right at once (`generation.seen.joint`); for `unseen` ones, per held-out
    combination the share of its samples on which every attribute of the combination is right at once, and their mean
    (`generation.unseen.joint`): the other attributes of an unseen target are free, and easy, so a per-attribute
    average can hide a plugin that never draws the combination."""
    prefix = f"generation.{group}"
    out = summarise(pred, targets, schema, prefix)
    hits = agreement(pred, targets, schema, tolerance)
    if group == "seen":
        discrete = [a.name for a in schema.attributes if a.kind != "continuous"]
        if discrete:
            out[f"{prefix}.joint"] = float(np.logical_and.reduce([hits[n] for n in discrete]).mean())
        return out
    joint = []
    for combination in held_out:
        rows = matches(targets, combination)
        if rows.any():
            joint.append(float(np.logical_and.reduce([hits[n][rows] for n in combination]).mean()))
            out[f"{prefix}.{combination_name(combination)}.joint"] = joint[-1]
    if joint:
        out[f"{prefix}.joint"] = float(np.mean(joint))
    return out


def score_edit(hits: dict[str, np.ndarray], name: str) -> dict[str, float]:
    """Manipulation of attribute `name`: success (the judge sees the new value), preservation (mean over the other
    attributes of the share still seen unchanged) and joint (success and every other attribute unchanged, on the
    same sample)."""
    others = [hits[other] for other in hits if other != name]
    kept = np.logical_and.reduce(others) if others else np.ones_like(hits[name])
    return {
        f"manipulation.{name}.success": float(hits[name].mean()),
        f"manipulation.{name}.preservation": float(np.mean([h.mean() for h in others])) if others else 1.0,
        f"manipulation.{name}.joint": float((hits[name] & kept).mean()),
    }


def score_controls(generate, edit, judge, schema: Schema, held_out: list[dict], ev: dict, rng: np.random.Generator, edit_latents: torch.Tensor, original: pd.DataFrame) -> dict[str, float]:
    """Generation (seen / unseen, joint) and manipulation scores of any method of attribute control, so PluGeN and the
    baselines are scored by the same code on the same targets (same `rng` state): `generate(targets)` and
    `edit(w, edits)` return what `judge(samples)` reads; `edit` None: a method that only generates. `original`: what
    the judge reads on `edit_latents` before editing."""
    tol = ev["continuous_tolerance"]
    metrics: dict[str, float] = {}
    for group, targets in generation_targets(schema, held_out, ev["n_generation"], rng).items():
        if len(targets):
            metrics |= score_generation(judge(generate(targets)), targets, schema, group, held_out, tol)
    if edit is None:
        return metrics
    for name in schema.names:
        new = edit_targets(schema, original, name, rng)
        edited = edit(edit_latents, pd.DataFrame({name: new.to_numpy()}))
        metrics |= score_edit(agreement(judge(edited), original.assign(**{name: new}), schema, tol), name)
    for kind in ("success", "preservation", "joint"):
        metrics[f"manipulation.{kind}"] = float(np.mean([metrics[f"manipulation.{name}.{kind}"] for name in schema.names]))
    return metrics


def matches_any(df: pd.DataFrame, combinations: list[dict]) -> np.ndarray:
    hit = np.zeros(len(df), dtype=bool)
    for combo in combinations:
        hit |= matches(df, combo)
    return hit


def check_no_leak(table: pd.DataFrame, held_out: list[dict], path) -> None:
    """The table the plugin trained on must hold no held-out combination, whole or in part."""
    labelled = table[table["labelled"].to_numpy()]
    whole = int(matches_any(labelled, held_out).sum())
    part = int(sum(partial_matches(labelled, c).sum() for c in held_out))
    if whole or part:
        raise PlugenInputError(f"{path} holds {whole} labelled row(s) of a held-out combination and {part} with part of one; rerun align_labels")


def uniform_targets(schema: Schema, n: int, rng: np.random.Generator) -> pd.DataFrame:
    """Fully specified attribute vectors from the factorial distribution (continuous: uniform in range)."""
    cols = {}
    for a in schema.attributes:
        if a.kind == "categorical":
            cols[a.name] = rng.choice(a.classes, n)
        elif a.kind == "binary":
            cols[a.name] = rng.integers(0, 2, n)
        else:
            cols[a.name] = rng.uniform(a.low, a.high, n)
    return pd.DataFrame(cols)


def generation_targets(schema: Schema, held_out: list[dict], n: int, rng: np.random.Generator) -> dict[str, pd.DataFrame]:
    """`seen`: combinations present in the labelled data; `unseen`: each held-out combination in turn,
    the other attributes uniform."""
    pool = uniform_targets(schema, 4 * n, rng)
    seen = pool[~matches_any(pool, held_out)].head(n).reset_index(drop=True)
    unseen = uniform_targets(schema, n, rng)
    if held_out:
        which = np.arange(n) % len(held_out)
        for i, combo in enumerate(held_out):
            for name, value in combo.items():
                unseen.loc[which == i, name] = value
    return {"seen": seen, "unseen": unseen if held_out else unseen.iloc[:0]}


def edit_targets(schema: Schema, original: pd.DataFrame, name: str, rng: np.random.Generator, min_shift: float = 0.25) -> pd.Series:
    """A different value of attribute `name` per row: another class, the flipped bit, or a continuous value
    at least `min_shift` of the range away."""
    a = schema[name]
    n = len(original)
    if a.kind == "binary":
        return 1 - original[name].astype(int)
    if a.kind == "categorical":
        cur = original[name].map({c: i for i, c in enumerate(a.classes)}).to_numpy()
        shift = rng.integers(1, len(a.classes), n)
        return pd.Series(np.array(a.classes)[(cur + shift) % len(a.classes)], index=original.index)
    cur = original[name].to_numpy(float)
    new = rng.uniform(a.low, a.high, n)
    for _ in range(100):  # rejection sampling; converges in a few rounds
        far = np.abs(new - cur) >= min_shift * a.range
        if far.all():
            break
        new[~far] = rng.uniform(a.low, a.high, (~far).sum())
    return pd.Series(new, index=original.index)


class InceptionFeatures(nn.Module):
    """Standard FID features from a local Inception weights file (torch-fidelity format), never downloaded."""

    def __init__(self, weights_path: str):
        super().__init__()
        try:
            from torchmetrics.image.fid import NoTrainInceptionV3
        except ImportError as e:  # torch-fidelity missing
            raise PlugenInputError(f"evaluate.inception_weights needs the torch-fidelity package ({e})") from e
        self.net = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"], feature_extractor_weights_path=weights_path)
        self.num_features = 2048

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x.clamp(0, 1) * 255).byte())


class FeatureExtractor(nn.Module):
    """Wraps the judge's penultimate layer for torchmetrics."""

    def __init__(self, judge):
        super().__init__()
        self.judge = judge
        self.num_features = judge.num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.judge.features(x)


class _Precomputed(nn.Module):
    """The identity, as FID's and KID's feature extractor: each batch's features are computed once, for both."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


@torch.no_grad()
def fid_kid(extractor: nn.Module, real: np.ndarray, fakes: dict[str, np.ndarray], kid_subset_size: int, to_input=from_uint8) -> dict[str, float]:
    """FID and KID of each fake set against `real` (samples in the stored format, which `to_input` turns into the
    extractor's input: uint8 images by default), on the given feature extractor."""
    from torchmetrics.image.fid import FrechetInceptionDistance  # imported here: it costs the stages that only score 1.4 s
    from torchmetrics.image.kid import KernelInceptionDistance

    device = next(extractor.parameters()).device
    batch = inference_batch(device)

    def features(samples: np.ndarray):
        for start in range(0, len(samples), batch):
            yield extractor(to_input(samples[start : start + batch]).to(device)).cpu()

    identity = _Precomputed(extractor.num_features)
    fid = FrechetInceptionDistance(feature=identity, reset_real_features=False)
    kid = KernelInceptionDistance(feature=identity, reset_real_features=False, subset_size=min(kid_subset_size, len(real), *map(len, fakes.values())))
    for f in features(real):
        fid.update(f, real=True)
        kid.update(f, real=True)
    out = {}
    for name, images in fakes.items():
        fid.reset()
        kid.reset()
        for f in features(images):
            fid.update(f, real=False)
            kid.update(f, real=False)
        out[f"fid.{name}"] = float(fid.compute())
        out[f"kid.{name}"] = float(kid.compute()[0])
    return out
