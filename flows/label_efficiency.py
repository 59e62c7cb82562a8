"""Prefect flow `plugen-label-efficiency`: PluGeN and every baseline against the number of labelled samples, as DVC
experiments through `plugen-sweep`, for the benchmark report's curves.

    python -m flows.label_efficiency --experiment shapes-vae --sizes 100,200,400,800,1600 --seeds 0,1

A first sweep fits PluGeN (the unlabelled latents beside the labelled ones, under its mixture prior) and every baseline
at each labelled-set size and seed. A second fits PluGeN on the labelled latents alone, each epoch repeating them up to
as many rows as an epoch of the first draws, so both take about the same optimiser steps under the same sigma schedule.
Writes reports/label_efficiency/<experiment>.csv, a row per method, unlabelled latents or not, size and seed; `dvc
repro reports/dvc.yaml` draws it, seed-averaged, in reports/benchmark.md.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger

from flows.pipeline import Device, cli_parser, exit_code
from flows.sweep import sweep
from plugen_core import config
from plugen_core.io import atomic_path, load_params

TABLES = Path("reports/label_efficiency")
CURVE_METRICS = ("generation.unseen.joint", "generation.seen.joint", "manipulation.joint")
KEYS = ["method", "unlabelled", "labelled", "seed"]


def long_table(table: pd.DataFrame, experiment: str, size_key: str, unlabelled: bool, baselines: bool) -> pd.DataFrame:
    """A sweep's comparison (an experiment per row, `dvc exp show`'s keys per column) as KEYS + CURVE_METRICS rows:
    PluGeN's from metrics/<experiment>/metrics.json and, with `baselines`, each baseline's from its baselines.json.
    A key two metrics files share comes prefixed with its file; only this experiment's files count."""
    own = (f"metrics/{experiment}/metrics.json:", f"metrics/{experiment}/baselines.json:")
    rows = []
    for _, point in table.iterrows():
        scores = {next((key[len(p):] for p in own if key.startswith(p)), key): value for key, value in point.items()}
        methods = {"plugen": ""} | ({key.split(".")[1]: f"baselines.{key.split('.')[1]}." for key in scores if key.startswith("baselines.")} if baselines else {})
        for method, prefix in methods.items():
            rows.append({"method": method, "unlabelled": unlabelled, "labelled": int(point[size_key]), "seed": int(point["seed"]),
                         **{m: scores.get(prefix + m, math.nan) for m in CURVE_METRICS}})
    return pd.DataFrame(rows, columns=KEYS + list(CURVE_METRICS))


@flow(name="plugen-label-efficiency")
def label_efficiency(
    experiment: str = "shapes-vae",
    sizes: tuple[int, ...] = (100, 200, 400, 800, 1600),
    seeds: tuple[int, ...] = (0, 1),
    overrides: dict[str, Any] | None = None,
    device: Device | None = None,
    repo: str = ".",
    jobs: int = 2,
    retries: int = 2,
    retry_delay_s: float = 10.0,
) -> pd.DataFrame:
    """Sweep `datasets.<dataset>.labelled.count` over `sizes` and `seed` over `seeds` for `experiment`: PluGeN and the
    baselines, then PluGeN without the unlabelled latents; write the curves' table (TABLES/<experiment>.csv)."""
    logger = get_run_logger()
    root = Path(repo).resolve()
    cfg = config.experiment(load_params(root / "params.yaml"), experiment)
    if "n_train" not in cfg["dataset"]:
        raise ValueError(f"datasets.{cfg['dataset']['name']} has no n_train: the labelled-only runs' epoch length is set from it")
    size_key = f"datasets.{cfg['dataset']['name']}.labelled.count"
    grid = {size_key: list(sizes), "seed": list(seeds)}
    common = {"overrides": overrides, "device": device, "repo": str(root), "jobs": jobs, "retries": retries, "retry_delay_s": retry_delay_s}

    both = sweep(grid, targets=[f"evaluate@{experiment}", f"reports/dvc.yaml:baselines@{experiment}"], **common)
    # an epoch beside the unlabelled latents draws them all and as many labelled rows again (labelled_share 0.5)
    epoch_rows = math.ceil(cfg["dataset"]["n_train"] / (1 - cfg["flow"]["labelled_share"]))
    alone = sweep(grid, **common | {"overrides": (overrides or {}) | {"flow.use_unlabelled": False, "flow.min_epoch_rows": epoch_rows}},
                  targets=[f"evaluate@{experiment}"])
    table = pd.concat([long_table(both, experiment, size_key, True, baselines=True),
                       long_table(alone, experiment, size_key, False, baselines=False)]).sort_values(KEYS, ignore_index=True)
    path = root / TABLES / f"{experiment}.csv"
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False, float_format="%.4f")
    logger.info("wrote %s (%d rows); `dvc repro reports/dvc.yaml` draws it", path, len(table))
    return table


def whole_numbers(text: str) -> list[int]:
    """`100,200,400` as [100, 200, 400]; anything else is a usage error naming the value (argparse exits 2)."""
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        values = []
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: comma-separated whole numbers >= 0, e.g. 100,200,400")
    return values


def main(argv: list[str] | None = None) -> int:
    ap = cli_parser("flows.label_efficiency", __doc__, targets=False)  # it runs evaluate@ and baselines@ of --experiment
    ap.add_argument("--experiment", default="shapes-vae", help="an experiment of params.yaml (default: shapes-vae)")
    ap.add_argument("--sizes", type=whole_numbers, default="100,200,400,800,1600", help="labelled-set sizes (default: 100,200,400,800,1600)")
    ap.add_argument("--seeds", type=whole_numbers, default="0,1", help="seeds each size runs with (default: 0,1)")
    ap.add_argument("--jobs", type=int, default=2, help="experiments at once (default: 2)")
    args = vars(ap.parse_args(argv))
    args["overrides"] = dict(args.pop("set"))
    return exit_code(label_efficiency(**args, return_state=True))


if __name__ == "__main__":
    sys.exit(main())
