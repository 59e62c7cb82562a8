"""Stage `evaluate`: the metrics contract of PLUGEN.md (judge, seen/unseen generation, manipulation,
FID/KID on judge features) as a flat JSON, plus the generation and manipulation grids."""
from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from plugen_core import plots, tracking
from plugen_core.backbones import load_backbone
from plugen_core.evaluation import (
    METRICS_CONTRACT,
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
from plugen_core.io import PlugenInputError, load_params, read_array, read_table, require_file, resolve_device, section, seed_everything, write_json
from plugen_core.judge import Judge


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--data", default="data/shapes")
    ap.add_argument("--backbone", default="models/backbone.pt")
    ap.add_argument("--plugen", default="models/plugen.pt")
    ap.add_argument("--judge", default="models/judge.pt")
    ap.add_argument("--flow-history", default="metrics/flow_history.csv")
    ap.add_argument("--metrics", default="metrics/metrics.json")
    ap.add_argument("--plots", default="plots")
    args = ap.parse_args()
    params = load_params(args.params)
    ev = section(params, "evaluate")
    held_out = section(params, "data")["labelled"]["held_out"]
    generator = seed_everything(params["seed"])
    rng = np.random.default_rng(params["seed"])
    device = resolve_device(params.get("device", "auto"))
    run = tracking.join("evaluate", params)

    backbone = load_backbone(args.backbone).to(device)
    plugin = PluGeN.load(args.plugen).to(device)
    judge = Judge.load(args.judge).to(device)
    schema = judge.schema  # original units and the data's full ranges: what every score is read in
    images = read_array(f"{args.data}/images.npy")
    labels = read_table(f"{args.data}/labels.parquet")
    leaked = matches_any(read_table(f"{args.data}/labelled.parquet"), held_out).sum()
    if leaked:
        raise PlugenInputError(f"{args.data}/labelled.parquet holds {leaked} row(s) of a held-out combination; rerun the data stage")
    test = (labels["split"] == "test").to_numpy()
    test_images, test_labels = images[test], labels[test].reset_index(drop=True)
    tol = ev["continuous_tolerance"]
    t, t_style = ev["temperature"], ev["style_temperature"]

    def generate(targets: pd.DataFrame, n_per_target: int = 1) -> np.ndarray:
        w, _ = plugin.sample_latents(targets, n_per_target, t, t_style, generator)
        return backbone.decode_data(w)

    metrics: dict[str, float | str] = {}
    metrics |= summarise(judge.predict(test_images), test_labels, schema, "judge")
    test_latents = backbone.encode_data(test_images)
    reconstructions = backbone.decode_data(test_latents)
    recon = summarise(judge.predict(reconstructions), test_labels, schema, "reconstructions")
    metrics |= recon | {"judge.accuracy_reconstructions": recon["reconstructions.accuracy"]}
    print(f"[evaluate] judge accuracy {metrics['judge.accuracy']:.3f}, on reconstructions {recon['reconstructions.accuracy']:.3f}")

    for group, targets in generation_targets(schema, held_out, ev["n_generation"], rng).items():
        metrics |= summarise(judge.predict(generate(targets)), targets, schema, f"generation.{group}")
        print(f"[evaluate] generation {group}: accuracy {metrics[f'generation.{group}.accuracy']:.3f}, continuous MAE {metrics[f'generation.{group}.continuous_mae']:.3f} of range")

    n_edit = min(ev["n_manipulation"], len(test_images))
    original = test_labels.iloc[:n_edit][schema.names]
    success, preservation = [], []
    for name in schema.names:
        new = edit_targets(schema, original, name, rng)
        edited = backbone.decode_data(plugin.manipulate(test_latents[:n_edit].to(device), pd.DataFrame({name: new.to_numpy()})))
        hits = agreement(judge.predict(edited), original.assign(**{name: new}), schema, tol)
        success.append(hits[name].mean())
        preservation.append(np.mean([hits[other].mean() for other in schema.names if other != name]))
        metrics[f"manipulation.{name}.success"] = float(success[-1])
        metrics[f"manipulation.{name}.preservation"] = float(preservation[-1])
    metrics["manipulation.success"] = float(np.mean(success))
    metrics["manipulation.preservation"] = float(np.mean(preservation))
    print(f"[evaluate] manipulation success {metrics['manipulation.success']:.3f}, preservation {metrics['manipulation.preservation']:.3f}")

    n_fid = min(ev["n_fid"], len(test_images))
    if ev.get("inception_weights"):
        extractor, metrics["fid.features"] = InceptionFeatures(str(require_file(ev["inception_weights"], "Inception weights"))), "inception"
    else:
        extractor, metrics["fid.features"] = FeatureExtractor(judge), "judge"
    start = time.perf_counter()
    plugin_samples = generate(uniform_targets(schema, n_fid, rng))
    metrics["time.generate_1000_s"] = (time.perf_counter() - start) * 1000 / n_fid
    fakes = {
        "backbone_reconstructions": reconstructions[:n_fid],
        "backbone_samples": backbone.decode_data(backbone.sample_prior(n_fid, generator)),
        "plugen_samples": plugin_samples,
    }
    metrics |= fid_kid(extractor.to(device), test_images[:n_fid], fakes, ev["kid_subset_size"])
    metrics["fid.ratio"] = metrics["fid.plugen_samples"] / metrics["fid.backbone_samples"]
    print(f"[evaluate] FID ({metrics['fid.features']} features): backbone samples {metrics['fid.backbone_samples']:.2f}, plugin samples {metrics['fid.plugen_samples']:.2f}, ratio {metrics['fid.ratio']:.3f}")

    history = read_table(args.flow_history)
    metrics["time.train_flow_s"] = float(history["elapsed_s"].iloc[-1])
    missing = [k for k in METRICS_CONTRACT if k not in metrics]
    assert not missing, f"metrics contract keys not computed: {missing}"
    write_json(metrics, args.metrics)
    draw_grids(args.plots, schema, held_out, generate, backbone, plugin, test_images, test_latents, test_labels, rng, device)
    plots.training_curves(history, ["nll", "nll_labelled", "sigma"], f"{args.plots}/flow_curves.png", "flow training")
    print(f"[evaluate] wrote {args.metrics} and {args.plots}/{{generation_grid,manipulation_grid,flow_curves}}.png")
    inputs = [args.data, args.backbone, args.judge, args.plugen]
    run.log_evaluation(metrics, plugin.schema.to_dict(), inputs, {"metrics": [args.metrics, args.flow_history], "plots": [args.plots]})
    run.register_plugin(args.plugen, args.backbone, metrics)
    run.close()


def draw_grids(out, schema, held_out, generate, backbone, plugin, test_images, test_latents, test_labels, rng, device, n_cols: int = 8, n_rows: int = 6) -> None:
    groups = generation_targets(schema, held_out, 4, rng)
    rows = pd.concat([groups["seen"].head(4), groups["unseen"].head(len(held_out))], ignore_index=True)
    unseen = [False] * min(4, len(groups["seen"])) + [True] * min(len(held_out), len(groups["unseen"]))
    images = generate(rows, n_cols).reshape(len(rows), n_cols, *test_images.shape[1:])
    titles = [plots.describe(r) + (" (UNSEEN)" if u else "") for (_, r), u in zip(rows.iterrows(), unseen)]
    plots.image_grid(images, titles, [], f"{out}/generation_grid.png", "PluGeN conditional generation (rows: requested attributes; red: combinations absent from the labelled data)", unseen)

    original = test_labels.iloc[:n_rows][schema.names]
    columns = [test_images[:n_rows], backbone.decode_data(test_latents[:n_rows])]
    col_titles = ["original", "reconstruction"]
    for name in schema.names:
        new = edit_targets(schema, original, name, rng)
        columns.append(backbone.decode_data(plugin.manipulate(test_latents[:n_rows].to(device), pd.DataFrame({name: new.to_numpy()}))))
        col_titles.append(f"edit {name}")
    grid = np.stack(columns, axis=1)
    plots.image_grid(grid, [plots.describe(r) for _, r in original.iterrows()], col_titles, f"{out}/manipulation_grid.png", "PluGeN manipulation (one attribute changed per column)")


if __name__ == "__main__":
    tracking.run_stage(main)
