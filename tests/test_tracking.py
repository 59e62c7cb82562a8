"""Tracking logic against a real MLflow SQLite store, without the pipeline: where runs are recorded, how the
evaluation's run is opened and ended, that no training stage talks to MLflow, and what an unreachable server does. The end-to-end runs are in
tests/test_registry.py."""
import math
import os
import random
import re
import socket
import subprocess
import sys
import threading

import pytest
from mlflow import MlflowClient

from plugen_core import tracking
from plugen_core.io import PlugenInputError
from plugen_core.pyfunc_model import promote_if_better


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """One SQLite store for the module: creating its tables takes seconds."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"
    tracking.connect(uri)
    return uri


@pytest.fixture
def params(request, store, tmp_path, monkeypatch) -> dict:
    """Params whose runs go to `store`, in an experiment of their own, run from tmp_path."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    experiment = re.sub(r"\W", "-", request.node.name)
    return {"seed": 0, "device": "cpu", "backbone": {"kind": "vae"}, "tracking": {"uri": None, "optional": False, "experiment": experiment, "primary_metric": "acc", "primary_direction": "max"}}


def status(store: str, run_id: str) -> str:
    return MlflowClient(store).get_run(run_id).info.status


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_store_is_the_project_root_even_from_a_dvc_temp_workspace(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    workspace = tmp_path / ".dvc/tmp/exps/standalone/tmpabc"
    workspace.mkdir(parents=True)
    monkeypatch.chdir(workspace)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    assert tracking.project_root() == tmp_path.resolve()
    monkeypatch.setenv("DVC_ROOT", str(tmp_path / "elsewhere"))  # what DVC sets for stage commands
    params = {"tracking": {"uri": None}}
    assert tracking.tracking_uri(params) == f"sqlite:///{tmp_path.resolve() / 'elsewhere/mlflow/mlflow.db'}"


def test_uri_precedence_and_switching_off(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking.tracking_uri({"tracking": {"uri": "http://mlflow.example:5000"}}) == "http://mlflow.example:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking.tracking_uri({"tracking": {"uri": "http://mlflow.example:5000"}}) == "http://127.0.0.1:5000"
    assert tracking.tracking_uri({"tracking": {"uri": False}}) is None  # `uri: off` in YAML
    assert tracking.tracking_uri({"tracking": {"uri": "off"}}) is None
    assert tracking.tracking_uri({"seed": 0}) is None  # no tracking section


def test_dirty_means_changed_sources_not_what_the_pipeline_writes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n  s:\n    cmd: x\n    outs: [out.txt]\n    metrics: [{m.json: {cache: false}}]\n"
        "  t:\n    foreach: [a, b]\n    do:\n      cmd: x\n      plots:\n        - p/${item}/h.csv:\n            cache: false\n"
    )
    (tmp_path / "p/a").mkdir(parents=True)
    for name in ("m.json", "dvc.lock", "code.py", "p/a/h.csv"):
        (tmp_path / name).write_text("1")
    for args in (["init", "-q"], ["add", "-A"], ["-c", "user.name=t", "-c", "user.email=t@localhost", "commit", "-qm", "x"]):
        subprocess.run(["git", *args], check=True)
    for name in ("m.json", "dvc.lock", "p/a/h.csv"):  # what earlier stages of the same execution rewrite
        (tmp_path / name).write_text("2")
    assert not tracking._dirty()
    (tmp_path / "code.py").write_text("2")
    assert tracking._dirty()


def test_the_evaluation_opens_and_ends_its_run_logging_the_curves(params, store):
    with tracking.pipeline_run("evaluate", params) as run:
        assert status(store, run.run_id) == "RUNNING"
        run.log_history("flow", [{"epoch": 1, "nll": 2.0}, {"epoch": 2, "nll": 1.5, "note": "text is skipped"}])
    client = MlflowClient(store)
    recorded = client.get_run(run.run_id)
    assert recorded.info.status == "FINISHED"
    assert recorded.data.params["tracking.experiment"] == params["tracking"]["experiment"] and recorded.data.params["seed"] == "0"
    assert [(m.step, m.value) for m in client.get_metric_history(run.run_id, "flow/nll")] == [(1, 2.0), (2, 1.5)]


@pytest.mark.parametrize("error, ended", [(PlugenInputError("models/plugen.pt: corrupt"), "FAILED"), (KeyboardInterrupt(), "KILLED")])
def test_a_failing_evaluation_ends_its_run_and_raises_its_own_error(params, store, error, ended):
    with pytest.raises(type(error)):
        with tracking.pipeline_run("evaluate", params) as run:
            raise error
    assert status(store, run.run_id) == ended  # never left RUNNING


def test_training_stages_never_import_mlflow():
    """A tracking failure cannot cost a trained model: only `evaluate` talks to MLflow."""
    stages = ["data", "train_judge", "backbone", "extract_latents", "align_labels", "train_flow"]
    code = f"import sys\nfor s in {stages}: __import__('plugen_core.stages.' + s)\nprint(sorted(m for m in sys.modules if m.split('.')[0] in ('mlflow', 'plugen_core.tracking')))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"


def test_unreachable_server_fails_the_stage_naming_the_uri_unless_optional(params, monkeypatch, capsys):
    uri = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    with pytest.raises(PlugenInputError, match=re.escape(uri)):
        with tracking.pipeline_run("evaluate", params):
            pass
    params["tracking"]["optional"] = True
    with tracking.pipeline_run("evaluate", params) as run:
        assert uri in capsys.readouterr().err and not run.active
        run.log_history("flow", [{"epoch": 1, "nll": 1.0}])  # no-ops from here on


def test_tracking_off_touches_nothing(params, tmp_path):
    params["tracking"]["uri"] = "off"
    with tracking.pipeline_run("evaluate", params) as run:
        run.log_history("flow", [{"epoch": 1, "nll": 1.0}])
    assert run.run_id is None and not (tmp_path / "mlflow").exists()


@pytest.mark.parametrize("direction, values, champions", [("max", [0.5, 0.4, 0.6, math.nan], ["1", "1", "3", "3"]), ("min", [math.nan, 0.5, 0.6, 0.4], [None, "2", "2", "4"])])
def test_champion_moves_only_to_a_better_version(store, tmp_path, direction, values, champions):
    client = MlflowClient(store)
    name = f"plugen-champion-{direction}"
    client.create_registered_model(name)
    for value, champion in zip(values, champions):
        version = client.create_model_version(name, tmp_path.as_uri(), tags={"acc": str(value)}).version
        assert promote_if_better(client, name, version, {"acc": value}, "acc", direction) == champion
    with pytest.raises(PlugenInputError, match="tracking.primary_metric 'fid' is not an evaluation metric"):
        promote_if_better(client, name, version, {"acc": 0.9}, "fid", direction)


def test_concurrent_promotions_end_on_the_best_version(store, tmp_path):
    """Evaluations registering and promoting at once (a `dvc queue -j 2`, a Prefect sweep): whatever the order,
    the champion is the best version, in every round."""
    client = MlflowClient(store)
    rng = random.Random(0)
    for round_ in range(20):
        name = f"plugen-concurrent-{round_}"
        client.create_registered_model(name)
        values = [rng.random() for _ in range(3)]
        barrier, errors = threading.Barrier(len(values)), []

        def evaluation(value: float) -> None:
            version = client.create_model_version(name, tmp_path.as_uri(), tags={"acc": str(value)}).version
            barrier.wait()  # every promotion starts together, after every registration
            try:
                promote_if_better(client, name, version, {"acc": value}, "acc", "max")
            except Exception as e:  # a promotion that fails would fail its evaluation
                errors.append(e)

        threads = [threading.Thread(target=evaluation, args=(v,)) for v in values]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        champion = client.get_model_version_by_alias(name, "champion")
        assert not errors and float(champion.tags["acc"]) == max(values), (round_, errors)


def test_a_run_left_running_by_a_killed_evaluate_is_ended_by_the_next_one(params, store):
    """kill -9 leaves no chance to end a run; the experiment's next evaluation on this machine ends it as KILLED,
    while a run whose process is alive (a concurrent evaluation) stays RUNNING."""
    client = MlflowClient(store)
    with tracking.pipeline_run("evaluate", params) as first:
        experiment = client.get_run(first.run_id).info.experiment_id
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True).stdout.strip()
    here = {"plugen.host": socket.gethostname()}
    killed = client.create_run(experiment, tags=here | {"plugen.pid": dead}).info.run_id
    alive = client.create_run(experiment, tags=here | {"plugen.pid": str(os.getpid())}).info.run_id
    elsewhere = client.create_run(experiment, tags={"plugen.host": "another-machine", "plugen.pid": dead}).info.run_id
    with tracking.pipeline_run("evaluate", params):
        pass
    assert [status(store, r) for r in (killed, alive, elsewhere)] == ["KILLED", "RUNNING", "RUNNING"]


def test_a_promotion_written_late_does_not_undo_a_better_one(store, tmp_path):
    """Evaluation A ranks the versions, then evaluation B registers a better version and promotes it before A's alias
    write lands: A must not leave the champion on its stale pick."""
    client = MlflowClient(store)
    name = "plugen-late-promotion"
    client.create_registered_model(name)
    first = client.create_model_version(name, tmp_path.as_uri(), tags={"acc": "0.5"}).version

    class SlowWriter:  # A's client: B runs whole between A's ranking and A's write
        def __init__(self):
            self.raced = False

        def __getattr__(self, attr):
            return getattr(client, attr)

        def set_registered_model_alias(self, *args):
            if not self.raced:
                self.raced = True
                better = client.create_model_version(name, tmp_path.as_uri(), tags={"acc": "0.9"}).version
                assert promote_if_better(client, name, better, {"acc": 0.9}, "acc", "max") == str(better)
            client.set_registered_model_alias(*args)

    assert promote_if_better(SlowWriter(), name, first, {"acc": 0.5}, "acc", "max") == "2"
    assert client.get_model_version_by_alias(name, "champion").tags["acc"] == "0.9"
