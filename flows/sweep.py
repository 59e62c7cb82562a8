"""Prefect flow `plugen-sweep`: a grid of parameter overrides run as DVC experiments, then one table comparing them.

Each grid point is one task running `dvc exp run --temp`: DVC copies the workspace (uncommitted
changes included) into its own temporary directory and runs the pipeline there, so up to `jobs`
experiments run side by side and no two `dvc repro` ever share a workspace. Stages a point does not
change are restored from DVC's run cache once any earlier run has produced them.

    python -m flows.sweep --grid flow.sigma_min=0.1,0.2 --set flow.epochs=3
    python -m flows.sweep --grid seed=0,1 --targets evaluate@shapes-vae reports/dvc.yaml:baselines@shapes-vae
"""
from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.artifacts import create_table_artifact
from prefect.futures import wait
from prefect.runtime import flow_run
from prefect.states import Failed
from prefect.task_runners import ThreadPoolTaskRunner

from flows.pipeline import GPU_TAG, Device, cli_parser, exit_code, key_value, param_overrides, read_stages, run_dvc, set_param_args
from plugen_core import threads


@task(task_run_name="{name}", cache_policy=NO_CACHE)
def run_experiment(repo: str, name: str, overrides: dict[str, Any], targets: list[str], cpu_share: int) -> None:
    # Experiments side by side split the CPU cores: torch threads spinning on all of them each run several times slower.
    share = {} if "OMP_NUM_THREADS" in os.environ else {"OMP_NUM_THREADS": str(cpu_share)}
    run_dvc(["exp", "run", "--temp", "--name", name, *(f"--set-param={arg}" for arg in set_param_args(overrides)), *targets], repo, share)


def compare(repo: str, names: list[str], swept: list[str]) -> pd.DataFrame:
    """One row per experiment: the swept params as DVC recorded them, then every metric, named as `dvc exp show` names
    them (`<file>:<key>` where several metrics files, one per pipeline experiment, share a key). Read from `dvc exp
    show --json`, which nests metrics by file: `dvc.api.metrics_show(rev=...)` fails to find an experiment's
    `cache: false` metrics when the workspace never ran the pipeline (a sweep on a fresh clone)."""
    shown = subprocess.run([sys.executable, "-m", "dvc", "exp", "show", "--json"], cwd=repo, capture_output=True, text=True, check=True).stdout
    found = {rev["name"]: rev["data"] for baseline in json.loads(shown) for exp in baseline.get("experiments") or [] for rev in exp["revs"]}
    table = []
    for name in (n for n in names if n in found):
        data = found[name]
        params = flat(data["params"].get("params.yaml", {}).get("data", {}))
        metrics = {path: flat(item.get("data", {})) for path, item in data["metrics"].items()}
        shared = Counter(key for values in metrics.values() for key in values)
        row = {"Experiment": name, **{key: params.get(key) for key in swept}}
        row |= {key if shared[key] == 1 else f"{path}:{key}": value for path, values in metrics.items() for key, value in values.items()}
        table.append(row)
    return pd.DataFrame(table, columns=None if table else ["Experiment", *swept]).set_index("Experiment")


def flat(nested: dict) -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}, as DVC names nested params and metrics."""
    return pd.json_normalize(nested, sep=".").to_dict("records")[0] if nested else {}


@flow(name="plugen-sweep")
def sweep(
    grid: dict[str, list[Any]],
    overrides: dict[str, Any] | None = None,
    targets: list[str] | None = None,
    device: Device | None = None,
    repo: str = ".",
    jobs: int = 2,
    retries: int = 2,
    retry_delay_s: float = 10.0,
) -> pd.DataFrame:
    """Run one DVC experiment per combination of `grid` values, on top of `overrides`, and compare their metrics.

    grid: {"param.key": [value, ...]}; every combination becomes one experiment, named after this flow run.
    overrides, device: applied to every experiment, as in `plugen-pipeline`.
    targets: the stages each experiment brings up to date (with everything upstream), as `dvc exp run` takes them;
        default the root dvc.yaml's. `reports/dvc.yaml:baselines@<experiment>` adds the baselines' metrics.
    jobs: experiments running at once (each holds the `gpu` tag when the pipeline has GPU stages).
    """
    logger = get_run_logger()
    if not grid or not all(grid.values()):
        raise ValueError(f"grid needs at least one param with at least one value, got {grid}")
    root = str(Path(repo).resolve())
    base = param_overrides(overrides, device)
    points = {f"{flow_run.name}-{i}": base | dict(zip(grid, values)) for i, values in enumerate(itertools.product(*grid.values()))}
    gpu = any(stage.gpu for stage in read_stages(root, targets))  # also refuses an unknown target, before any run
    step = run_experiment.with_options(tags=[GPU_TAG] if gpu else [], retries=retries, retry_delay_seconds=retry_delay_s)

    cpu_share = max(1, threads.cores_allowed() // min(jobs, len(points)))  # the cores this process may use, not the host's
    with ThreadPoolTaskRunner(max_workers=jobs) as runner:
        futures = {name: runner.submit(step, {"repo": root, "name": name, "overrides": point, "targets": targets or [], "cpu_share": cpu_share}) for name, point in points.items()}
        wait(list(futures.values()))
    failed = [name for name, future in futures.items() if not future.state.is_completed()]

    table = compare(root, list(points), list(grid))
    logger.info("experiments (one column each):\n%s", table.T.to_string())
    create_table_artifact(key="plugen-sweep", table=table.reset_index().to_dict("records"), description=f"DVC experiments of {flow_run.name}")
    if failed:
        return Failed(message=f"experiment(s) failed: {', '.join(failed)}")
    return table


def main(argv: list[str] | None = None) -> int:
    ap = cli_parser("flows.sweep", __doc__)
    ap.add_argument("--grid", type=key_value, action="append", required=True, metavar="KEY=V1,V2", help="a swept param and its values (repeatable)")
    ap.add_argument("--jobs", type=int, default=2, help="experiments at once (default: 2)")
    args = vars(ap.parse_args(argv))
    args["overrides"] = dict(args.pop("set"))
    args["grid"] = {key: values.split(",") for key, values in args["grid"]}
    return exit_code(sweep(**args, return_state=True))


if __name__ == "__main__":
    sys.exit(main())
