"""One module per DVC stage; each runs on its own: `python -m plugen_core.stages.<name> --help`."""
from __future__ import annotations

import argparse

import torch

from plugen_core import config, threads
from plugen_core.io import load_params, resolve_device, seed_everything
from plugen_core.layout import Layout


def experiment_stage(description: str) -> tuple[dict, Layout, torch.Generator, torch.device]:
    """The command line every experiment stage takes (--params, --experiment): the experiment's settings and files,
    the seeded generator and the device it runs on (and torch's threads set)."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--experiment", required=True, help="an entry of params.yaml experiments")
    args = ap.parse_args()
    cfg = config.experiment(load_params(args.params), args.experiment)
    threads.configure(cfg["threads"])
    return cfg, Layout(cfg), seed_everything(cfg["seed"]), resolve_device(cfg["device"])
