"""The pipeline, tracked for real: one smoke `dvc repro` against an MLflow server on loopback (shared by the module),
then what it recorded, the registered champion generating and being served over REST, a DVC experiment in a temp
workspace recording into the project's own store, and a stage facing an unreachable server."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import requests
import yaml
from mlflow import MlflowClient

from plugen_core import config
from plugen_core.judge import Judge
from plugen_core.pyfunc_model import decode_images
from plugen_core.tracking import _flatten
from tests.conftest import SMOKE_PARAMS, copy_repo, stop_group, set_params
from tests.test_tracking import free_port

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
MODEL = "plugen-shapes-vae"
# The smoke flow (3 epochs) is barely above chance; ten epochs at a higher rate make it weak but real.
FLOW_PARAMS = {"flow.epochs": 10, "flow.lr": 0.01, "flow.grad_clip": 100.0, "flow.hidden": 128, "flow.sigma0": 0.5, "flow.sigma_min": 0.3}


def run(args: list[str], cwd: Path, env: dict[str, str | None] | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """A command with this interpreter's bin first on PATH (stage commands say `python`); env None values unset a variable."""
    full = os.environ | {"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "TQDM_DISABLE": "1"} | (env or {})
    full = {key: value for key, value in full.items() if value is not None}
    result = subprocess.run(args, cwd=cwd, env=full, capture_output=True, text=True)
    assert not check or result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def start(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    """A background process in its own process group, so that stopping it stops its workers too."""
    with log.open("ab") as out:
        return subprocess.Popen(args, env=os.environ | env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def wait_until_up(url: str, proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"{proc.args[:3]} exited:\n{log.read_text()[-3000:]}"
        try:
            if requests.get(url, timeout=2).ok:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{url} did not answer in {timeout}s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`mlflow server` on loopback with a temporary SQLite store, serving artifacts as a shared server would."""
    home = tmp_path_factory.mktemp("mlflow-server")
    port, log = free_port(), home / "server.log"
    proc = start(
        [str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{home / 'mlflow.db'}", "--artifacts-destination", str(home / "artifacts"),
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        log, {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},  # its background job workers would compete for the CPU
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{uri}/health", proc, log)
        yield uri
    finally:
        stop_group(proc, signal.SIGTERM, 5)


@dataclass
class Pipeline:
    repo: Path
    commit: str  # what the run ran from
    uri: str


@pytest.fixture(scope="module")
def pipeline(server, tmp_path_factory) -> Pipeline:
    """The smoke pipeline reproduced once against the server; outputs committed afterwards, so that an experiment
    started from this commit reruns only what it changes."""
    repo = copy_repo(tmp_path_factory.mktemp("pipeline"))
    set_params(repo / "params.yaml", SMOKE_PARAMS | FLOW_PARAMS)
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@localhost"]
    run(git + ["commit", "-qam", "smoke"], repo)
    commit = run(["git", "rev-parse", "HEAD"], repo).stdout.strip()
    run([sys.executable, "-m", "dvc", "repro"], repo, {"MLFLOW_TRACKING_URI": server})
    for args in (["add", "-A"], ["commit", "-qm", "outputs"]):
        run(git + args, repo)
    return Pipeline(repo, commit, server)


def test_the_run_holds_params_tags_metrics_artifacts_and_a_model_version(pipeline, tmp_path):
    client = MlflowClient(pipeline.uri)
    (recorded,) = client.search_runs([client.get_experiment_by_name("shapes-vae").experiment_id])
    run_id, tags = recorded.info.run_id, recorded.data.tags
    assert recorded.info.status == "FINISHED"
    assert (tags["mlflow.source.git.commit"], tags["git.dirty"], tags["device"], tags["backbone.kind"], tags["dataset"]) == (pipeline.commit, "false", "cpu", "vae", "shapes")

    params = yaml.safe_load((pipeline.repo / "params.yaml").read_text())
    assert {k: v for k, v in recorded.data.params.items() if not k.startswith("md5.")} == _flatten(config.experiment(params, "shapes-vae"))
    lock = yaml.safe_load((pipeline.repo / "dvc.lock").read_text())["stages"]
    for out in lock["data@shapes"]["outs"] + [o for o in lock["backbone@shapes-vae"]["outs"] if o["path"] == "models/shapes-vae/backbone.pt"]:
        assert recorded.data.params[f"md5.{out['path']}"] == out["md5"]  # the same hashes as DVC's

    metrics = json.loads((pipeline.repo / "metrics/shapes-vae/metrics.json").read_text())
    logged = {k: v for k, v in recorded.data.metrics.items() if not k.startswith(("backbone/", "flow/"))}  # not the curves
    numbers = {k: v for k, v in metrics.items() if not isinstance(v, str)}
    assert set(logged) == set(numbers), set(logged) ^ set(numbers)
    assert logged == pytest.approx(numbers)
    for key, epochs in [("backbone/loss", SMOKE_PARAMS["experiments.shapes-vae.backbone.epochs"]), ("flow/nll", FLOW_PARAMS["flow.epochs"]), ("flow/sigma", FLOW_PARAMS["flow.epochs"])]:
        assert [m.step for m in client.get_metric_history(run_id, key)] == list(range(1, epochs + 1)), key

    assert {a.path for a in client.list_artifacts(run_id)} == {"metrics", "plots", "schema.json"}
    assert {a.path for a in client.list_artifacts(run_id, "plots")} == {f"plots/{n}.png" for n in ("generation_grid", "manipulation_grid", "flow_curves")} | {"plots/traversals"}
    assert {a.path for a in client.list_artifacts(run_id, "metrics")} == {"metrics/metrics.json", "metrics/flow_history.csv"}
    schema = Path(client.download_artifacts(run_id, "schema.json", str(tmp_path)))
    assert json.loads(schema.read_text()) == json.loads((pipeline.repo / "aligned/shapes-vae/schema.json").read_text())

    champion = client.get_model_version_by_alias(MODEL, "champion")
    assert (str(champion.version), champion.run_id) == ("1", run_id)
    assert champion.tags["generation.unseen.accuracy"] == str(metrics["generation.unseen.accuracy"])
    assert not (pipeline.repo / "mlflow/mlflow.db").exists()


def test_the_champion_generates_the_requested_attributes(pipeline):
    mlflow.set_tracking_uri(pipeline.uri)
    model = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
    requested = pd.DataFrame({"light_background": np.repeat([0.0, 1.0], 100), "shape": ["triangle"] * 200})
    out = model.predict(requested, params={"seed": 0})
    assert (out["light_background"] == requested["light_background"]).all() and (out["shape"] == "triangle").all()
    assert out.drop(columns="image_png").notna().all().all()  # the unrequested attributes filled in
    images = decode_images(out)
    assert images.shape == (200, 32, 32, 3)
    # The shipped judge reads every attribute off real images; chance is 0.5, and this weak plugin (on a VAE trained two
    # smoke epochs, which keeps little but the background) gets most of the backgrounds it is asked for right.
    judged = Judge.load(pipeline.repo / "models/judges/shapes.pt").predict(images)
    assert (judged["light_background"] == requested["light_background"]).mean() >= 0.8
    # the negative control: the same images against a shuffled request, near chance
    shuffled = requested["light_background"].sample(frac=1, random_state=0).to_numpy()
    assert (judged["light_background"] == shuffled).mean() < 0.65


def test_the_champion_is_served_over_rest(pipeline, tmp_path):
    port, log = free_port(), tmp_path / "serve.log"
    proc = start(
        [str(BIN / "mlflow"), "models", "serve", "-m", f"models:/{MODEL}@champion", "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
        log, {"MLFLOW_TRACKING_URI": pipeline.uri},
    )
    try:
        wait_until_up(f"http://127.0.0.1:{port}/ping", proc, log)
        request = {"dataframe_split": {"columns": ["shape", "colour", "size"], "data": [["triangle", "blue", 7.5], [None, "red", None]]}, "params": {"seed": 0}}
        response = requests.post(f"http://127.0.0.1:{port}/invocations", json=request, timeout=60)
        assert response.status_code == 200, response.text
        out = pd.DataFrame(response.json()["predictions"])
        assert list(out["colour"]) == ["blue", "red"] and out.loc[0, "shape"] == "triangle" and out.loc[0, "size"] == pytest.approx(7.5)
        assert decode_images(out).shape == (2, 32, 32, 3)
    finally:
        stop_group(proc, signal.SIGTERM, 5)


def test_plugen_runs_prints_each_run_with_its_metrics(pipeline):
    out = run([sys.executable, "-m", "plugen_core.cli", "runs"], pipeline.repo, {"MLFLOW_TRACKING_URI": pipeline.uri}).stdout
    assert "== shapes-vae" in out
    client = MlflowClient(pipeline.uri)
    (recorded,) = client.search_runs([client.get_experiment_by_name("shapes-vae").experiment_id])
    assert recorded.info.run_id[:8] in out and "v1@champion" in out and "generation.unseen.accuracy" in out


def test_a_dvc_temp_experiment_records_into_the_project_store(pipeline):
    run([sys.executable, "-m", "dvc", "exp", "run", "--temp", "-n", "cold", "-S", "evaluate.temperature=0.0"], pipeline.repo, {"MLFLOW_TRACKING_URI": None})
    store = pipeline.repo / "mlflow"
    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    (recorded,) = client.search_runs([client.get_experiment_by_name("shapes-vae").experiment_id])
    assert recorded.info.status == "FINISHED" and recorded.info.run_name == "cold" and recorded.data.tags["dvc.experiment"] == "cold"
    assert recorded.data.params["evaluate.temperature"] == "0.0" and recorded.data.tags["git.dirty"] == "true"  # -S edits params.yaml
    assert recorded.info.artifact_uri.startswith(store.as_uri())  # not in the temp workspace, which DVC deletes
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == "1"


def test_an_unreachable_server_costs_no_training_and_fails_evaluate_naming_it_unless_optional(pipeline, tmp_path):
    dead = f"http://127.0.0.1:{free_port()}"
    params = yaml.safe_load((pipeline.repo / "params.yaml").read_text())
    params["flow"]["epochs"] = 1
    for folder in ("data", "models", "latents", "aligned", "metrics"):  # a workspace of its own: the module's stays as it was
        shutil.copytree(pipeline.repo / folder, tmp_path / folder)
    env = {"MLFLOW_TRACKING_URI": dead, "PYTHONPATH": str(pipeline.repo)}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    run([sys.executable, "-m", "plugen_core.stages.train_flow", "--experiment", "shapes-vae"], tmp_path, env)  # never asks MLflow
    metrics = tmp_path / "metrics/shapes-vae/metrics.json"
    metrics.unlink()
    for optional in (False, True):
        params["tracking"]["optional"] = optional
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
        result = run([sys.executable, "-m", "plugen_core.stages.evaluate", "--experiment", "shapes-vae"], tmp_path, env, check=False)
        assert dead in result.stderr
        assert result.returncode == (0 if optional else 2), result.stderr
        assert metrics.exists() == optional


def test_a_mistyped_primary_metric_fails_evaluate_before_any_output_or_version(pipeline, tmp_path):
    for folder in ("data", "models", "latents", "aligned", "metrics", "plots"):  # a workspace of its own
        shutil.copytree(pipeline.repo / folder, tmp_path / folder)
    params = yaml.safe_load((pipeline.repo / "params.yaml").read_text())
    params["tracking"]["primary_metric"] = "generation.unseen.jiont"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    before = {p: p.read_bytes() for p in (tmp_path / "metrics").rglob("*") if p.is_file()} | {p: p.read_bytes() for p in (tmp_path / "plots").rglob("*") if p.is_file()}
    client = MlflowClient(pipeline.uri)
    versions = len(client.search_model_versions(f"name = '{MODEL}'"))
    stage = [sys.executable, "-m", "plugen_core.stages.evaluate", "--experiment", "shapes-vae"]
    result = run(stage, tmp_path, {"MLFLOW_TRACKING_URI": pipeline.uri, "PYTHONPATH": str(pipeline.repo)}, check=False)
    assert result.returncode == 2 and "tracking.primary_metric 'generation.unseen.jiont' is not a metric this evaluation writes" in result.stderr
    after = {p: p.read_bytes() for p in (tmp_path / "metrics").rglob("*") if p.is_file()} | {p: p.read_bytes() for p in (tmp_path / "plots").rglob("*") if p.is_file()}
    assert after == before and len(client.search_model_versions(f"name = '{MODEL}'")) == versions
