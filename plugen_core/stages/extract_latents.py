"""Stage `extract_latents`: encode every image with the frozen backbone (the VAE's posterior mean)."""
from __future__ import annotations

import argparse

import numpy as np

from plugen_core import tracking
from plugen_core.backbones import load_backbone
from plugen_core.io import load_params, read_array, read_table, resolve_device, write_array, write_table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--data", default="data/shapes")
    ap.add_argument("--backbone", default="models/backbone.pt")
    ap.add_argument("--out", default="latents")
    args = ap.parse_args()
    params = load_params(args.params)
    device = resolve_device(params.get("device", "auto"))
    backbone = load_backbone(args.backbone).to(device)
    images = read_array(f"{args.data}/images.npy")
    index = read_table(f"{args.data}/labels.parquet")[["id", "split"]]
    latents = backbone.encode_data(images).numpy()
    write_array(latents.astype(np.float32), f"{args.out}/latents.npy")
    write_table(index, f"{args.out}/index.parquet")
    print(f"[extract_latents] {latents.shape[0]} latents of dim {latents.shape[1]} -> {args.out}/")


if __name__ == "__main__":
    tracking.run_stage(main)
