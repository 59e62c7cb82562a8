"""The flows for real, on smoke params, against one Prefect server on loopback (starting one takes
10-20 s, so the module shares it): the `local` deployment run by a process worker, the orchestration
overhead over plain `dvc repro`, a stage failing on purpose, `--push`, and a sweep. Everything runs in
temporary copies of the repository, and no process may outlive the module."""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest
import yaml

from flows.pipeline import apply_params
from plugen_core.evaluation import METRICS_CONTRACT
from tests.conftest import SMOKE_PARAMS, copy_repo, stop_group, dvc

pytestmark = pytest.mark.slow
SMOKE_SETS = [arg for key, value in SMOKE_PARAMS.items() for arg in ("--set", f"{key}={json.dumps(value)}")]  # None: null


def start(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    """A background process in its own process group, so that stopping it stops its children too."""
    with log.open("ab") as out:
        return subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def processes_with(env_entry: str) -> list[int]:
    """Live processes whose environment holds `env_entry`: everything started for this module carries it."""
    pids = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if env_entry.encode() in environ.read_bytes().split(b"\0"):
                pids.append(int(environ.parent.name))
        except OSError:  # gone meanwhile, or not ours to read
            pass
    return pids


def healthy(api: str) -> bool:
    try:
        return httpx.get(f"{api}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@dataclass
class Server:
    env: dict
    api: str
    home: Path

    def prefect(self, *args: str, cwd: Path | None = None, **env: str) -> str:
        result = subprocess.run([sys.executable, "-m", "prefect", *args], cwd=cwd, env=self.env | env, capture_output=True, text=True)
        assert result.returncode == 0, f"prefect {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
        return result.stdout

    def get(self, path: str) -> dict:
        return httpx.get(f"{self.api}{path}").raise_for_status().json()

    def post(self, path: str, body: dict) -> list[dict]:
        return httpx.post(f"{self.api}{path}", json=body).raise_for_status().json()

    def task_runs(self, flow_run_id: str) -> dict[str, dict]:
        runs = self.post("/task_runs/filter", {"flow_runs": {"id": {"any_": [flow_run_id]}}, "limit": 200})
        return {run["name"]: run for run in runs}

    def logs(self, task_run_id: str) -> list[dict]:
        return self.post("/logs/filter", {"logs": {"task_run_id": {"any_": [task_run_id]}}, "sort": "TIMESTAMP_ASC", "limit": 200})


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`prefect server start` on 127.0.0.1 with its own PREFECT_HOME; afterwards, no process of this module may be left."""
    home = tmp_path_factory.mktemp("prefect-home")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    api = f"http://127.0.0.1:{port}/api"
    env = os.environ | {
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_WORKER_QUERY_SECONDS": "1",  # a triggered run starts at once
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),
    }
    proc = start([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)], env, home / "server.log")
    deadline = time.monotonic() + 90
    while not healthy(api):
        assert proc.poll() is None and time.monotonic() < deadline, (home / "server.log").read_text()
        time.sleep(0.5)
    yield Server(env, api, home)
    stop_group(proc)
    deadline = time.monotonic() + 15
    while (left := processes_with(f"PREFECT_HOME={home}")) and time.monotonic() < deadline:
        time.sleep(0.5)
    for pid in left:  # fail, but leave nothing behind
        os.kill(pid, signal.SIGKILL)
    assert not left, f"processes left running: {left}"


@dataclass
class Deployed:
    repo: Path         # where the `local` deployment ran the pipeline
    pristine: Path     # the same copy, untouched, for the direct `dvc repro`
    flow_run: dict
    seconds: float     # `prefect deployment run` to Completed


@pytest.fixture(scope="module")
def deployed(server, tmp_path_factory) -> Deployed:
    """All three deployments created from prefect.yaml; the `local` one run by a process worker on SMOKE_PARAMS."""
    root = tmp_path_factory.mktemp("deployed")
    repo = copy_repo(root / "repo")
    pristine = shutil.copytree(repo, root / "pristine", symlinks=True)
    server.prefect("work-pool", "create", "plugen-local", "--type", "process")
    server.prefect("work-pool", "create", "plugen-gpu-docker", "--type", "docker")
    server.prefect("work-pool", "create", "plugen-gpu-k8s", "--type", "kubernetes", "--base-job-template", "deploy/k8s-gpu-job-template.json", cwd=repo)
    server.prefect("--no-prompt", "deploy", "--all", cwd=repo, PLUGEN_IMAGE="registry.example.com/plugen:test")
    server.prefect("concurrency-limit", "create", "gpu", "1")  # as docs/scale-out.md sets it up
    worker = start([sys.executable, "-m", "prefect", "worker", "start", "--pool", "plugen-local"], server.env, server.home / "worker.log")
    try:
        begin = time.monotonic()
        out = server.prefect("deployment", "run", "plugen-pipeline/local", "--params", json.dumps({"overrides": SMOKE_PARAMS, "device": "cpu"}))
        flow_run_id = re.search(r"UUID: (\S+)", out)[1]
        while (run := server.get(f"/flow_runs/{flow_run_id}"))["state_type"] not in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            assert time.monotonic() - begin < 600, f"flow run still {run['state_name']} after 600 s"
            time.sleep(1)
        seconds = time.monotonic() - begin
    finally:
        stop_group(worker)
    return Deployed(repo, pristine, run, seconds)


def test_local_deployment_runs_the_stages_on_a_worker(deployed, server):
    assert deployed.flow_run["state_name"] == "Completed", (server.home / "worker.log").read_text()[-5000:]
    metrics = json.loads((deployed.repo / "metrics/shapes-vae/metrics.json").read_text())
    assert not [key for key in METRICS_CONTRACT if key not in metrics]
    assert "Data and pipelines are up to date" in dvc(deployed.repo, "status", "dvc.yaml")  # the main pipeline (reports/dvc.yaml is run apart)

    tasks = server.task_runs(deployed.flow_run["id"])
    stages = ["data@shapes", "train_judge@shapes"] + [f"{s}@shapes-vae" for s in ("backbone", "extract_latents", "align_labels", "train_flow", "evaluate")]
    assert all(tasks[s]["state_name"] == "Completed" for s in stages)
    assert {s for s in stages if "gpu" in tasks[s]["tags"]} == {"backbone@shapes-vae", "train_judge@shapes", "train_flow@shapes-vae"}
    assert server.get("/concurrency_limits/tag/gpu")["active_slots"] == []  # under the limit, and every slot given back
    assert tasks["dvc exp save"]["state_name"] == "Completed"
    assert dvc(deployed.repo, "exp", "list", "--name-only").split()  # the overridden run is a DVC experiment

    # The stage's own output reaches the log line by line while it runs, not in one piece at its end.
    backbone = server.logs(tasks["backbone@shapes-vae"]["id"])
    first_epoch = next(log for log in backbone if "[backbone] epoch 1/" in log["message"])
    done = next(log for log in backbone if "[backbone] vae (" in log["message"])
    assert datetime.fromisoformat(done["timestamp"]) - datetime.fromisoformat(first_epoch["timestamp"]) > timedelta(seconds=1)

    for name in ("gpu-docker", "gpu-k8s"):  # accepted by the server against their pools' job templates
        deployment = server.get(f"/deployments/name/plugen-pipeline/{name}")
        assert deployment["job_variables"]["image"] == "registry.example.com/plugen:test"
        assert deployment["pull_steps"] == [{"prefect.deployments.steps.set_working_directory": {"directory": "/opt/plugen"}}]


def test_orchestration_overhead_over_plain_dvc_repro(deployed, server):
    apply_params(deployed.pristine, SMOKE_PARAMS | {"device": "cpu"})
    begin = time.monotonic()
    dvc(deployed.pristine, "repro")
    direct = time.monotonic() - begin
    in_tasks = sum(run["total_run_time"] for run in server.task_runs(deployed.flow_run["id"]).values())
    print(f"\nsmoke pipeline: prefect deployment run {deployed.seconds:.1f}s (flow run {deployed.flow_run['total_run_time']:.1f}s, "
          f"of which tasks {in_tasks:.1f}s), plain dvc repro {direct:.1f}s")
    # The target is 30 s (its measurement is printed and reported); the bound is looser because both runs share
    # a loaded 2-core machine, where stage times alone swing by tens of seconds.
    assert deployed.seconds - direct <= 60


def test_failing_stage_fails_the_run_after_retries_and_keeps_what_succeeded(server, tmp_path):
    repo = copy_repo(tmp_path / "repo")
    cli = subprocess.run(  # python -m flows.pipeline, pointed at the module's server instead of a temporary one
        [sys.executable, "-m", "flows.pipeline", *SMOKE_SETS, "--set", "experiments.shapes-vae.backbone.kind=bogus", "--retries", "1", "--retry-delay", "1"],
        cwd=repo, env=server.env, capture_output=True, text=True,
    )
    assert cli.returncode == 1, cli.stdout + cli.stderr
    assert "backbone.kind 'bogus' is unknown" in cli.stdout + cli.stderr  # the stage's own message, in the log
    summary = re.search(r"flow run (\S+): Failed: stage\(s\) failed: backbone@shapes-vae; not run: (.*)", cli.stdout)
    assert summary[2] == "extract_latents@shapes-vae, align_labels@shapes-vae, train_flow@shapes-vae, evaluate@shapes-vae"
    assert server.get(f"/flow_runs/{summary[1]}")["state_name"] == "Failed"

    tasks = server.task_runs(summary[1])
    assert set(tasks) == {"data@shapes", "backbone@shapes-vae", "train_judge@shapes"}  # nothing downstream of the failure started
    assert (tasks["backbone@shapes-vae"]["state_name"], tasks["backbone@shapes-vae"]["run_count"]) == ("Failed", 2)  # the first try and one retry
    for name in ("data@shapes", "train_judge@shapes"):  # train_judge does not need the backbone: it still ran
        assert (tasks[name]["state_name"], tasks[name]["run_count"]) == ("Completed", 1)
    assert "up to date" in dvc(repo, "status", "data@shapes", "train_judge@shapes")  # their outputs are intact and recorded in dvc.lock


def test_push_needs_a_remote_and_sends_the_outputs_there(server, tmp_path):
    repo = copy_repo(tmp_path / "repo")
    pipeline = [sys.executable, "-m", "flows.pipeline", "--targets", "data@shapes", "--push", *SMOKE_SETS]
    cli = subprocess.run(pipeline, cwd=repo, env=server.env, capture_output=True, text=True)
    assert cli.returncode == 1 and "no default DVC remote; add one with `dvc remote add -d" in cli.stdout + cli.stderr
    assert not (repo / "data/shapes").exists()  # refused before running anything

    dvc(repo, "remote", "add", "-d", "storage", str(tmp_path / "remote"))
    cli = subprocess.run(pipeline, cwd=repo, env=server.env, capture_output=True, text=True)
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert json.loads(dvc(repo, "status", "--cloud", "--json", "data@shapes")) == {}  # the remote holds every output of `data@shapes`


def test_sweep_runs_a_grid_as_dvc_experiments_and_compares_them(deployed, server):
    from prefect.logging.handlers import APILogHandler
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.sweep import sweep

    count = "datasets.shapes.labelled.count"
    tiny_baselines = {"baselines.conditional_flow.epochs": 5, "baselines.lace.steps": 10, "baselines.rejection.max_draws": 1000}
    with temporary_settings({PREFECT_API_URL: server.api}):
        state = sweep(grid={count: [100, 200]}, overrides=SMOKE_PARAMS | tiny_baselines, targets=["evaluate@shapes-vae", "reports/dvc.yaml:baselines@shapes-vae"],
                      device="cpu", repo=str(deployed.repo), retry_delay_s=1, return_state=True)
        table = state.result()
        APILogHandler().flush()  # send the logs while the module's server is up
    assert list(table[count]) == [100, 200]
    assert not [key for key in METRICS_CONTRACT if key not in table.columns]
    assert table["baselines.lace.generation.unseen.joint"].between(0, 1).all()  # the benchmark's target: its metrics too
    # each point drew its own labelled subset: DVC's run cache did not restore one point's data for the other
    refs = subprocess.run(["git", "for-each-ref", "--format=%(refname)", "refs/exps"], cwd=deployed.repo, capture_output=True, text=True, check=True).stdout.split()
    subsets = set()
    for name in table.index:
        (ref,) = [r for r in refs if r.endswith(f"/{name}")]
        lock = yaml.safe_load(subprocess.run(["git", "show", f"{ref}:dvc.lock"], cwd=deployed.repo, capture_output=True, text=True, check=True).stdout)
        subsets |= {out["md5"] for out in lock["stages"]["data@shapes"]["outs"] if out["path"] == "data/shapes/labelled.parquet"}
    assert len(subsets) == 2
    assert set(table.index) <= set(dvc(deployed.repo, "exp", "list", "--name-only").split())
    (artifact,) = server.post("/artifacts/filter", {"artifacts": {"key": {"any_": ["plugen-sweep"]}}})
    assert [row["Experiment"] for row in json.loads(artifact["data"])] == list(table.index)

    # Both experiments hold the `gpu` tag and the server allows one at a time (the `deployed` fixture set the limit).
    first, second = sorted(server.task_runs(str(state.state_details.flow_run_id)).values(), key=lambda run: run["start_time"])
    assert first["end_time"] <= second["start_time"]
