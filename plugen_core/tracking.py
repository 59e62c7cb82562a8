"""MLflow tracking of the DVC pipeline: one MLflow run per evaluation, opened and closed inside the `evaluate` stage.

Data flows forward through DVC only. The training stages never talk to MLflow, so a tracking failure cannot discard
a trained model and no run is left RUNNING by a killed stage: `evaluate`, the last stage of an experiment, opens the
run, logs the experiment's effective settings (plugen_core/config.py, flattened), the per-epoch curves it reads from
the training histories (step = epoch), the metrics, pictures and the model, and ends it, FINISHED, or FAILED (KILLED
on Ctrl-C) if the stage fails, all in one process. An evaluate killed outright (kill -9, a power cut) cannot end its
run: the next evaluate of the experiment on the same machine marks it KILLED (each run records its host and pid).

Where: MLFLOW_TRACKING_URI, else params `tracking.uri`, else sqlite:///<project root>/mlflow/mlflow.db with the
artifacts beside it in mlflow/artifacts/. The project root is the repository DVC runs for (DVC_ROOT), so
`dvc exp run --temp`, which works in .dvc/tmp/exps/..., still records into the project's store.
`tracking.uri: off`, or a params file without a `tracking` section, turns tracking off (whatever
MLFLOW_TRACKING_URI says).
"""
from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import functools
import json
import math
import numbers
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import yaml

from plugen_core import io
from plugen_core.io import PlugenInputError


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
    """The evaluation's handle on its MLflow run (see the module docstring)."""

    def __init__(self, stage: str, params: dict):
        """`params`: an experiment's effective settings (config.experiment), `tracking.experiment` its name."""
        self.stage, self.params = stage, params
        self.uri = tracking_uri(params)
        self.optional = bool(params.get("tracking", {}).get("optional", False))
        self.active = self.uri is not None
        self.client = self.run_id = None

    @tracked
    def open(self) -> None:
        settings = self.params["tracking"]
        for key in ("experiment", "primary_metric", "primary_direction"):
            if not settings.get(key):
                raise PlugenInputError(f"params: tracking.{key} is not set")
        if settings["primary_direction"] not in ("max", "min"):
            raise PlugenInputError(f"params: tracking.primary_direction must be 'max' or 'min', got {settings['primary_direction']!r}")
        self.client = connect(self.uri)
        self.run_id = self._create()
        self._end_orphans()

    def _create(self) -> str:
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

    def _end_orphans(self) -> None:
        """Runs of this experiment left RUNNING by an evaluate on this machine whose process is gone: KILLED."""
        experiment = self.client.get_run(self.run_id).info.experiment_id
        for run in self.client.search_runs([experiment], "attributes.status = 'RUNNING'"):
            tags = run.data.tags
            if tags.get("plugen.host") == socket.gethostname() and "plugen.pid" in tags and not _alive(int(tags["plugen.pid"])):
                self.client.set_terminated(run.info.run_id, "KILLED")
                print(f"[{self.stage}] MLflow run {run.info.run_id} was left RUNNING by a killed evaluate (pid {tags['plugen.pid']}): marked KILLED")

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

    @tracked
    def end(self, status: str) -> None:
        if self.run_id is not None:
            self.client.set_terminated(self.run_id, status)


@contextlib.contextmanager
def pipeline_run(stage: str, params: dict) -> Iterator[PipelineRun]:
    """The evaluation's run, opened before the stage's work (an unreachable server fails the stage at once) and ended
    when it leaves: FINISHED, or FAILED (KILLED on Ctrl-C) with the stage's own error raised."""
    run = PipelineRun(stage, params)
    run.open()
    try:
        yield run
    except BaseException as e:
        with contextlib.suppress(Exception):  # the stage's own error is the one to report
            run.end("KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED")
        raise
    run.end("FINISHED")


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
        "plugen.host": socket.gethostname(),  # with the pid: tells a run whose process was killed from a live one
        "plugen.pid": str(os.getpid()),
    }
    return {key: value for key, value in tags.items() if value}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


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
