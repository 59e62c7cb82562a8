"""Stage `train_judge`: train the evaluation judge on real labelled images of every combination."""
from __future__ import annotations

import argparse

import pandas as pd

from plugen_core import tracking
from plugen_core.io import load_params, read_array, read_json, read_table, resolve_device, section, seed_everything, write_table
from plugen_core.judge import Judge
from plugen_core.schema import Schema


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--data", default="data/shapes")
    ap.add_argument("--out", default="models/judge.pt")
    ap.add_argument("--history", default="metrics/judge_history.csv")
    args = ap.parse_args()
    params = load_params(args.params)
    p = section(params, "judge")
    generator = seed_everything(params["seed"])
    device = resolve_device(params.get("device", "auto"))
    run = tracking.join("train_judge", params)

    images = read_array(f"{args.data}/images.npy")
    labels = read_table(f"{args.data}/labels.parquet")
    schema = Schema.from_dict({"attributes": read_json(f"{args.data}/attributes.json")})
    train = (labels["split"] == "train").to_numpy()
    judge = Judge(schema, channels=images.shape[3], width=p["width"])
    history = judge.fit(images[train], labels[train], p["epochs"], p["batch_size"], p["lr"], p["augment"], device, generator)
    judge.cpu().save(args.out)
    write_table(pd.DataFrame(history), args.history)
    run.log_history("judge", history)
    print(f"[train_judge] wrote {args.out}, {args.history}")


if __name__ == "__main__":
    tracking.run_stage(main)
