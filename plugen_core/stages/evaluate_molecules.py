"""`evaluate@<experiment>` for a molecule experiment (imported by stages/evaluate.py): RDKit judges the SMILES the
plugin generates (plugen_core/molecule_evaluation.py says what each key means), and the pictures are RDKit drawings.
Like the image protocol, nothing is written until everything is computed."""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from plugen_core import chemistry, plots, pyfunc_model, tracking
from plugen_core.datasets.labels import matches
from plugen_core.datasets.molecules import moses_file
from plugen_core.evaluation import MOLECULE_SETTINGS, check_no_leak, metric_names, summarise
from plugen_core.flow import PluGeN
from plugen_core.io import PlugenInputError, atomic_dir, read_array, read_table, write_json
from plugen_core.judge import PropertyJudge
from plugen_core.molecule_evaluation import (quality, region_targets, score_manipulation, score_region, score_region_reconstructions,
                                            score_seen, score_targets, seen_targets)


def known_molecules(cfg: dict, samples: np.ndarray, split: np.ndarray) -> set[str]:
    """What novelty is measured against: MOSES's whole training set for the MOSES dataset (the shipped backbone saw
    some of it), else the dataset's training split."""
    if cfg["dataset"]["source"] == "moses":
        return set(pd.read_csv(moses_file("train.csv.gz"))["SMILES"])
    return set(samples[split == "train"])


def check_molecule_settings(ev: dict, schema, name: str) -> None:
    missing = [k for k in MOLECULE_SETTINGS if k not in ev]
    if missing:
        raise PlugenInputError(f"params: experiments.{name}.evaluate needs {missing} for a molecule experiment")
    for key in ("targets", "edit_steps"):
        unknown = sorted(set(ev[key]) - set(schema.names))
        if unknown:
            raise PlugenInputError(f"params: experiments.{name}.evaluate.{key} names {unknown}, not attributes ({schema.names})")


def show(metrics: dict, *keys: str) -> str:
    return ", ".join(f"{key} {metrics[key]:.3f}" for key in keys)


def stepped(values: pd.Series, step: float, attribute) -> pd.Series:
    """Each value moved by `step`, or by -step where that would leave the data's range."""
    up = values + step
    return up.where((up >= attribute.low) & (up <= attribute.high), values - step)


@dataclass
class MoleculeTest:
    """What every method (the plugin, each baseline) is scored against: the test molecules, their properties and
    latents, what novelty is measured against, and the backbone's own prior samples (the held-out region's base rate)."""

    smiles: np.ndarray
    labels: pd.DataFrame
    latents: torch.Tensor
    known: set[str]
    prior: np.ndarray
    prior_properties: pd.DataFrame

    def edit_set(self, n: int, device) -> tuple[torch.Tensor, pd.DataFrame, np.ndarray]:
        """The first n test molecules' latents (on `device`), properties and SMILES."""
        n = min(n, len(self.latents))
        return self.latents[:n].to(device), self.labels.iloc[:n], self.smiles[:n]


def read_molecule_test(cfg: dict, layout, backbone, judge: PropertyJudge, generator: torch.Generator) -> MoleculeTest:
    """The test split, and as many prior samples as `evaluate.n_fid` asks (at most as many as test molecules)."""
    samples, labels = read_array(layout.samples), read_table(layout.labels)
    split = labels["split"].to_numpy()
    n_prior = min(cfg["evaluate"]["n_fid"], int((split == "test").sum()))
    prior = backbone.decode_data(backbone.sample_prior(n_prior, generator))
    return MoleculeTest(
        smiles=samples[split == "test"],
        labels=labels[split == "test"].reset_index(drop=True)[judge.schema.names],
        latents=torch.from_numpy(read_array(layout.latents)[(read_table(layout.index)["split"] == "test").to_numpy()]),
        known=known_molecules(cfg, samples, split),
        prior=prior,
        prior_properties=judge.predict(prior),
    )


Generate = Callable[[pd.DataFrame, int], np.ndarray]  # (targets, per target) -> SMILES ("" where none decodes)
Edit = Callable[[torch.Tensor, pd.DataFrame], np.ndarray]  # (latents, one row of edits per latent) -> SMILES


def rebuilt_regions(backbone, judge: PropertyJudge, test: MoleculeTest, held_out: list[dict]) -> list[pd.DataFrame]:
    """Per held-out region, the properties of the backbone's reconstructions of the real test molecules inside it."""
    frames = []
    for region in held_out:
        inside = torch.from_numpy(matches(test.labels, region))
        frames.append(judge.predict(backbone.decode_data(test.latents[inside])) if inside.any() else pd.DataFrame(columns=judge.schema.names))
    return frames


def score_molecule_controls(generate: Generate, edit: Edit | None, judge: PropertyJudge, ev: dict, held_out: list[dict], test: MoleculeTest,
                            rng: np.random.Generator, device) -> tuple[dict, np.ndarray, dict, dict]:
    """The scores every method gets, PluGeN and each baseline alike: multi-property targets of real test molecules
    (quality, seen errors), each single property requested on its grid, the held-out region against the backbone's
    base rate, and (for a method that edits) each property stepped on test molecules. Returns the metrics, the
    molecules drawn for the multi-property targets (for FCD), and what `draw` pictures: per property its requested
    values' properties, and per edited property (edited SMILES, their properties, the values asked for)."""
    schema, tol, n = judge.schema, ev["continuous_tolerance"], ev["n_per_target"]
    start = time.perf_counter()
    targets = seen_targets(test.labels, held_out, ev["n_generation"])
    generated = generate(targets, 1)
    metrics = {"time.generate_1000_s": (time.perf_counter() - start) * 1000 / len(targets)}
    metrics |= quality(generated, test.known, "generation") | score_seen(judge.predict(generated), targets, schema, tol)

    requested = {}
    for name, values in ev["targets"].items():
        drawn = generate(pd.DataFrame({name: np.repeat(values, n)}), 1)
        got = judge.predict(drawn)
        metrics |= score_targets(got, drawn, name, values, n, schema[name], tol)
        requested[name] = {v: got[name].to_numpy(float)[i * n : (i + 1) * n] for i, v in enumerate(values)}
    metrics["target.mae_fraction"] = float(np.mean([metrics[f"target.{name}.mae_fraction"] for name in ev["targets"]]))

    if held_out:
        in_region = generate(region_targets(schema, held_out, ev["n_generation"], rng), 1)
        metrics |= score_region(judge.predict(in_region), test.prior_properties, held_out)

    edits = {}
    if edit is not None:
        latents, original, sources = test.edit_set(ev["n_manipulation"], device)
        for name, step in ev["edit_steps"].items():
            new = stepped(original[name], step, schema[name])
            edited = edit(latents, pd.DataFrame({name: new.to_numpy()}))
            got = judge.predict(edited)
            metrics |= score_manipulation(got, edited, original, sources, name, new, schema, tol)
            edits[name] = edited, got, new
        for kind in ("success", "preservation", "joint", "tanimoto_median", "validity"):
            metrics[f"manipulation.{kind}"] = float(np.mean([metrics[f"manipulation.{name}.{kind}"] for name in ev["edit_steps"]]))
    return metrics, generated, requested, edits


def evaluate_molecules(cfg: dict, layout, backbone, plugin: PluGeN, generator: torch.Generator, device: torch.device, run: tracking.PipelineRun) -> None:
    """The backbone and the plugin are loaded by stages/evaluate.py (for either protocol)."""
    ev = cfg["evaluate"]
    held_out = cfg["dataset"]["labelled"]["held_out"] or []
    judge = PropertyJudge.load(layout.judge)
    schema = judge.schema
    check_molecule_settings(ev, schema, cfg["name"])
    run.check_primary_metric(metric_names(schema, held_out) | {"generation.unseen.lift", "generation.validity", "fcd.ratio"})
    check_no_leak(read_table(layout.table), held_out, layout.table)
    test = read_molecule_test(cfg, layout, backbone, judge, generator)

    metrics: dict[str, float | str] = {"judge.space": "rdkit"}
    metrics |= quality(test.prior, test.known, "backbone") | {"test.heavy_atoms": float(np.mean(chemistry.heavy_atoms(test.smiles)))}
    n_fid = len(test.prior)
    reconstructions = backbone.decode_data(test.latents[:n_fid])
    metrics["reconstructions.exact"] = float((reconstructions == test.smiles[:n_fid]).mean())
    metrics["reconstructions.tanimoto_median"] = float(np.median(chemistry.tanimoto(test.smiles[:n_fid], reconstructions)))
    recon = judge.predict(reconstructions)
    valid = recon.notna().all(axis=1).to_numpy()
    metrics |= summarise(recon[valid], test.labels.iloc[:n_fid][valid], schema, "reconstructions")
    print("[evaluate] backbone:", show(metrics, "backbone.validity", "backbone.uniqueness", "backbone.novelty", "reconstructions.exact"))

    def generate(targets: pd.DataFrame, n_per_target: int = 1) -> np.ndarray:
        w, _ = plugin.sample_latents(targets, n_per_target, ev["temperature"], ev["style_temperature"], generator, extrapolate=True)
        return backbone.decode_data(w)

    def edit(latents: torch.Tensor, edits: pd.DataFrame) -> np.ndarray:
        return backbone.decode_data(plugin.manipulate(latents, edits, extrapolate=True))

    scores, generated, requested, edits = score_molecule_controls(generate, edit, judge, ev, held_out, test, np.random.default_rng(cfg["seed"]), device)
    metrics |= scores | summarise(plugin.classify(test.latents)[schema.names], test.labels, schema, "classifier")
    print("[evaluate] plugin:", show(metrics, "generation.validity", "generation.seen.continuous_mae", "target.mae_fraction", "generation.unseen.joint",
                                     "generation.unseen.lift", "manipulation.success", "manipulation.tanimoto_median"))
    if held_out:
        metrics |= score_region_reconstructions(rebuilt_regions(backbone, judge, test, held_out), held_out, metrics["generation.unseen.base_rate"])
        print("[evaluate] held-out region, the backbone's reconstructions of its real molecules:", show(metrics, "reconstructions.unseen.joint", "reconstructions.unseen.lift"))

    metrics |= {f"fcd.{k}": v for k, v in chemistry.fcd(test.smiles, {"backbone_samples": test.prior, "plugen_samples": generated}).items()}
    metrics["fcd.ratio"] = metrics["fcd.plugen_samples"] / metrics["fcd.backbone_samples"]
    print("[evaluate] FCD to the test set:", show(metrics, "fcd.backbone_samples", "fcd.plugen_samples"))
    history = read_table(layout.flow_history)
    metrics["time.train_flow_s"] = float(history["elapsed_s"].iloc[-1]) if len(history) else 0.0

    _, original, sources = test.edit_set(ev["n_manipulation"], device)
    with atomic_dir(layout.plots) as out:
        draw(out, cfg["name"], ev, generate, requested, sources, original, edits)
        plots.training_curves(history, ["nll", "nll_labelled", "sigma"], out / "flow_curves.png", f"{cfg['name']}: flow training")
        run.log_history("backbone", read_table(layout.backbone_history).to_dict("records"))
        run.log_history("flow", history.to_dict("records"))
        run.log_evaluation(metrics, plugin.schema.to_dict(), [layout.data, layout.backbone, layout.judge, layout.plugen], {"metrics": [layout.flow_history], "plots": [out]})
        pyfunc_model.register_plugin(run, layout.plugen, layout.backbone, metrics)
    write_json(metrics, layout.metrics)
    print(f"[evaluate] wrote {layout.metrics} and {layout.plots}/")


def draw(out, title: str, ev: dict, generate, requested: dict, sources: np.ndarray, original: pd.DataFrame, edits: dict, per_row: int = 6, n_rows: int = 5) -> None:
    """generation_grid.png: molecules drawn for each requested value of the first targeted property, legends with
    their computed value; manipulation_grid.png: a row per source molecule and its edits (`edits`: per property, the
    edited molecules, their properties and the values asked for); property_histograms.png."""
    name, values = next(iter(ev["targets"].items()))
    drawn = generate(pd.DataFrame({name: np.repeat(values, per_row)}))
    got = chemistry.properties(drawn)[name].to_numpy(float)
    legends = [f"{name} {v:g} asked: {g:.2f}" if s else "(no molecule)" for v, s, g in zip(np.repeat(values, per_row), drawn, got)]
    chemistry.draw_grid(drawn, legends, per_row, out / "generation_grid.png", f"{title}: PluGeN molecules per requested {name} (rows)")
    cells, legends = [], []
    for i in range(min(n_rows, len(sources))):
        cells.append(sources[i])
        legends.append("source: " + ", ".join(f"{k} {original[k].iloc[i]:.2f}" for k in edits))
        for name, (edited, got, asked) in edits.items():
            cells.append(edited[i])
            legends.append(f"{name} -> {asked.iloc[i]:.2f}: {got[name].iloc[i]:.2f}")
    chemistry.draw_grid(np.array(cells), legends, len(edits) + 1, out / "manipulation_grid.png", f"{title}: PluGeN manipulation (one property stepped per column)")
    plots.property_histograms(requested, out / "property_histograms.png", f"{title}: properties of generated molecules")
