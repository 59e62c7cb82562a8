"""Tracking logic against a real MLflow SQLite store, without the pipeline: where runs are recorded, how one run is
carried from stage to stage, what ends it, and what an unreachable server does. The end-to-end runs are in
tests/test_registry.py."""
import math
import re
import socket
import subprocess
import sys

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
    """Params whose runs go to `store`, in an experiment of their own, with the state file under tmp_path."""
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


def test_one_run_spans_the_stages_and_evaluate_ends_it(params, store):
    first = tracking.join("backbone", params)
    state = tracking.state_file(params["tracking"]["experiment"])
    assert state.is_file()
    second = tracking.join("train_flow", params)
    assert second.run_id == first.run_id
    run = MlflowClient(store).get_run(first.run_id)
    assert run.data.tags["plugen.stages"] == "backbone,train_flow"
    assert run.data.params["tracking.experiment"] == params["tracking"]["experiment"] and run.data.params["seed"] == "0"
    tracking.join("evaluate", params).close()
    assert status(store, first.run_id) == "FINISHED" and not state.exists()
    assert tracking.join("train_flow", params).run_id != first.run_id  # the next execution: a new run


@pytest.mark.parametrize("change", ["same stage again", "params changed", "run ended elsewhere"])
def test_a_stale_file_does_not_hijack_the_next_execution(params, store, change):
    stale = tracking.join("train_flow", params)
    stage = "train_flow" if change == "same stage again" else "evaluate"
    if change == "params changed":
        params["flow"] = {"epochs": 3}
    if change == "run ended elsewhere":
        MlflowClient(store).set_terminated(stale.run_id, "FINISHED")
    fresh = tracking.join(stage, params)
    assert fresh.run_id != stale.run_id
    assert status(store, stale.run_id) == ("FINISHED" if change == "run ended elsewhere" else "KILLED")  # never left RUNNING
    assert status(store, fresh.run_id) == "RUNNING"


def test_a_failing_stage_marks_the_run_failed(params, store, capsys, monkeypatch):
    run = tracking.join("backbone", params)
    other = tracking.join("backbone", params | {"tracking": params["tracking"] | {"experiment": "another-experiment"}})
    monkeypatch.setattr(sys, "argv", ["stage", "--experiment", params["tracking"]["experiment"]])

    def failing_stage():  # a later stage, one that does not log to the run (extract_latents, say)
        raise PlugenInputError("models/backbone.pt: corrupt or unreadable checkpoint")

    with pytest.raises(SystemExit) as exit_:
        tracking.run_stage(failing_stage)
    assert exit_.value.code == 2 and "models/backbone.pt: corrupt" in capsys.readouterr().err
    assert status(store, run.run_id) == "FAILED" and not tracking.state_file(params["tracking"]["experiment"]).exists()
    assert status(store, other.run_id) == "RUNNING"  # another experiment's run is not this stage's


def test_unreachable_server_fails_the_stage_naming_the_uri_unless_optional(params, monkeypatch, capsys):
    uri = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    with pytest.raises(PlugenInputError, match=re.escape(uri)):
        tracking.join("backbone", params)
    params["tracking"]["optional"] = True
    run = tracking.join("backbone", params)
    assert uri in capsys.readouterr().err and not run.active
    run.log_history("backbone", [{"epoch": 1, "loss": 1.0}])  # no-ops from here on
    run.close()


def test_tracking_off_touches_nothing(params, tmp_path):
    params["tracking"]["uri"] = "off"
    run = tracking.join("backbone", params)
    run.log_history("backbone", [{"epoch": 1, "loss": 1.0}])
    run.close()
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
