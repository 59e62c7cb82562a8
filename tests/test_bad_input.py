"""Bad input ends a stage with a message that names the problem, and leaves no output behind."""
import json
import re
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from plugen_core.datasets.labels import infer_spec, select_labelled
from plugen_core.io import PlugenInputError, run_stage
from plugen_core.stages import align_labels, evaluate, train_flow

SPEC = [
    {"name": "shape", "kind": "categorical", "classes": ["circle", "square"]},
    {"name": "size", "kind": "continuous", "low": 1.0, "high": 3.0},
    {"name": "hollow", "kind": "binary"},
]


SHAPES = "source: shapes, input: x, image_size: 32, n_train: 4, n_test: 2, size_range: [5, 10], x_range: [10, 22], y_jitter: 0"  # required keys
PARAMS = f"""seed: 0
device: cpu
datasets: {{d: {{{SHAPES}, labelled: {{held_out: []}}}}}}
experiments: {{e: {{dataset: d, backbone: {{kind: vae}}}}}}
flow: {{}}
evaluate: {{n_generation: 10, n_manipulation: 10, n_fid: 10, kid_subset_size: 5, temperature: 0.5, style_temperature: 1.0, continuous_tolerance: 0.1}}
"""


@pytest.fixture
def inputs(tmp_path, monkeypatch):
    """An experiment `e` on a dataset `d`, laid out as the stages before align_labels leave it."""
    monkeypatch.chdir(tmp_path)
    n = 6
    (tmp_path / "latents/e").mkdir(parents=True)
    (tmp_path / "data/d").mkdir(parents=True)
    (tmp_path / "params.yaml").write_text(PARAMS)
    np.save(tmp_path / "latents/e/latents.npy", np.random.default_rng(0).normal(size=(n, 4)).astype(np.float32))
    pd.DataFrame({"id": range(n), "split": ["train"] * n}).to_parquet(tmp_path / "latents/e/index.parquet")
    pd.DataFrame({"id": [0, 1, 2], "shape": ["circle", "square", "circle"], "size": [1.0, 2.0, 3.0], "hollow": [0, 1, -1]}).to_parquet(
        tmp_path / "data/d/labelled.parquet"
    )
    (tmp_path / "data/d/attributes.json").write_text(json.dumps(SPEC))
    return tmp_path


def run(module, argv, monkeypatch, capsys) -> str:
    monkeypatch.setattr(sys, "argv", ["stage", *argv])
    with pytest.raises(SystemExit) as exc:
        run_stage(module.main)
    assert exc.value.code == 2
    return capsys.readouterr().err


def test_valid_input_is_aligned(inputs, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["stage", "--experiment", "e"])
    align_labels.main()
    table = pd.read_parquet(inputs / "aligned/e/table.parquet")
    assert table["labelled"].sum() == 3 and table["shape"].isna().sum() == 3
    assert table.loc[2, "hollow"] == -1  # original units kept; the schema encodes -1 as 0


@pytest.mark.parametrize(
    "break_it, message",
    [
        (lambda d: _edit_labels(d, lambda df: df.rename(columns={"hollow": "holow"})), "unknown attribute column(s) ['holow']"),
        (lambda d: _edit_labels(d, lambda df: df.assign(shape=["circle", "hexagon", "circle"])), "'shape' has value(s) ['hexagon'] outside its classes"),
        (lambda d: _edit_labels(d, lambda df: df.assign(hollow=[0, 1, 2])), "binary attribute 'hollow' has value(s) ['2']"),
        (lambda d: _edit_labels(d, lambda df: df.assign(size=["1", "big", "3"])), "'size' has non-numeric value(s) ['big']"),
        (lambda d: np.save(d / "latents/e/latents.npy", np.zeros((5, 4), np.float32)), "latents have 5 rows but the index has 6"),
        (lambda d: np.save(d / "latents/e/latents.npy", np.array([[0, 0, 0, 0]] * 3 + [[0, np.nan, 0, 0]] * 3, np.float32)), "3 row(s) hold NaN or inf, first at row 3"),
        (lambda d: (d / "data/d/labelled.parquet").unlink(), "labelled.parquet: table file not found"),
        (lambda d: _edit_labels(d, lambda df: df.assign(id=[0, 1, 99])), "1 id(s) match no latent row, e.g. [99]"),
    ],
)
def test_align_labels_rejects(inputs, monkeypatch, capsys, break_it, message):
    break_it(inputs)
    err = run(align_labels, ["--experiment", "e"], monkeypatch, capsys)
    assert message in err
    assert not (inputs / "aligned").exists() or not any((inputs / "aligned").iterdir())


def _edit_labels(d, fn):
    df = pd.read_parquet(d / "data/d/labelled.parquet")
    fn(df).to_parquet(d / "data/d/labelled.parquet")


def test_corrupt_checkpoint_is_named(inputs, monkeypatch, capsys):
    (inputs / "models/e").mkdir(parents=True)
    (inputs / "models/e/backbone.pt").write_bytes(b"not a checkpoint at all")
    err = run(evaluate, ["--experiment", "e"], monkeypatch, capsys)
    assert "models/e/backbone.pt: corrupt or unreadable checkpoint" in err
    assert not (inputs / "metrics").exists()


def test_checkpoint_with_foreign_content_is_refused(inputs, monkeypatch, capsys):
    (inputs / "models/e").mkdir(parents=True)
    torch.save({"something": torch.zeros(2)}, inputs / "models/e/backbone.pt")
    err = run(evaluate, ["--experiment", "e"], monkeypatch, capsys)
    assert "backbone.pt: checkpoint lacks keys ['kind', 'config', 'state_dict']" in err


def test_missing_params_section_is_named(tmp_path, monkeypatch, capsys):
    (tmp_path / "params.yaml").write_text(f"seed: 0\ndevice: cpu\ndatasets: {{d: {{{SHAPES}}}}}\nexperiments: {{e: {{dataset: d, backbone: {{kind: vae}}}}}}\n")
    err = run(train_flow, ["--params", str(tmp_path / "params.yaml"), "--experiment", "e"], monkeypatch, capsys)
    assert "section 'flow' is missing" in err


@pytest.mark.parametrize(
    "experiment, message",
    [
        ("nope", "experiment 'nope' is not listed under experiments (known: ['e'])"),
        ("typo", "experiments.typo has unknown key(s) ['flwo']"),
        ("lost", "dataset 'gone' is not listed under datasets (known: ['d'])"),
    ],
)
def test_experiment_entries_are_checked_up_front(inputs, monkeypatch, capsys, experiment, message):
    (inputs / "params.yaml").write_text(PARAMS.replace("experiments: {", "experiments: {typo: {dataset: d, backbone: {kind: vae}, flwo: {}}, lost: {dataset: gone, backbone: {kind: vae}}, "))
    if experiment == "nope":
        (inputs / "params.yaml").write_text(PARAMS)
    assert message in run(train_flow, ["--experiment", experiment], monkeypatch, capsys)


def test_params_read_dvc_style_exponents_as_floats(tmp_path):
    from plugen_core.io import load_params

    (tmp_path / "params.yaml").write_text("flow:\n  lr: 1e-05\n  sigma0: 7.0E+1\n  name: e5\n  version: '1e3'\n")
    flow = load_params(tmp_path / "params.yaml")["flow"]
    assert flow == {"lr": 1e-05, "sigma0": 70.0, "name": "e5", "version": "1e3"}


@pytest.mark.parametrize(
    "setting, message",
    [
        ("n_generation: 10", "evaluate.n_generation must be an integer, got None"),  # removed below: missing
        ("n_fid: 1", "evaluate.n_fid must be > 1, got 1"),
        ("temperature: hot", "evaluate.temperature must be a finite number, got 'hot'"),
        ("continuous_tolerance: 0", "evaluate.continuous_tolerance must be in (0, 1], got 0"),
    ],
)
def test_evaluate_settings_are_checked_before_any_work(inputs, monkeypatch, capsys, setting, message):
    name = setting.split(":")[0]
    broken = setting if name != "n_generation" else ""
    params = (inputs / "params.yaml").read_text()
    start = params.index(f"{name}: ")
    end = min(i for i in (params.find(",", start), params.find("}", start)) if i > 0)
    (inputs / "params.yaml").write_text(params[:start] + broken + params[end:] if broken else params[:start] + params[end + 2:])
    assert message in run(evaluate, ["--experiment", "e"], monkeypatch, capsys)  # no model or judge exists: checked first
    assert not (inputs / "metrics").exists() and not (inputs / "plots").exists()


@pytest.mark.parametrize(
    "rules, message",
    [
        ({"count": 0}, "labelled.count must be a whole number >= 1"),
        ({"count": "all"}, "labelled.count must be a whole number >= 1"),
        ({"count": None, "held_out": [{"shape": "circle"}, {"shape": "square"}]}, "no labelled training row is left once the held_out combinations"),
    ],
)
def test_a_labelled_subset_that_would_be_empty_is_refused(rules, message):
    labels = pd.DataFrame({"id": range(4), "split": ["train"] * 4, "shape": ["circle", "square"] * 2})
    with pytest.raises(PlugenInputError, match=re.escape(message)):
        select_labelled(labels, rules, np.random.default_rng(0))


@pytest.mark.parametrize(
    "column, message",
    [
        ([f"{i:06d}.jpg" for i in range(200)], "column 'c' has a different value in every row ('000000.jpg', '000001.jpg', ...): an id"),
        ([1, -1] * 99 + [2, 1], "column 'c' is binary but for value 2 in row 198"),
    ],
)
def test_a_label_column_is_never_guessed(column, message):
    with pytest.raises(PlugenInputError, match=re.escape(message)):
        infer_spec(pd.DataFrame({"c": column}), ["c"], "attributes.csv")


def test_a_continuous_column_with_few_values_stays_continuous():
    _, spec = infer_spec(pd.DataFrame({"c": [0, 1, 2] * 50}), ["c"], "attributes.csv")
    assert spec == [{"name": "c", "kind": "continuous", "low": 0.0, "high": 2.0}]


def test_outputs_are_readable_by_whoever_can_read_the_repository(tmp_path):
    """Temp files are private (0600) until renamed: outputs must get the user's umask modes, as DVC's do."""
    import os

    from plugen_core.io import atomic_dir, write_json

    old = os.umask(0o022)
    try:
        write_json({"a": 1}, tmp_path / "out.json")
        with atomic_dir(tmp_path / "plots") as folder:
            (folder / "x.png").write_bytes(b"")
    finally:
        os.umask(old)
    assert (tmp_path / "out.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "plots").stat().st_mode & 0o777 == 0o755
