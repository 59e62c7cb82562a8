"""Stage `evaluate@<experiment>`: the metrics contract of PLUGEN.md (judge, seen/unseen generation, manipulation,
FID/KID on judge features) as a flat JSON, plus the generation and manipulation pictures.

What the judge reads: decoded samples (images) for a backbone with a decoder; the latents themselves for a
bring-your-own latents dataset (a latent-space judge, `judge.space: latent`). Manipulation edits the latents of test
rows: encoded real samples with their true labels, or, for a backbone without an encoder (a GAN), latents drawn
from its prior, whose original attributes are what the judge reads off their samples."""
from __future__ import annotations

import time

import numpy as np
import pandas as pd
import torch

from plugen_core import plots, tracking
from plugen_core.backbones import load_backbone
from plugen_core.evaluation import (
    METRICS_CONTRACT,
    RECONSTRUCTION_KEYS,
    FeatureExtractor,
    InceptionFeatures,
    agreement,
    edit_targets,
    fid_kid,
    generation_targets,
    matches_any,
    summarise,
    uniform_targets,
)
from plugen_core.flow import PluGeN
from plugen_core.images import from_uint8
from plugen_core.io import PlugenInputError, read_array, read_table, require_file, write_json
from plugen_core.judge import Judge
from plugen_core.stages import experiment_stage


def main() -> None:
    cfg, layout, generator, device = experiment_stage(__doc__)
    ev = cfg["evaluate"]
    held_out = cfg["dataset"]["labelled"]["held_out"] or []
    rng = np.random.default_rng(cfg["seed"])
    run = tracking.join("evaluate", cfg)

    backbone = load_backbone(layout.backbone).to(device)
    plugin = PluGeN.load(layout.plugen).to(device)
    judge = Judge.load(layout.judge).to(device)
    schema = judge.schema  # original units and the data's full ranges: what every score is read in
    samples = read_array(layout.samples)
    labels = read_table(layout.labels)
    leaked = matches_any(read_table(layout.labelled), held_out).sum()
    if leaked:
        raise PlugenInputError(f"{layout.labelled} holds {leaked} row(s) of a held-out combination; rerun the data stage")
    latent_space = cfg["dataset"]["source"] == "latents"
    sampled = not latent_space and not backbone.has_encoder
    reconstructs = not latent_space and backbone.has_encoder and backbone.decodes

    def to_samples(w: torch.Tensor) -> np.ndarray:
        """What the judge reads for latents w."""
        return w.cpu().numpy() if latent_space else backbone.decode_data(w)

    def generate(targets: pd.DataFrame, n_per_target: int = 1) -> np.ndarray:
        w, _ = plugin.sample_latents(targets, n_per_target, ev["temperature"], ev["style_temperature"], generator)
        return to_samples(w)

    test = (labels["split"] == "test").to_numpy() & labels[schema.names].notna().all(axis=1).to_numpy()
    test_samples, test_labels = samples[test], labels[test].reset_index(drop=True)
    index = read_table(layout.index)
    latents = read_array(layout.latents)
    # test rows of the latents: the same rows as test_samples, or (sampled) fresh prior draws of the test split
    test_latents = torch.from_numpy(latents[(index["split"] == "test").to_numpy() & (test if not sampled else True)])
    tol = ev["continuous_tolerance"]

    metrics: dict[str, float | str] = {"judge.space": "latent" if latent_space else "samples"}
    metrics |= summarise(judge.predict(test_samples), test_labels, schema, "judge")
    print(f"[evaluate] judge accuracy {metrics.get('judge.accuracy', float('nan')):.3f} on {len(test_samples)} test rows")
    if reconstructs:
        reconstructions = backbone.decode_data(test_latents)
        recon = summarise(judge.predict(reconstructions), test_labels, schema, "reconstructions")
        metrics |= recon | {"judge.accuracy_reconstructions": recon["reconstructions.accuracy"]}
        print(f"[evaluate] judge accuracy on reconstructions {recon['reconstructions.accuracy']:.3f}")

    for group, targets in generation_targets(schema, held_out, ev["n_generation"], rng).items():
        if len(targets):
            metrics |= summarise(judge.predict(generate(targets)), targets, schema, f"generation.{group}")
            print(f"[evaluate] generation {group}: accuracy {metrics.get(f'generation.{group}.accuracy', float('nan')):.3f}, continuous MAE {metrics.get(f'generation.{group}.continuous_mae', float('nan')):.3f} of range")

    n_edit = min(ev["n_manipulation"], len(test_latents))
    edit_latents = test_latents[:n_edit].to(device)
    original = judge.predict(to_samples(edit_latents)) if sampled else test_labels.iloc[:n_edit][schema.names].reset_index(drop=True)
    success, preservation = [], []
    for name in schema.names:
        new = edit_targets(schema, original, name, rng)
        edited = to_samples(plugin.manipulate(edit_latents, pd.DataFrame({name: new.to_numpy()})))
        hits = agreement(judge.predict(edited), original.assign(**{name: new}), schema, tol)
        success.append(hits[name].mean())
        preservation.append(np.mean([hits[other].mean() for other in schema.names if other != name]) if len(schema.names) > 1 else 1.0)
        metrics[f"manipulation.{name}.success"] = float(success[-1])
        metrics[f"manipulation.{name}.preservation"] = float(preservation[-1])
    metrics["manipulation.success"] = float(np.mean(success))
    metrics["manipulation.preservation"] = float(np.mean(preservation))
    print(f"[evaluate] manipulation success {metrics['manipulation.success']:.3f}, preservation {metrics['manipulation.preservation']:.3f} ({n_edit} {'sampled' if sampled else 'test'} latents)")

    n_fid = min(ev["n_fid"], len(test_samples))
    if ev.get("inception_weights") and judge.images:
        extractor, to_input, metrics["fid.features"] = InceptionFeatures(str(require_file(ev["inception_weights"], "Inception weights"))), from_uint8, "inception"
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
    metrics["time.train_flow_s"] = float(history["elapsed_s"].iloc[-1])
    required = [k for k in METRICS_CONTRACT if reconstructs or k not in RECONSTRUCTION_KEYS]
    missing = [k for k in required if k not in metrics]
    if missing:  # e.g. a schema without a discrete or without a continuous attribute has no accuracy or MAE
        print(f"[evaluate] note: no value for {missing} (the attributes have no such kind)")
    write_json(metrics, layout.metrics)
    if judge.images:
        draw_grids(layout.plots, schema, held_out, generate, to_samples, plugin, None if sampled else test_samples, test_latents, original, rng, device)
    else:  # latent vectors have no picture: draw the scores per attribute instead
        plots.attribute_scores(metrics, schema.names, layout.plots / "generation_grid.png", layout.plots / "manipulation_grid.png", cfg["name"])
    plots.training_curves(history, ["nll", "nll_labelled", "sigma"], layout.plots / "flow_curves.png", f"{cfg['name']}: flow training")
    print(f"[evaluate] wrote {layout.metrics} and {layout.plots}/{{generation_grid,manipulation_grid,flow_curves}}.png")
    inputs = [layout.data, layout.backbone, layout.judge, layout.plugen]
    run.log_evaluation(metrics, plugin.schema.to_dict(), inputs, {"metrics": [layout.metrics, layout.flow_history], "plots": [layout.plots]})
    run.register_plugin(layout.plugen, layout.backbone, metrics)
    run.close()


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
        columns.append(to_samples(plugin.manipulate(latents, pd.DataFrame({name: new.to_numpy()}))))
        col_titles.append(f"edit {name}")
    plots.image_grid(np.stack(columns, axis=1), [plots.describe(r) for _, r in original.iterrows()], col_titles, out / "manipulation_grid.png", "PluGeN manipulation (one attribute changed per column)")


if __name__ == "__main__":
    tracking.run_stage(main)
