"""Stage `evaluate@<experiment>`: the metrics contract of PLUGEN.md (judge, seen/unseen and joint generation,
manipulation, the plugin's free classifier, FID/KID on judge features) as a flat JSON, plus the pictures. Molecule
experiments: stages/evaluate_molecules.py (RDKit is the judge).

What the judge reads: decoded samples (images) for a backbone with a decoder; the latents themselves for a
bring-your-own latents dataset (a latent-space judge, `judge.space: latent`). Manipulation and the free classifier
use test rows: encoded real samples with their true labels, or, for a backbone without an encoder (a GAN), latents
drawn from its prior, whose attributes are what the judge reads off their samples.

Every setting is checked before any work, and nothing is written until everything is computed: a failure leaves the
previous metrics, plots and registered versions as they were."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
import torch

from plugen_core import config, plots, pyfunc_model, tracking
from plugen_core.backbones import load_backbone
from plugen_core.evaluation import (
    METRICS_CONTRACT,
    RECONSTRUCTION_KEYS,
    FeatureExtractor,
    InceptionFeatures,
    check_no_leak,
    check_settings,
    edit_targets,
    fid_kid,
    generation_targets,
    metric_names,
    score_controls,
    summarise,
    uniform_targets,
)
from plugen_core.flow import PluGeN
from plugen_core.images import from_uint8
from plugen_core.io import atomic_dir, read_array, read_table, require_file, run_stage, write_json
from plugen_core.judge import Judge
from plugen_core.stages import experiment_stage
from plugen_core.stages.evaluate_molecules import evaluate_molecules

TRAVERSAL = np.linspace(-2, 2, 9)  # values a traversal sweeps one z coordinate through


def main() -> None:
    cfg, layout, generator, device = experiment_stage(__doc__)
    check_settings(cfg["evaluate"])
    molecules = cfg["dataset"]["source"] in config.MOLECULE_SOURCES
    backbone = load_backbone(layout.backbone, cfg["backbone"]).to(device)
    plugin = PluGeN.load(layout.plugen).to(device)
    with tracking.pipeline_run("evaluate", cfg) as run:
        (evaluate_molecules if molecules else evaluate)(cfg, layout, backbone, plugin, generator, device, run)


def evaluate(cfg: dict, layout, backbone, plugin: PluGeN, generator: torch.Generator, device: torch.device, run: tracking.PipelineRun) -> None:
    """Score the experiment, draw its pictures, and log both, the training curves and the model to `run`."""
    ev = cfg["evaluate"]
    held_out = cfg["dataset"]["labelled"]["held_out"] or []
    rng = np.random.default_rng(cfg["seed"])
    judge = Judge.load(layout.judge).to(device)
    schema = judge.schema  # original units and the data's full ranges: what every score is read in
    run.check_primary_metric(metric_names(schema, held_out))
    inception = require_file(ev["inception_weights"], "Inception weights") if ev.get("inception_weights") and judge.images else None
    check_no_leak(read_table(layout.table), held_out, layout.table)
    data = read_test_data(cfg, layout, backbone, judge)
    latent_space, sampled, to_samples = data.latent_space, data.sampled, data.to_samples
    test_samples, test_labels, test_latents, reference = data.samples, data.labels, data.latents, data.reference
    reconstructs = not latent_space and backbone.has_encoder and backbone.decodes

    def generate(targets: pd.DataFrame, n_per_target: int = 1) -> np.ndarray:
        # targets span the whole data's ranges (the judge's schema), the plugin's its labelled subset's: the ends may
        # lie a hair outside it, which the evaluation asks for on purpose
        w, _ = plugin.sample_latents(targets, n_per_target, ev["temperature"], ev["style_temperature"], generator, extrapolate=True)
        return to_samples(w)


    metrics: dict[str, float | str] = {"judge.space": "latent" if latent_space else "samples"}
    metrics |= summarise(judge.predict(test_samples), test_labels, schema, "judge")
    print(f"[evaluate] judge accuracy {metrics.get('judge.accuracy', float('nan')):.3f} on {len(test_samples)} test rows")
    if reconstructs:
        reconstructions = backbone.decode_data(test_latents)
        recon = summarise(judge.predict(reconstructions), test_labels, schema, "reconstructions")
        metrics |= recon | {"judge.accuracy_reconstructions": recon["reconstructions.accuracy"]}
        print(f"[evaluate] judge accuracy on reconstructions {recon['reconstructions.accuracy']:.3f}")

    edit_latents, original = data.edit_set(ev["n_manipulation"], device)
    edit = lambda w, edits: to_samples(plugin.manipulate(w, edits, extrapolate=True))  # noqa: E731
    metrics |= score_controls(generate, edit, judge.predict, schema, held_out, ev, rng, edit_latents, original)
    for group in ("seen", "unseen"):
        print(f"[evaluate] generation {group}: accuracy {metrics.get(f'generation.{group}.accuracy', float('nan')):.3f}, joint {metrics.get(f'generation.{group}.joint', float('nan')):.3f}, continuous MAE {metrics.get(f'generation.{group}.continuous_mae', float('nan')):.3f} of range")
    metrics |= summarise(plugin.classify(test_latents)[schema.names], reference, schema, "classifier")
    print(f"[evaluate] free classifier (the plugin's p(y|z)): accuracy {metrics.get('classifier.accuracy', float('nan')):.3f} on {len(test_latents)} test latents")
    print(f"[evaluate] manipulation success {metrics['manipulation.success']:.3f}, preservation {metrics['manipulation.preservation']:.3f}, joint {metrics['manipulation.joint']:.3f} ({len(edit_latents)} {'sampled' if sampled else 'test'} latents)")

    n_fid = min(ev["n_fid"], len(test_samples))
    if inception is not None:
        extractor, to_input, metrics["fid.features"] = InceptionFeatures(str(inception)), from_uint8, "inception"
    else:
        extractor, to_input, metrics["fid.features"] = FeatureExtractor(judge), judge.to_input, "judge"
    start = time.perf_counter()
    plugin_samples = generate(uniform_targets(schema, n_fid, rng))
    metrics["time.generate_1000_s"] = (time.perf_counter() - start) * 1000 / n_fid
    fakes = {"backbone_samples": to_samples(backbone.sample_prior(n_fid, generator)), "plugen_samples": plugin_samples}
    if reconstructs:
        fakes["backbone_reconstructions"] = reconstructions[:n_fid]
    metrics |= fid_kid(extractor.to(device), test_samples[:n_fid], fakes, ev["kid_subset_size"], to_input)
    metrics["fid.ratio"] = metrics["fid.plugen_samples"] / metrics["fid.backbone_samples"]
    print(f"[evaluate] FID ({metrics['fid.features']} features): backbone samples {metrics['fid.backbone_samples']:.2f}, plugin samples {metrics['fid.plugen_samples']:.2f}, ratio {metrics['fid.ratio']:.3f}")

    history = read_table(layout.flow_history)
    metrics["time.train_flow_s"] = float(history["elapsed_s"].iloc[-1]) if len(history) else 0.0  # 0 epochs: untrained
    required = [k for k in METRICS_CONTRACT if reconstructs or k not in RECONSTRUCTION_KEYS]
    missing = [k for k in required if k not in metrics]
    if missing:  # e.g. a schema without a discrete or without a continuous attribute has no accuracy or MAE
        print(f"[evaluate] note: no value for {missing} (the attributes have no such kind)")

    with atomic_dir(layout.plots) as out:  # the pictures and the registry first; metrics.json last
        if judge.images:
            draw_grids(out, schema, held_out, generate, to_samples, plugin, None if sampled else test_samples, test_latents, original, rng, device)
        else:  # latent vectors have no picture: draw the scores per attribute instead
            plots.attribute_scores(metrics, schema.names, out / "generation_grid.png", out / "manipulation_grid.png", cfg["name"])
        draw_traversals(out / "traversals", plugin, judge, test_latents, to_samples)
        plots.training_curves(history, ["nll", "nll_labelled", "sigma"], out / "flow_curves.png", f"{cfg['name']}: flow training")
        inputs = [layout.data, layout.backbone, layout.judge, layout.plugen]
        run.log_history("backbone", read_table(layout.backbone_history).to_dict("records"))
        run.log_history("flow", history.to_dict("records"))
        run.log_evaluation(metrics, plugin.schema.to_dict(), inputs, {"metrics": [layout.flow_history], "plots": [out]})
        pyfunc_model.register_plugin(run, layout.plugen, layout.backbone, metrics)
    write_json(metrics, layout.metrics)
    print(f"[evaluate] wrote {layout.metrics} and {layout.plots}/ (grids, flow curves, traversals/<attribute>.png)")


@dataclass
class TestData:
    """What every evaluation of an experiment reads, PluGeN's and the baselines': the test samples with every attribute
    labelled, their latents, and what the judge holds true of those latents (`reference`)."""

    samples: np.ndarray
    labels: pd.DataFrame
    latents: torch.Tensor
    reference: pd.DataFrame
    to_samples: Callable[[torch.Tensor], np.ndarray]  # what the judge reads for latents w
    latent_space: bool  # a bring-your-own latents dataset: the judge reads the latents themselves
    sampled: bool  # a backbone without an encoder: the test latents are prior draws, judged on their samples

    def edit_set(self, n: int, device) -> tuple[torch.Tensor, pd.DataFrame]:
        """The first `n` test latents (at most all), which every method edits, and what the judge holds true of them."""
        return self.latents[:n].to(device), self.reference.iloc[:n].reset_index(drop=True)


def read_test_data(cfg: dict, layout, backbone, judge: Judge) -> TestData:
    samples, labels = read_array(layout.samples), read_table(layout.labels)
    latent_space = cfg["dataset"]["source"] == "latents"
    sampled = not latent_space and not backbone.has_encoder

    def to_samples(w: torch.Tensor) -> np.ndarray:
        return w.cpu().numpy() if latent_space else backbone.decode_data(w)

    test = (labels["split"] == "test").to_numpy() & labels[judge.schema.names].notna().all(axis=1).to_numpy()
    index = read_table(layout.index)
    # test rows of the latents: the same rows as the test samples, or (sampled) fresh prior draws of the test split
    latents = torch.from_numpy(read_array(layout.latents)[(index["split"] == "test").to_numpy() & (test if not sampled else True)])
    test_labels = labels[test].reset_index(drop=True)
    # what the test latents hold: their true labels, or (sampled latents) what the judge reads off their samples
    reference = judge.predict(to_samples(latents)) if sampled else test_labels[judge.schema.names]
    return TestData(samples[test], test_labels, latents, reference, to_samples, latent_space, sampled)


def draw_grids(out, schema, held_out, generate, to_samples, plugin, real, test_latents, original, rng, device, n_cols: int = 8, n_rows: int = 6) -> None:
    """`real`: the test images the latents encode (None when the latents were sampled)."""
    groups = generation_targets(schema, held_out, 4, rng)
    rows = pd.concat([groups["seen"].head(4), groups["unseen"].head(len(held_out))], ignore_index=True)
    unseen = [False] * min(4, len(groups["seen"])) + [True] * min(len(held_out), len(groups["unseen"]))
    images = generate(rows, n_cols)
    images = images.reshape(len(rows), n_cols, *images.shape[1:])
    titles = [plots.describe(r) + (" (UNSEEN)" if u else "") for (_, r), u in zip(rows.iterrows(), unseen)]
    plots.image_grid(images, titles, [], out / "generation_grid.png", "PluGeN conditional generation (rows: requested attributes; red: combinations absent from the labelled data)", unseen)

    original = original.iloc[:n_rows]
    latents = test_latents[: len(original)].to(device)
    columns, col_titles = [to_samples(latents)], ["decoded" if real is not None else "sample"]
    if real is not None:
        columns, col_titles = [real[: len(original)]] + columns, ["original"] + col_titles
    for name in schema.names:
        new = edit_targets(schema, original, name, rng)
        columns.append(to_samples(plugin.manipulate(latents, pd.DataFrame({name: new.to_numpy()}), extrapolate=True)))
        col_titles.append(f"edit {name}")
    plots.image_grid(np.stack(columns, axis=1), [plots.describe(r) for _, r in original.iterrows()], col_titles, out / "manipulation_grid.png", "PluGeN manipulation (one attribute changed per column)")


def draw_traversals(out, plugin: PluGeN, judge: Judge, test_latents: torch.Tensor, to_samples, n_images: int = 3, n_curves: int = 200) -> None:
    """Per attribute, each of its z coordinates swept from -2 to +2 with the others kept: a grid of a few test latents'
    samples (images), or the judge's reading along the sweep, averaged over test latents (latent vectors)."""
    for a in plugin.schema.attributes:
        sl = plugin.schema.slices[a.name]
        coordinates = [f"{a.name}={c}" for c in a.classes] if a.kind == "categorical" else [a.name]
        title = f"traversal of {a.name}: z coordinate from -2 to +2, everything else kept"
        if judge.images:
            rows = [to_samples(step) for j in range(sl.start, sl.stop) for step in plugin.traverse(test_latents[:n_images], j, TRAVERSAL).transpose(0, 1)]
            titles = [f"{label}, latent {i}" for label in coordinates for i in range(min(n_images, len(test_latents)))]
            plots.image_grid(np.stack(rows), titles, [f"{v:+.1f}" for v in TRAVERSAL], out / f"{a.name}.png", title)
        else:
            readings = {}
            for j, label in zip(range(sl.start, sl.stop), coordinates):
                judged = [judge.predict(to_samples(step)) for step in plugin.traverse(test_latents[:n_curves], j, TRAVERSAL)]
                target = label.split("=", 1)[1] if a.kind == "categorical" else None
                readings[label] = [float((p[a.name].astype(str) == target).mean()) if target else float(p[a.name].astype(float).mean()) for p in judged]
            plots.traversal_curves(TRAVERSAL, readings, out / f"{a.name}.png", title, "judged value" if a.kind != "categorical" else "share judged this class")


if __name__ == "__main__":
    run_stage(main)
