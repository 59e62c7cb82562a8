"""The real DVC pipeline, end to end, on smoke params."""
import json
import time

import pytest

from plugen_core.evaluation import METRICS_CONTRACT
from tests.conftest import dvc, set_params


@pytest.mark.slow
def test_smoke_pipeline_writes_contract_and_reruns_only_what_changed(repo_copy):
    start = time.perf_counter()
    dvc(repo_copy, "repro")
    print(f"smoke dvc repro: {time.perf_counter() - start:.1f}s")  # reported, not asserted: CI machines vary

    metrics = json.loads((repo_copy / "metrics/shapes-vae/metrics.json").read_text())
    assert not [k for k in METRICS_CONTRACT if k not in metrics]
    for key in ("judge.accuracy", "generation.seen.accuracy", "manipulation.success", "manipulation.preservation"):
        assert 0.0 <= metrics[key] <= 1.0
    for name in ("generation_grid", "manipulation_grid", "flow_curves"):
        assert (repo_copy / f"plots/shapes-vae/{name}.png").stat().st_size > 1000

    assert "Data and pipelines are up to date" in dvc(repo_copy, "status")
    set_params(repo_copy / "params.yaml", {"flow.sigma_min": 0.25})
    out = dvc(repo_copy, "repro")  # a dry run cannot know that evaluate follows: train_flow's output is not made yet
    ran = {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}
    assert ran == {"train_flow@shapes-vae", "evaluate@shapes-vae"}
