"""Prefect flow `plugen-pipeline`: the stages of dvc.yaml as Prefect tasks, in dependency order.

dvc.yaml stays the one description of the pipeline: the DAG is read from DVC's own index, and every
stage runs as `dvc repro --single-item <stage>`, so DVC still decides what is up to date and writes
dvc.lock. Stages run one at a time because they share one workspace and DVC locks it per command;
parallelism comes from several flow runs (workers, or `flows.sweep`), each in its own workspace.

Stages whose dvc.yaml entry says `meta: {gpu: true}` get the `gpu` tag, so
`prefect concurrency-limit create gpu 1` lets one GPU stage run at a time across all flow runs.

Without a server (Prefect starts a temporary local API):
    python -m flows.pipeline --set flow.epochs=3 --device cpu
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Failed, State

GPU_TAG = "gpu"
Device = Literal["auto", "cpu", "cuda"]


@dataclass(frozen=True)
class Stage:
    name: str                   # DVC's address of the stage: what `dvc repro` takes
    upstream: tuple[str, ...]   # stages whose outputs it reads
    gpu: bool                   # dvc.yaml: meta: {gpu: true}
    git_outs: tuple[str, ...]   # outputs with `cache: false` (metrics, plots): an experiment must include them


def read_stages(repo: str | Path, targets: list[str] | None = None) -> list[Stage]:
    """The DVC stages to run for `targets` (default: every stage of the root dvc.yaml) and everything upstream of them,
    in dependency order."""
    import networkx as nx
    from dvc.repo import Repo
    from dvc.stage import PipelineStage

    with Repo(str(repo)) as dvc_repo:
        graph = dvc_repo.index.graph  # an edge points from a stage to a stage it depends on
        root = dvc_repo.root_dir

        def address(stage: PipelineStage) -> str:  # as `dvc repro` takes it in the repo root (DVC's `addressing` is relative to our cwd)
            dvcfile = os.path.relpath(stage.path, root)
            return stage.name if dvcfile == "dvc.yaml" else f"{dvcfile}:{stage.name}"

        addresses = {s: address(s) for s in graph if isinstance(s, PipelineStage)}  # .dvc files are data, not stages
        order = {name: i for i, name in enumerate(addresses.values())}  # dvc.yaml order breaks ties
        deps = nx.DiGraph()
        deps.add_nodes_from(addresses.values())
        deps.add_edges_from((addresses[b], addresses[a]) for a, b in graph.edges if a in addresses and b in addresses)
        unknown = sorted(set(targets or ()) - set(order))
        if unknown:
            raise ValueError(f"unknown stage(s) {unknown}: dvc.yaml has {list(order)}")
        # no targets: the root dvc.yaml's stages, as `dvc repro` runs (reports/dvc.yaml's benchmark is asked for by name)
        wanted = {n for n in order if ":" not in n} if not targets else set(targets).union(*(nx.ancestors(deps, t) for t in targets))
        stages = {
            name: Stage(
                name=name,
                upstream=tuple(deps.predecessors(name)),
                gpu=bool((stage.meta or {}).get("gpu")),
                git_outs=tuple(os.path.relpath(o.fs_path, root) for o in stage.outs if not o.use_cache),
            )
            for stage, name in addresses.items()
        }
    return [stages[n] for n in nx.lexicographical_topological_sort(deps.subgraph(wanted), key=order.get)]


def set_param_args(overrides: dict[str, Any]) -> list[str]:
    """`key=value` strings for `dvc exp run -S`. A str value is passed as typed (Hydra syntax, like the CLI); others are formatted."""

    def literal(value: Any) -> str:
        if isinstance(value, dict):  # Hydra wants bare keys: {a: 1}
            return "{" + ", ".join(f"{k}: {literal(v)}" for k, v in value.items()) + "}"
        if isinstance(value, list):
            return "[" + ", ".join(literal(v) for v in value) + "]"
        return json.dumps(value)  # numbers, true/false, null, quoted strings

    return [f"{key}={value if isinstance(value, str) else literal(value)}" for key, value in overrides.items()]


def apply_params(repo: Path, overrides: dict[str, Any]) -> None:
    """Write `overrides` into the params files with the code `dvc exp run -S` uses, so types and errors match DVC."""
    from dvc.exceptions import InvalidArgumentError
    from dvc.utils.cli_parse import to_path_overrides
    from dvc.utils.hydra import apply_overrides

    for path, items in to_path_overrides(set_param_args(overrides)).items():
        try:
            apply_overrides(repo / path, items)
        except InvalidArgumentError as e:
            raise ValueError(f"{path}: cannot apply overrides {items}: {e.__cause__ or e}") from e


def param_overrides(overrides: dict[str, Any] | None, device: str | None) -> dict[str, Any]:
    """The flows' `overrides` and `device` parameters as one set of params to override."""
    return dict(overrides or {}) | ({"device": device} if device else {})


def experiment_env(repo: Path) -> dict[str, str]:
    """What `dvc exp run` tells the stages of an experiment (MLflow tracking tags its run with it): a fresh name and the baseline."""
    from dvc.repo import Repo
    from dvc.repo.experiments.utils import get_random_exp_name

    with Repo(str(repo)) as dvc_repo:
        baseline = dvc_repo.scm.get_rev()
        return {"DVC_EXP_BASELINE_REV": baseline, "DVC_EXP_NAME": get_random_exp_name(dvc_repo.scm, baseline)}


def require_default_remote(repo: Path) -> None:
    from dvc.repo import Repo

    with Repo(str(repo)) as dvc_repo:
        if not dvc_repo.config["core"].get("remote"):
            raise ValueError(
                f"push requested but {repo} has no default DVC remote; "
                "add one with `dvc remote add -d <name> <url>`, or run without push"
            )


def run_dvc(args: list[str], repo: str | Path, env: dict[str, str] | None = None) -> None:
    """Run `dvc <args>` in `repo` (with `env` added), sending its output to the Prefect log line by line as it comes; raise if it fails."""
    logger = get_run_logger()
    env = os.environ | {
        # Stage commands say `python`: make that the interpreter running this flow, whatever the worker's PATH.
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        "PYTHONUNBUFFERED": "1",  # stage prints arrive as they happen, not at exit
        "TQDM_DISABLE": "1",      # progress bars redraw one line with \r: noise in a log
    } | (env or {})
    logger.info("$ dvc %s", " ".join(args))
    tail: collections.deque[str] = collections.deque(maxlen=8)
    with subprocess.Popen(
        [sys.executable, "-m", "dvc", *args], cwd=repo, env=env, text=True, bufsize=1,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    ) as proc:
        for line in proc.stdout:
            if line := line.rstrip():
                logger.info(line)
                tail.append(line)
    if proc.returncode:
        raise RuntimeError(f"`dvc {' '.join(args)}` exited with {proc.returncode}:\n" + "\n".join(tail))


# DVC decides what is up to date; Prefect's result cache must never skip a command (NO_CACHE).
@task(task_run_name="{stage}", cache_policy=NO_CACHE)
def run_stage(repo: str, stage: str, env: dict[str, str]) -> None:
    run_dvc(["repro", "--single-item", stage], repo, env)


# Both name the stages this run brought up to date: with `targets`, the others' outputs may not exist.
@task(task_run_name="dvc exp save", cache_policy=NO_CACHE)
def save_experiment(repo: str, stages: list[Stage], name: str) -> None:
    include = [f"--include-untracked={path}" for stage in stages for path in stage.git_outs]
    run_dvc(["exp", "save", "--name", name, *include, *(stage.name for stage in stages)], repo)


@task(task_run_name="dvc push", cache_policy=NO_CACHE)
def push_outputs(repo: str, stages: list[Stage]) -> None:
    run_dvc(["push", *(stage.name for stage in stages)], repo)


@flow(name="plugen-pipeline")
def pipeline(
    targets: list[str] | None = None,
    overrides: dict[str, Any] | None = None,
    device: Device | None = None,
    push: bool = False,
    repo: str = ".",
    retries: int = 2,
    retry_delay_s: float = 10.0,
) -> dict[str, str]:
    """Reproduce the DVC pipeline, one Prefect task per stage.

    targets: stages to bring up to date (with everything upstream); default all.
    overrides: params as `dvc exp run -S key=value` takes them, e.g. {"flow.epochs": 3}; with any
        override (device included) the run is saved as a DVC experiment (`dvc exp save`).
    device: sets the `device` param (auto | cpu | cuda).
    push: `dvc push` the outputs at the end; needs a default DVC remote.
    retries, retry_delay_s: per stage, for transient failures.
    """
    logger = get_run_logger()
    root = Path(repo).resolve()
    stages = read_stages(root, targets)
    if push:
        require_default_remote(root)  # fail now, not after hours of training
    params = param_overrides(overrides, device)
    env = {}
    if params:  # a DVC experiment, as `dvc exp run -S` would make it
        apply_params(root, params)
        env = experiment_env(root)
        logger.info("DVC experiment %s with %s", env["DVC_EXP_NAME"], " ".join(set_param_args(params)))

    outcome: dict[str, str] = {}
    for stage in stages:
        blocked = [u for u in stage.upstream if outcome[u] != "Completed"]
        if blocked:
            logger.warning("not running %s: upstream %s did not complete", stage.name, ", ".join(blocked))
            outcome[stage.name] = "NotRun"
            continue
        step = run_stage.with_options(
            tags=[GPU_TAG] if stage.gpu else [], retries=retries, retry_delay_seconds=retry_delay_s
        )
        outcome[stage.name] = step(str(root), stage.name, env, return_state=True).name

    # Stages hand back their states instead of raising, so independent stages still run after a
    # failure; the flow's final state is decided here (Prefect 3 would not fail the flow for us).
    failed = [name for name, state in outcome.items() if state not in ("Completed", "NotRun")]
    if failed:
        not_run = [name for name, state in outcome.items() if state == "NotRun"]
        return Failed(message=f"stage(s) failed: {', '.join(failed)}" + (f"; not run: {', '.join(not_run)}" if not_run else ""))
    if params:
        save_experiment(str(root), stages, env["DVC_EXP_NAME"])
    if push:
        push_outputs.with_options(retries=retries, retry_delay_seconds=retry_delay_s)(str(root), stages)
    return outcome


def key_value(item: str) -> tuple[str, str]:
    """argparse type for KEY=VALUE; the value stays a string for DVC to parse, as `dvc exp run -S` would."""
    key, eq, value = item.partition("=")
    if not (key and eq):
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {item!r}")
    return key, value


def cli_parser(module: str, description: str | None, targets: bool = True) -> argparse.ArgumentParser:
    """Options shared by the flows' command lines (`python -m flows.pipeline`, `flows.sweep`, `flows.label_efficiency`)."""
    ap = argparse.ArgumentParser(prog=f"python -m {module}", description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", type=key_value, action="append", default=[], metavar="KEY=VALUE", help="param override, as `dvc exp run -S` (repeatable)")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], help="sets the `device` param")
    if targets:
        ap.add_argument("--targets", nargs="+", metavar="STAGE", help="stages to bring up to date, with what they need (default: all)")
    ap.add_argument("--repo", default=".", help="DVC repository to run in (default: current directory)")
    ap.add_argument("--retries", type=int, default=2, help="retries per task: a stage, or an experiment (default: 2)")
    ap.add_argument("--retry-delay", type=float, default=10.0, dest="retry_delay_s", help="seconds between retries (default: 10)")
    return ap


def exit_code(state: State) -> int:
    """Say how a flow run called from the command line ended; 0 when it completed."""
    print(f"flow run {state.state_details.flow_run_id}: {state.name}" + (f": {state.message}" if state.message else ""))
    return 0 if state.is_completed() else 1


def main(argv: list[str] | None = None) -> int:
    ap = cli_parser("flows.pipeline", __doc__)
    ap.add_argument("--push", action="store_true", help="`dvc push` the outputs at the end")
    args = vars(ap.parse_args(argv))
    args["overrides"] = dict(args.pop("set"))
    return exit_code(pipeline(**args, return_state=True))


if __name__ == "__main__":
    sys.exit(main())
