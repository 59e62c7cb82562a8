"""The speed benchmark compares like with like: its filed loop's model is today's model, computed the filed way."""
import subprocess

import pytest
import torch

from benchmarks import filed, run

HISTORY = subprocess.run(["git", "cat-file", "-e", f"{filed.COMMIT}^{{commit}}"], cwd=filed.REPO, capture_output=True).returncode == 0
needs_history = pytest.mark.skipif(not HISTORY, reason=f"the filed loop is read from commit {filed.COMMIT}, absent from this clone")


@needs_history
def test_the_filed_model_computes_todays_density_with_the_same_weights():
    w, context = run.synthetic(64, 32)
    p = {**run.flow_params(), "hidden": 32}
    today = run.new_model(context, 32, p)
    for parameter in today.parameters():  # couplings start as the identity: give them something to compute
        parameter.data = 0.1 * torch.randn_like(parameter)
    reference = filed.model_like(today)
    assert torch.allclose(today.log_prob(w, context), reference.log_prob(w, context), atol=1e-4)
    today.prior.set_sigma(0.3)
    assert not torch.allclose(today.log_prob(w, context), reference.log_prob(w, context), atol=1e-2)  # the check sees sigma


@needs_history
def test_step_section_times_three_loops_and_renders():
    results = {"machine": run.machine(), "step": run.step_section(rounds=1, batches=2) | {"date": "now"}}
    step = results["step"]
    assert set(step["ms"]) == {"today", "filed", "mlp"} and all(ms > 0 for ms in step["ms"].values())
    assert "Today / MLP" in run.markdown(results) and "run now" in run.markdown(results)
