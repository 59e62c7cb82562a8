import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

# Tiny params: the shapes-vae pipeline in about a minute on 2 CPU cores, its VAE trained from scratch (the judge is the
# shipped one). Repository copies keep only the SMOKE_EXPERIMENTS of params.yaml, so that runs of the whole pipeline
# stay within the test budget.
SMOKE_EXPERIMENTS = ("shapes-vae",)
SMOKE_PARAMS = {
    "datasets.shapes.n_train": 2000,
    "datasets.shapes.n_test": 400,
    "datasets.shapes.labelled.count": 200,
    "experiments.shapes-vae.backbone.pretrained": None,  # the from-scratch path: the shipped VAE is not trained here
    "experiments.shapes-vae.backbone.epochs": 2,
    "judge.epochs": 1,
    "flow.epochs": 3,
    "evaluate.n_generation": 50,
    "evaluate.n_manipulation": 30,
    "evaluate.n_fid": 200,
    "evaluate.kid_subset_size": 50,
}


def set_params(path: Path, overrides: dict) -> None:
    params = yaml.safe_load(path.read_text())
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = params
        for p in parents:
            node = node[p]
        node[leaf] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def copy_repo(dest: Path, experiments: tuple[str, ...] = SMOKE_EXPERIMENTS) -> Path:
    """This checkout's files (committed or not; ignored ones left out) as a fresh git repository (DVC experiments need
    commits), with only `experiments` (and their datasets) left in params.yaml, each on the shared `flow:` settings."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    for f in files:
        if (REPO / f).is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / f, dest / f)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    params["experiments"] = {name: params["experiments"][name] for name in experiments}
    used = {e["dataset"] for e in params["experiments"].values()}
    params["datasets"] = {name: entry for name, entry in params["datasets"].items() if name in used}
    for experiment in params["experiments"].values():
        experiment.pop("flow", None)  # the shared `flow:` section, which the tests shrink, applies to every experiment
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@localhost"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "copy"]):
        subprocess.run(git + args, cwd=dest, check=True)
    return dest


def dvc(repo: Path, *args: str) -> str:
    """Run DVC in `repo` with this interpreter's environment first on PATH (stages call `python`), recording into the
    repository's own MLflow store (whatever an in-process test set MLFLOW_TRACKING_URI to)."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    result = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.fixture(autouse=True, scope="module")
def no_leaked_tracking_uri():
    """mlflow.set_tracking_uri also writes MLFLOW_TRACKING_URI into os.environ: whatever a module's tests set there is
    undone after it, or a later module's pipelines (subprocesses inheriting the environment) record into its store."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before


@pytest.fixture
def repo_copy(tmp_path) -> Path:
    """A fresh git repository of this checkout with smoke params committed."""
    dest = tmp_path / "repo"
    dest.mkdir()
    copy_repo(dest)
    set_params(dest / "params.yaml", SMOKE_PARAMS)
    subprocess.run(["git", "-c", "user.name=test", "-c", "user.email=test@localhost", "commit", "-qam", "smoke"], cwd=dest, check=True)
    return dest


def stop_group(proc: subprocess.Popen, first: int = signal.SIGINT, grace: float = 30) -> None:
    """Signal a process started with start_new_session (its whole group), then SIGKILL it if it lingers."""
    for sig, wait in ((first, grace), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(wait)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue
