"""MLflow tracking of the DVC pipeline: one MLflow run per pipeline execution, carried from stage to stage.

Where: MLFLOW_TRACKING_URI, else params `tracking.uri`, else sqlite:///<project root>/mlflow/mlflow.db with the
artifacts beside it in mlflow/artifacts/. The project root is the repository DVC runs for (DVC_ROOT), so
`dvc exp run --temp`, which works in .dvc/tmp/exps/..., still records into the project's store.
`tracking.uri: off`, or a params file without a `tracking` section, turns tracking off (whatever
MLFLOW_TRACKING_URI says).

How one run spans stages: every stage is its own process, so the run id travels in mlflow/runs/<experiment>.json
in the workspace (ignored by git and DVC; each `dvc exp run --temp` workspace has its own). Each experiment of
params.yaml is an MLflow experiment of that name with one run per pipeline execution; its params are the experiment's
effective settings (plugen_core/config.py), flattened. The stages with something to log (backbone, train_flow,
evaluate) join the run named there or, when there is none, open one: since
`dvc repro` runs only the stages a change touches, whichever of them runs first opens it. `evaluate`, the last
stage, ends it; any stage that fails marks it FAILED. The file is stale, and the stage opens a new run (ending the
stale one as KILLED), when its run is no longer RUNNING, when params.yaml or the git commit changed since it was
opened, or when this stage already joined it: a stage runs once per execution, so finding itself there means the
execution that wrote the file died after starting it.
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import fnmatch
import functools
import hashlib
import json
import math
import numbers
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import yaml

from plugen_core import io
from plugen_core.io import PlugenInputError

RUNS = Path("mlflow/runs")  # relative to the workspace the stage runs in


def state_file(experiment: str) -> Path:
    return RUNS / f"{experiment}.json"


def project_root() -> Path:
    """The repository whose mlflow/ is the default store: DVC_ROOT (DVC points it at the parent repository even for
    `dvc exp run --temp`), else the working directory, lifted out of .dvc/tmp/exps/... when it lies inside one."""
    root = Path(os.environ.get("DVC_ROOT") or Path.cwd()).resolve()
    parts = root.parts
    for i in range(len(parts) - 2):
        if parts[i : i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    return root


def tracking_uri(params: dict) -> str | None:
    """The tracking URI for these params; None when tracking is off: `tracking.uri: off`, or no `tracking` section."""
    settings = params.get("tracking")
    if not settings or settings.get("uri") in (False, "off"):  # YAML reads a bare `off` as false
        return None
    uri = settings.get("uri")
    return os.environ.get("MLFLOW_TRACKING_URI") or uri or f"sqlite:///{project_root() / 'mlflow' / 'mlflow.db'}"


def connect(uri: str):
    """An MlflowClient for `uri`, which also becomes MLflow's global URI (model logging and the registry read it).
    Raises PlugenInputError naming the URI when a server does not answer."""
    import mlflow
    import requests

    if uri.startswith(("http://", "https://")):
        # Probe once, quickly: MLflow's own client retries with backoff for minutes before giving up.
        try:
            requests.get(f"{uri.rstrip('/')}/health", timeout=10).raise_for_status()
        except requests.RequestException as e:
            raise PlugenInputError(
                f"MLflow tracking server {uri} is unreachable ({type(e).__name__}); start it, point MLFLOW_TRACKING_URI "
                "or tracking.uri elsewhere, or set tracking.optional: true to run without tracking"
            ) from e
    mlflow.set_tracking_uri(uri)
    if not uri.startswith("sqlite:///"):
        return mlflow.MlflowClient(uri)
    # A client's first use of a SQLite store creates its tables. Stages running side by side (experiments in
    # parallel) must not both try: the first creates them under a lock, the others wait for it.
    db = Path(uri.removeprefix("sqlite:///"))
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return mlflow.MlflowClient(uri)


def experiment_id(client, name: str, uri: str) -> str:
    """The MLflow experiment `name`, created if missing. A local SQLite store keeps artifacts beside the database;
    left to itself MLflow would put them in ./mlruns of whichever directory first creates the experiment."""
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        location = (Path(uri.removeprefix("sqlite:///")).resolve().parent / "artifacts").as_uri() if uri.startswith("sqlite:///") else None
        try:
            return client.create_experiment(name, artifact_location=location)
        except MlflowException:  # a parallel stage created it first
            experiment = client.get_experiment_by_name(name)
    if experiment is None or experiment.lifecycle_stage == "deleted":
        raise PlugenInputError(f"MLflow experiment '{name}' at {uri} is missing or deleted; restore it or rename the experiment")
    return experiment.experiment_id


def tracked(method: Callable) -> Callable:
    """For a method of PipelineRun, or a function whose first argument is one: a no-op when tracking is off. A
    tracking error fails the stage with the URI in its message, or, with `tracking.optional`, warns and turns tracking
    off for the rest of the stage."""

    @functools.wraps(method)
    def wrapper(self: "PipelineRun", *args, **kwargs):
        if not self.active:
            return None
        from mlflow.exceptions import MlflowException

        try:
            return method(self, *args, **kwargs)
        except (PlugenInputError, MlflowException, OSError) as e:  # requests' errors are OSErrors
            self.active = False
            message = str(e) if isinstance(e, PlugenInputError) else f"MLflow tracking at {self.uri} failed: {e}"
            if not self.optional:
                raise PlugenInputError(message) from e
            print(f"warning: {message}; tracking.optional is true, going on without tracking", file=sys.stderr)
            return None

    return wrapper


class PipelineRun:
    """One stage's handle on the pipeline's MLflow run (see the module docstring)."""

    def __init__(self, stage: str, params: dict):
        """`params`: an experiment's effective settings (config.experiment), `tracking.experiment` its name."""
        self.stage, self.params = stage, params
        self.uri = tracking_uri(params)
        self.optional = bool(params.get("tracking", {}).get("optional", False))
        self.active = self.uri is not None
        self.client = self.run_id = None

    @tracked
    def _join(self) -> None:
        settings = self.params["tracking"]
        for key in ("experiment", "primary_metric", "primary_direction"):
            if not settings.get(key):
                raise PlugenInputError(f"params: tracking.{key} is not set")
        if settings["primary_direction"] not in ("max", "min"):
            raise PlugenInputError(f"params: tracking.primary_direction must be 'max' or 'min', got {settings['primary_direction']!r}")
        self.client = connect(self.uri)
        self.state_file = state_file(settings["experiment"])
        state = _read_state(self.state_file)
        fingerprint = _fingerprint(self.params)
        if self._resumable(state, fingerprint):
            self.run_id, stages = state["run_id"], state["stages"] + [self.stage]
        else:
            self._abandon(state)
            self.run_id, stages = self._open(), [self.stage]
        io.write_json({"uri": self.uri, "run_id": self.run_id, "fingerprint": fingerprint, "stages": stages}, self.state_file)
        self.client.set_tag(self.run_id, "plugen.stages", ",".join(stages))

    def _status(self, run_id: str) -> str | None:
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_run(run_id).info.status
        except MlflowException:
            return None

    def _resumable(self, state: dict | None, fingerprint: str) -> bool:
        return (
            state is not None
            and state.get("uri") == self.uri
            and state.get("fingerprint") == fingerprint
            and self.stage not in state.get("stages", [])
            and self._status(state["run_id"]) == "RUNNING"
        )

    def _abandon(self, state: dict | None) -> None:
        """End a stale file's run, so that no run stays RUNNING for ever."""
        if state and state.get("uri") == self.uri and self._status(state["run_id"]) == "RUNNING":
            self.client.set_tag(state["run_id"], "plugen.ended_by", f"stage {self.stage} of a later execution opened a new run")
            self.client.set_terminated(state["run_id"], "KILLED")

    def _open(self) -> str:
        """A new run: the whole params.yaml, flattened, and tags saying where and from what it ran."""
        from mlflow.entities import Param

        settings = self.params["tracking"]
        run = self.client.create_run(
            experiment_id(self.client, settings["experiment"], self.uri), run_name=os.environ.get("DVC_EXP_NAME"), tags=_run_tags(self.params)
        )
        params = [Param(key, value) for key, value in _flatten(self.params).items()]
        self.client.log_batch(run.info.run_id, params=params)
        print(f"[{self.stage}] MLflow run {run.info.run_id} opened at {self.uri}")
        return run.info.run_id

    @tracked
    def check_primary_metric(self, names: set[str]) -> None:
        """Refuse, before any work, a primary metric that the evaluation cannot write (a typo)."""
        metric = self.params["tracking"]["primary_metric"]
        if metric not in names:
            close = sorted(n for n in names if n.split(".")[0] == metric.split(".")[0]) or sorted(names)
            raise PlugenInputError(f"params: tracking.primary_metric '{metric}' is not a metric this evaluation writes; e.g. {close[:6]}")

    @tracked
    def log_history(self, prefix: str, history: list[dict]) -> None:
        """Per-epoch training metrics as `<prefix>/<column>`, step = epoch."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(f"{prefix}/{key}", value, now, int(row["epoch"])) for row in history for key, value in _numbers(row).items() if key != "epoch"]
        self.client.log_batch(self.run_id, metrics=metrics)

    @tracked
    def log_evaluation(self, metrics: dict, schema: dict, inputs: list[str | Path], artifacts: dict[str, list[str | Path]]) -> None:
        """Evaluation metrics (text ones as tags; all of them as metrics/metrics.json), the attribute schema, md5
        params of the inputs (equal to the md5s in dvc.lock) and artifacts by artifact folder (a folder keeps its
        layout inside it)."""
        from mlflow.entities import Metric, Param, RunTag

        now = int(time.time() * 1000)
        self.client.log_batch(
            self.run_id,
            metrics=[Metric(key, value, now, 0) for key, value in _numbers(metrics).items()],
            params=[Param(f"md5.{path}", io.file_digest(path, "md5")) for path in _files(inputs)],
            tags=[RunTag(key, value) for key, value in metrics.items() if isinstance(value, str)],
        )
        self.client.log_dict(self.run_id, schema, "schema.json")
        self.client.log_dict(self.run_id, metrics, "metrics/metrics.json")
        for folder, paths in artifacts.items():
            for path in map(Path, paths):
                if path.is_dir():
                    self.client.log_artifacts(self.run_id, str(path), folder)
                else:
                    self.client.log_artifact(self.run_id, str(path), folder)

    def close(self) -> None:
        """End the run: the last stage, `evaluate`, calls it when done."""
        if self.run_id is not None:
            self.state_file.unlink(missing_ok=True)  # even if MLflow cannot be told, the next execution opens a new run
            self._finish()

    @tracked
    def _finish(self) -> None:
        self.client.set_terminated(self.run_id, "FINISHED")


def join(stage: str, params: dict) -> PipelineRun:
    """The pipeline's run, for a stage that logs to it (the execution's first such stage opens it). Call it before
    the stage's work, so that an unreachable server fails the stage at once."""
    run = PipelineRun(stage, params)
    run._join()
    return run


def run_stage(main: Callable[[], None]) -> None:
    """io.run_stage; in addition, when the stage fails, the run in its experiment's state file (`--experiment` on
    the command line) is marked FAILED (KILLED on Ctrl-C) rather than left RUNNING, whether or not this stage logs
    to it. Every experiment stage's `__main__` calls this."""

    def tracked_main() -> None:
        try:
            main()
        except BaseException as e:
            with contextlib.suppress(Exception):  # the stage's own error is the one to report
                end_carried_run(_experiment_argument(), "KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED")
            raise

    io.run_stage(tracked_main)


def _experiment_argument() -> str | None:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--experiment")
    return parser.parse_known_args()[0].experiment


def end_carried_run(experiment: str | None, status: str) -> None:
    """End the run named in the experiment's state file with `status`, and forget it. The file exists until
    `evaluate` is done, so its run belongs to the execution that failed (even if model logging marked it FINISHED)."""
    path = state_file(experiment) if experiment else None
    state = _read_state(path) if path else None
    if state is not None:
        path.unlink()
        connect(state["uri"]).set_terminated(state["run_id"], status)


def _read_state(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):  # none, or torn by a crash: either way there is no run to resume
        return None


def _fingerprint(params: dict) -> str:
    return hashlib.md5(json.dumps([params, _git("rev-parse", "HEAD")], sort_keys=True, default=str).encode()).hexdigest()


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def _run_tags(params: dict) -> dict[str, str]:
    tags = {
        "mlflow.source.git.commit": _git("rev-parse", "HEAD"),
        "git.dirty": str(_dirty()).lower(),
        "dvc.experiment": os.environ.get("DVC_EXP_NAME"),  # set by `dvc exp run`
        "dvc.baseline_rev": os.environ.get("DVC_EXP_BASELINE_REV"),
        "device": str(io.resolve_device(params.get("device", "auto"))),
        "backbone.kind": params.get("backbone", {}).get("kind"),
        "dataset": params.get("dataset", {}).get("name"),
    }
    return {key: value for key, value in tags.items() if value}


def _dirty() -> bool:
    """Uncommitted changes to tracked files, other than those the pipeline writes itself (dvc.lock and the stage
    outputs git tracks, such as metrics/): the stages that ran before this one have changed those already."""
    changed = set(_git("diff", "--name-only", "HEAD").splitlines())
    try:
        stages = yaml.safe_load(Path("dvc.yaml").read_text())["stages"].values()
    except (OSError, KeyError, TypeError, yaml.YAMLError):  # a stage run outside a DVC workspace
        stages = []
    written = ["dvc.lock"]
    for stage in stages:
        stage = stage.get("do", stage)  # a foreach stage's template
        for out in stage.get("outs", []) + stage.get("metrics", []) + stage.get("plots", []):
            path = next(iter(out)) if isinstance(out, dict) else out  # `path` or `{path: options}`
            written.append(re.sub(r"\$\{[^}]*\}", "*", path))  # metrics/${key}/metrics.json -> metrics/*/metrics.json
    return any(not any(fnmatch.fnmatch(path, pattern) or path.startswith(pattern.rstrip("/") + "/") for pattern in written) for path in changed)


def _flatten(tree: dict, prefix: str = "") -> dict[str, str]:
    """{"flow": {"lr": 0.001}} -> {"flow.lr": "0.001"}; lists stay whole, as JSON."""
    out: dict[str, str] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out |= _flatten(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value if isinstance(value, str) else json.dumps(value)
    return out


def _numbers(row: dict[str, Any]) -> dict[str, float]:
    """The finite numbers of a row: NaN means "not measured" here, and the REST API cannot carry it."""
    return {key: float(value) for key, value in row.items() if isinstance(value, numbers.Real) and math.isfinite(value)}


def _files(paths: list[str | Path]) -> list[Path]:
    """Files, with folders expanded to the files inside them (but not hidden ones, such as DVC's .gitignore)."""
    return [f for p in map(Path, paths) for f in (sorted(x for x in p.rglob("[!.]*") if x.is_file()) if p.is_dir() else [p])]
