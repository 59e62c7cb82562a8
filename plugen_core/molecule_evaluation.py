"""The molecule protocol: RDKit is the judge (exact properties), so every score is read off the generated SMILES.

Keys share the image protocol's names where the meaning is the same (generation.seen/unseen, manipulation, classifier,
time.*; `fid.*` becomes `fcd.*`), plus what molecules add:
- `backbone.*` and `generation.*` validity, uniqueness, novelty (against MOSES's 1.58 M training molecules or the
  dataset's training split) and internal diversity of the backbone's prior samples and of the plugin's;
- `target.<property>:<value>.*` for requested single properties (mean, |mean - target|, MAE per molecule, share within
  tolerance, validity) and `target.<property>.mae_fraction` (MAE over its targets, as a fraction of its range);
- `generation.unseen.*`: targets inside the held-out region, its joint hit rate (every region bound met at once)
  against the backbone's own base rate there (`generation.unseen.base_rate`, `.lift`);
- `reconstructions.unseen.*`: the same hit rate for the backbone's reconstructions of the real test molecules inside
  each region: what a method that put its latents exactly on real molecules of the region would reach;
- `manipulation.<property>.*` for a step of each property, with `tanimoto_median` to the source molecule.
Invalid molecules count against validity and are left out of property errors (they have no properties)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from plugen_core import chemistry
from plugen_core.datasets.labels import matches
from plugen_core.evaluation import agreement, combination_name, matches_any, score_edit, summarise
from plugen_core.schema import Schema


def quality(smiles: np.ndarray, known: set[str], prefix: str) -> dict[str, float]:
    """Validity, uniqueness (of the valid), novelty (valid and unique ones absent from `known`), internal diversity and
    the mean heavy-atom count of the valid ones."""
    valid = smiles[smiles != ""]
    unique = set(valid)
    return {
        f"{prefix}.validity": float(len(valid) / max(len(smiles), 1)),
        f"{prefix}.uniqueness": float(len(unique) / max(len(valid), 1)),
        f"{prefix}.novelty": float(len(unique - known) / max(len(unique), 1)),
        f"{prefix}.internal_diversity": chemistry.internal_diversity(sample_of(sorted(unique), 1000)),
        f"{prefix}.heavy_atoms": float(np.mean(chemistry.heavy_atoms(valid))) if len(valid) else float("nan"),
    }


def sample_of(items: list, n: int) -> list:
    """At most n of `items`, drawn at random with a fixed seed (the first n in sorted order would favour some
    scaffolds: IntDiv of MOSES's test set 0.859 that way, 0.864-0.866 on random subsets)."""
    return items if len(items) <= n else [items[i] for i in np.sort(np.random.default_rng(0).choice(len(items), n, replace=False))]


def score_targets(pred: pd.DataFrame, smiles: np.ndarray, name: str, values: list[float], n: int, attribute, tolerance: float) -> dict[str, float]:
    """`pred`: the properties of n molecules per requested value of `name`, in the order of `values`."""
    out, errors = {}, []
    for i, target in enumerate(values):
        got = pred[name].to_numpy(float)[i * n : (i + 1) * n]
        valid = ~np.isnan(got)
        key = f"target.{name}:{target:g}"
        error = np.abs(got[valid] - target)
        out |= {
            f"{key}.mean": float(got[valid].mean()) if valid.any() else float("nan"),
            f"{key}.mean_error": float(abs(got[valid].mean() - target)) if valid.any() else float("nan"),
            f"{key}.mae": float(error.mean()) if valid.any() else float("nan"),
            f"{key}.within_tolerance": float((error <= tolerance * attribute.range).sum() / n),
            f"{key}.validity": float((smiles[i * n : (i + 1) * n] != "").mean()),
        }
        errors.append(out[f"{key}.mae"])
    out[f"target.{name}.mae_fraction"] = float(np.mean(errors) / attribute.range)
    return out


def score_region(pred: pd.DataFrame, base: pd.DataFrame, held_out: list[dict]) -> dict[str, float]:
    """Per held-out region: the share of the molecules generated for it inside it (every bound at once; an invalid
    molecule is outside) and of the backbone's prior samples (its base rate); their means and ratio. `pred`: the
    properties of what was generated for `region_targets`, the same number per region, in its order."""
    per_region = len(pred) // len(held_out)
    if per_region * len(held_out) != len(pred):
        raise ValueError(f"{len(pred)} generated rows do not split evenly over {len(held_out)} held-out regions")
    out, hits, rates = {}, [], []
    for k, region in enumerate(held_out):
        hits.append(float(matches(pred.iloc[k * per_region : (k + 1) * per_region], region).mean()))
        rates.append(float(matches(base, region).mean()))
        out[f"generation.unseen.{combination_name(region)}.joint"] = hits[-1]
        out[f"generation.unseen.{combination_name(region)}.base_rate"] = rates[-1]
    out["generation.unseen.joint"], out["generation.unseen.base_rate"] = float(np.mean(hits)), float(np.mean(rates))
    out["generation.unseen.lift"] = out["generation.unseen.joint"] / max(out["generation.unseen.base_rate"], 1e-9)
    return out


def score_region_reconstructions(rebuilt: list[pd.DataFrame], held_out: list[dict], base_rate: float) -> dict[str, float]:
    """Per held-out region, the share of the reconstructions of its real test molecules (`rebuilt`, one frame per
    region) that land inside it again; their mean, lift over the base rate, and how many molecules were rebuilt."""
    out, hits = {}, []
    for pred, region in zip(rebuilt, held_out):
        hits.append(float(matches(pred, region).mean()) if len(pred) else float("nan"))
        out[f"reconstructions.unseen.{combination_name(region)}.joint"] = hits[-1]
        out[f"reconstructions.unseen.{combination_name(region)}.n"] = float(len(pred))
    out["reconstructions.unseen.joint"] = float(np.mean(hits))
    out["reconstructions.unseen.lift"] = out["reconstructions.unseen.joint"] / max(base_rate, 1e-9)
    return out


def region_targets(schema: Schema, held_out: list[dict], n: int, rng: np.random.Generator) -> pd.DataFrame:
    """n targets per held-out region: its bounded properties uniform inside the bounds, the others left free."""
    rows = []
    for region in held_out:
        rows.append(pd.DataFrame({name: rng.uniform(low, high, n) for name, (low, high) in region.items()}))
    return pd.concat(rows, ignore_index=True).reindex(columns=[a.name for a in schema.attributes if any(a.name in r for r in held_out)])


def seen_targets(test_labels: pd.DataFrame, held_out: list[dict], n: int) -> pd.DataFrame:
    """Multi-property targets: the property vectors of real test molecules outside every held-out region (combinations
    that exist, unlike independent uniform values)."""
    return test_labels[~matches_any(test_labels, held_out)].head(n).reset_index(drop=True)


def score_seen(pred: pd.DataFrame, targets: pd.DataFrame, schema: Schema, tolerance: float) -> dict[str, float]:
    """`summarise` on the valid molecules, and joint: every property within tolerance at once (invalid: a miss)."""
    valid = pred.notna().all(axis=1).to_numpy()
    out = summarise(pred[valid], targets[valid], schema, "generation.seen")
    hits = agreement(pred, targets, schema, tolerance)
    out["generation.seen.joint"] = float(np.logical_and.reduce(list(hits.values())).mean())
    return out


def score_manipulation(pred: pd.DataFrame, smiles: np.ndarray, original: pd.DataFrame, source: np.ndarray, name: str, new: pd.Series, schema: Schema, tolerance: float) -> dict[str, float]:
    """One property moved to `new` on molecules `source` whose properties are `original`: success, preservation and
    joint (as for images), validity, and the Tanimoto similarity of each result to its source."""
    out = score_edit(agreement(pred, original.assign(**{name: new.to_numpy()}), schema, tolerance), name)
    out[f"manipulation.{name}.validity"] = float((smiles != "").mean())
    out[f"manipulation.{name}.tanimoto_median"] = float(np.median(chemistry.tanimoto(source, smiles)))
    return out
