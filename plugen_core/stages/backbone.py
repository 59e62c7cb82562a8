"""Stage `backbone`: pre-train the generative backbone on all training images, without labels."""
from __future__ import annotations

import argparse
import time

import pandas as pd

from plugen_core import tracking
from plugen_core.backbones import build_backbone
from plugen_core.io import load_params, read_array, read_table, resolve_device, section, seed_everything, write_table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--data", default="data/shapes")
    ap.add_argument("--out", default="models/backbone.pt")
    ap.add_argument("--history", default="metrics/backbone_history.csv")
    args = ap.parse_args()
    params = load_params(args.params)
    p = section(params, "backbone")
    generator = seed_everything(params["seed"])
    device = resolve_device(params.get("device", "auto"))
    run = tracking.join("backbone", params)

    images = read_array(f"{args.data}/images.npy")
    split = read_table(f"{args.data}/labels.parquet")["split"].to_numpy()
    train = images[split == "train"]
    config = {k: v for k, v in p.items() if k not in ("kind", "epochs", "batch_size", "lr")}
    model = build_backbone(p["kind"], image_size=images.shape[1], channels=images.shape[3], **config)
    start = time.perf_counter()
    history = model.fit(train, p["epochs"], p["batch_size"], p["lr"], device, generator)
    print(f"[backbone] trained {p['kind']} on {len(train)} images on {device} in {time.perf_counter() - start:.1f}s")
    model.cpu().save(args.out)
    write_table(pd.DataFrame(history), args.history)
    run.log_history("backbone", history)
    print(f"[backbone] wrote {args.out}, {args.history}")


if __name__ == "__main__":
    tracking.run_stage(main)
