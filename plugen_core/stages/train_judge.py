"""Stage `train_judge@<dataset>`: train the evaluation judge on real labelled samples of every combination: the
dataset's `judge` split where it has one (bring-your-own latents: rows whose labels the flow never sees), else its
training split. A CNN for images, an MLP for latent vectors."""
from __future__ import annotations

import argparse

import pandas as pd

from plugen_core import config
from plugen_core.io import load_params, read_array, read_json, read_table, resolve_device, run_stage, section, seed_everything, write_table
from plugen_core.judge import Judge
from plugen_core.layout import DatasetLayout
from plugen_core.schema import Schema


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--dataset", required=True, help="an entry of params.yaml datasets")
    args = ap.parse_args()
    params = load_params(args.params)
    config.dataset(params, args.dataset)
    p = section(params, "judge")
    layout = DatasetLayout(args.dataset)
    generator = seed_everything(params.get("seed", 0))
    device = resolve_device(params.get("device", "auto"))

    samples = read_array(layout.samples)
    labels = read_table(layout.labels)
    schema = Schema.from_dict({"attributes": read_json(layout.attributes)})
    split = "judge" if (labels["split"] == "judge").any() else "train"
    rows = (labels["split"] == split).to_numpy()
    judge = Judge(schema, input_shape=samples.shape[1:], width=p["width"])
    history = judge.fit(samples[rows], labels[rows].reset_index(drop=True), p["epochs"], p["batch_size"], p["lr"], p["augment"], device, generator)
    judge.cpu().save(layout.judge)
    write_table(pd.DataFrame(history), layout.judge_history)
    print(f"[train_judge] {args.dataset}: trained on the {split} split ({int(rows.sum())} rows) -> {layout.judge}, {layout.judge_history}")


if __name__ == "__main__":
    run_stage(main)
