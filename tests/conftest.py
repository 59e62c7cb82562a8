import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

# Tiny params: the whole pipeline in about a minute on 2 CPU cores.
SMOKE_PARAMS = {
    "data.n_train": 2000,
    "data.n_test": 400,
    "data.labelled.size": 200,
    "backbone.epochs": 2,
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


@pytest.fixture
def repo_copy(tmp_path) -> Path:
    """The committed-or-staged files of this repo in a fresh git repository, with smoke params."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    dest = tmp_path / "repo"
    for f in files:
        if (REPO / f).is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / f, dest / f)
    set_params(dest / "params.yaml", SMOKE_PARAMS)
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@localhost"]
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    subprocess.run(git + ["add", "-A"], cwd=dest, check=True)
    subprocess.run(git + ["commit", "-qm", "smoke"], cwd=dest, check=True)
    return dest
