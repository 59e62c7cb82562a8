"""Bad input ends a stage with a message that names the problem, and leaves no output behind."""
import json
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from plugen_core.io import run_stage
from plugen_core.stages import align_labels, evaluate, train_flow

SPEC = [
    {"name": "shape", "kind": "categorical", "classes": ["circle", "square"]},
    {"name": "size", "kind": "continuous", "low": 1.0, "high": 3.0},
    {"name": "hollow", "kind": "binary"},
]


@pytest.fixture
def inputs(tmp_path):
    n = 6
    (tmp_path / "latents").mkdir()
    np.save(tmp_path / "latents/latents.npy", np.random.default_rng(0).normal(size=(n, 4)).astype(np.float32))
    pd.DataFrame({"id": range(n), "split": ["train"] * n}).to_parquet(tmp_path / "latents/index.parquet")
    pd.DataFrame({"id": [0, 1, 2], "shape": ["circle", "square", "circle"], "size": [1.0, 2.0, 3.0], "hollow": [0, 1, -1]}).to_csv(
        tmp_path / "labelled.csv", index=False
    )
    (tmp_path / "attributes.json").write_text(json.dumps(SPEC))
    return tmp_path


def run(module, argv, monkeypatch, capsys) -> str:
    monkeypatch.setattr(sys, "argv", ["stage", *argv])
    with pytest.raises(SystemExit) as exc:
        run_stage(module.main)
    assert exc.value.code == 2
    return capsys.readouterr().err


def align_argv(d):
    return ["--latents", str(d / "latents"), "--labelled", str(d / "labelled.csv"), "--attributes", str(d / "attributes.json"), "--out", str(d / "aligned")]


def test_valid_input_is_aligned(inputs, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["stage", *align_argv(inputs)])
    align_labels.main()
    table = pd.read_parquet(inputs / "aligned/table.parquet")
    assert table["labelled"].sum() == 3 and table["shape"].isna().sum() == 3
    assert table.loc[2, "hollow"] == -1  # original units kept; the schema encodes -1 as 0


@pytest.mark.parametrize(
    "break_it, message",
    [
        (lambda d: _edit_labels(d, lambda df: df.rename(columns={"hollow": "holow"})), "unknown attribute column(s) ['holow']"),
        (lambda d: _edit_labels(d, lambda df: df.assign(shape=["circle", "hexagon", "circle"])), "'shape' has value(s) ['hexagon'] outside its classes"),
        (lambda d: _edit_labels(d, lambda df: df.assign(hollow=[0, 1, 2])), "binary attribute 'hollow' has value(s) ['2']"),
        (lambda d: _edit_labels(d, lambda df: df.assign(size=["1", "big", "3"])), "'size' has non-numeric value(s) ['big']"),
        (lambda d: np.save(d / "latents/latents.npy", np.zeros((5, 4), np.float32)), "latents have 5 rows but the index has 6"),
        (lambda d: np.save(d / "latents/latents.npy", np.array([[0, 0, 0, 0]] * 3 + [[0, np.nan, 0, 0]] * 3, np.float32)), "3 row(s) hold NaN or inf, first at row 3"),
        (lambda d: (d / "labelled.csv").unlink(), "labelled.csv: table file not found"),
        (lambda d: _edit_labels(d, lambda df: df.assign(id=[0, 1, 99])), "1 id(s) match no latent row, e.g. [99]"),
    ],
)
def test_align_labels_rejects(inputs, monkeypatch, capsys, break_it, message):
    break_it(inputs)
    err = run(align_labels, align_argv(inputs), monkeypatch, capsys)
    assert message in err
    assert not (inputs / "aligned").exists() or not any((inputs / "aligned").iterdir())


def _edit_labels(d, fn):
    df = pd.read_csv(d / "labelled.csv")
    fn(df).to_csv(d / "labelled.csv", index=False)


def test_corrupt_checkpoint_is_named(inputs, monkeypatch, capsys, tmp_path):
    ckpt = tmp_path / "plugen.pt"
    ckpt.write_bytes(b"not a checkpoint at all")
    (tmp_path / "params.yaml").write_text("seed: 0\ndevice: cpu\ndata: {labelled: {held_out: []}}\nevaluate: {}\n")
    argv = ["--params", str(tmp_path / "params.yaml"), "--plugen", str(ckpt), "--backbone", str(ckpt), "--metrics", str(tmp_path / "m.json")]
    err = run(evaluate, argv, monkeypatch, capsys)
    assert "plugen.pt: corrupt or unreadable checkpoint" in err
    assert not (tmp_path / "m.json").exists()


def test_checkpoint_with_foreign_content_is_refused(tmp_path, monkeypatch, capsys):
    torch.save({"something": torch.zeros(2)}, tmp_path / "backbone.pt")
    (tmp_path / "params.yaml").write_text("seed: 0\ndevice: cpu\ndata: {labelled: {held_out: []}}\nevaluate: {}\n")
    err = run(evaluate, ["--params", str(tmp_path / "params.yaml"), "--backbone", str(tmp_path / "backbone.pt")], monkeypatch, capsys)
    assert "backbone.pt: checkpoint lacks keys ['kind', 'config', 'state_dict']" in err


def test_missing_params_section_is_named(tmp_path, monkeypatch, capsys):
    (tmp_path / "params.yaml").write_text("seed: 0\ndevice: cpu\n")
    err = run(train_flow, ["--params", str(tmp_path / "params.yaml")], monkeypatch, capsys)
    assert "section 'flow' is missing" in err


def test_params_read_dvc_style_exponents_as_floats(tmp_path):
    from plugen_core.io import load_params

    (tmp_path / "params.yaml").write_text("flow:\n  lr: 1e-05\n  sigma0: 7.0E+1\n  name: e5\n  version: '1e3'\n")
    flow = load_params(tmp_path / "params.yaml")["flow"]
    assert flow == {"lr": 1e-05, "sigma0": 70.0, "name": "e5", "version": "1e3"}
