"""Bring-your-own latents, image folders and backbones: read as users supply them, and every bad input refused up
front with the file, column or value named and no output left behind."""
import sys

import numpy as np
import pandas as pd
import pytest
import yaml

from plugen_core.datasets.labels import read_labels
from plugen_core.stages import backbone, data
from tests.byo import LATENT_NAMES, write_images, write_latents, write_toy_weights
from tests.test_bad_input import run

JUDGE = {"width": 8, "epochs": 1, "batch_size": 64, "lr": 0.003, "augment": 0.0}


def write_params(root, datasets: dict, experiments: dict | None = None) -> None:
    params = {"seed": 0, "device": "cpu", "datasets": datasets, "judge": JUDGE, "experiments": experiments or {}, "flow": {}, "evaluate": {}}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def run_main(module, argv, monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", ["stage", *argv])
    module.main()


@pytest.fixture
def latents_repo(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    entry = write_latents(tmp_path / "byo/latents")
    entry["input"] = "byo/latents"  # relative to the repository, as in params.yaml
    write_params(tmp_path, {"faces": entry}, {"faces-w": {"dataset": "faces", "backbone": {"kind": "none"}}})
    return tmp_path


def test_celeba_layout_is_read_with_file_names_and_minus_one_as_zero(latents_repo):
    table = read_labels(latents_repo / "byo/latents/list_attr_celeba.txt")
    assert list(table.columns) == ["file", *LATENT_NAMES] and len(table) == 1500
    assert table.loc[0, "file"] == "000001.jpg" and set(table["Smiling"].unique()) == {-1, 1}


def test_latents_dataset_has_splits_binary_labels_and_no_held_out_combination_labelled(latents_repo, monkeypatch):
    run_main(data, ["--dataset", "faces"], monkeypatch)
    samples = np.load(latents_repo / "data/faces/samples.npy")
    labels = pd.read_parquet(latents_repo / "data/faces/labels.parquet")
    labelled = pd.read_parquet(latents_repo / "data/faces/labelled.parquet")
    assert samples.shape == (1500, 16) and np.array_equal(samples, np.load(latents_repo / "byo/latents/latents.npy"))
    assert labels["split"].value_counts().to_dict() == {"train": 1050, "test": 225, "judge": 225}
    assert set(labels["Smiling"].unique()) == {0, 1}  # CelebA's -1 is 0
    assert set(labelled["id"]) <= set(labels.loc[labels["split"] == "train", "id"])
    assert not ((labelled["Smiling"] == 1) & (labelled["Male"] == 1)).any()


def test_image_folder_is_resized_and_rows_without_labels_are_unlabelled(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    entry = write_images(tmp_path / "byo/images", n=12, labelled=9)
    write_params(tmp_path, {"folder": entry})
    run_main(data, ["--dataset", "folder"], monkeypatch)
    samples = np.load(tmp_path / "data/folder/samples.npy")
    labels = pd.read_parquet(tmp_path / "data/folder/labels.parquet")
    assert samples.shape == (12, 32, 32, 3) and samples.dtype == np.uint8
    assert labels["shape"].notna().sum() == 9 and labels.loc[labels["file"] == "img/011.png", "shape"].isna().all()


def edit_celeba(folder, fn):
    path = folder / "list_attr_celeba.txt"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(fn(lines)) + "\n")


@pytest.mark.parametrize(
    "break_it, message",
    [
        (lambda d: (d / "latents.npy").unlink(), "latents.npy: array file not found"),
        (lambda d: (d / "list_attr_celeba.txt").unlink(), "list_attr_celeba.txt: labels file not found"),
        (lambda d: edit_celeba(d, lambda ls: ["1499", *ls[1:-1]]), "list_attr_celeba.txt has 1499 rows but byo/latents/latents.npy has 1500 latents"),
        (lambda d: edit_celeba(d, lambda ls: ls[:2] + ["000001.jpg 1 yes -1"] + ls[3:]), "column 'Male' has non-numeric value(s) ['yes']"),
        (lambda d: edit_celeba(d, lambda ls: ls[:2] + ["000001.jpg 1 -1"] + ls[3:]), "line 3 has 3 fields; expected a file name and 3 values"),
        (lambda d: np.save(d / "latents.npy", np.full((1500, 16), np.nan, np.float32)), "1500 row(s) hold NaN or inf, first at row 0"),
    ],
)
def test_bad_latents_dataset_is_refused(latents_repo, monkeypatch, capsys, break_it, message):
    break_it(latents_repo / "byo/latents")
    assert message in run(data, ["--dataset", "faces"], monkeypatch, capsys)
    assert not (latents_repo / "data").exists()


def test_unknown_attribute_column_is_named(latents_repo, monkeypatch, capsys):
    params = yaml.safe_load((latents_repo / "params.yaml").read_text())
    params["datasets"]["faces"]["attributes"] = ["Smiling", "Bald"]
    (latents_repo / "params.yaml").write_text(yaml.safe_dump(params))
    assert "list_attr_celeba.txt: unknown column(s) ['Bald']" in run(data, ["--dataset", "faces"], monkeypatch, capsys)
    assert not (latents_repo / "data").exists()


def test_image_table_naming_a_missing_image_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    entry = write_images(tmp_path / "byo/images", n=6, labelled=6)
    (tmp_path / "byo/images/img/002.png").unlink()
    write_params(tmp_path, {"folder": entry})
    assert "attributes.csv: 1 row(s) name no image in" in run(data, ["--dataset", "folder"], monkeypatch, capsys)
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize(
    "backbone_params, message",
    [
        ({"kind": "none", "latent_dim": 8}, "the dataset's latents have 16 dimensions but backbone 'none' has latent_dim 8"),
        ({"kind": "import", "factory": "tests.toy_backbone:make", "config": {"latent_dim": 8}, "weights": "toy.pt"}, "the dataset's latents have 16 dimensions but backbone 'import' has latent_dim 8"),
        ({"kind": "import", "factory": "tests.no_such_module:make", "weights": "toy.pt"}, "cannot import module 'tests.no_such_module'"),
        ({"kind": "import", "factory": "tests.toy_backbone:make", "config": {"latent_dim": 16}, "weights": "toy.pt"}, "toy.pt: weights do not fit the module"),
        ({"kind": "import", "factory": "tests.toy_backbone:make", "config": {"latent_dim": 8}, "weights": "missing.pt"}, "missing.pt: checkpoint file not found"),
        ({"kind": "vae"}, "backbone 'vae' needs images, but the dataset holds samples of shape (16,)"),
    ],
)
def test_backbone_that_does_not_fit_is_refused(latents_repo, monkeypatch, capsys, backbone_params, message):
    write_toy_weights(latents_repo / "toy.pt", latent_dim=8)
    run_main(data, ["--dataset", "faces"], monkeypatch)
    params = yaml.safe_load((latents_repo / "params.yaml").read_text())
    params["experiments"]["faces-w"]["backbone"] = backbone_params
    (latents_repo / "params.yaml").write_text(yaml.safe_dump(params))
    assert message in run(backbone, ["--experiment", "faces-w"], monkeypatch, capsys)
    assert not (latents_repo / "models").exists()


def test_supplied_backbone_is_stored_with_its_weights_and_reloads(latents_repo, monkeypatch):
    import torch

    from plugen_core.backbones import load_backbone
    from tests.toy_backbone import make

    write_toy_weights(latents_repo / "toy.pt", latent_dim=16)
    run_main(data, ["--dataset", "faces"], monkeypatch)
    params = yaml.safe_load((latents_repo / "params.yaml").read_text())
    params["experiments"]["faces-w"]["backbone"] = {"kind": "import", "factory": "tests.toy_backbone:make", "config": {"latent_dim": 16}, "weights": "toy.pt"}
    (latents_repo / "params.yaml").write_text(yaml.safe_dump(params))
    run_main(backbone, ["--experiment", "faces-w"], monkeypatch)
    stored = load_backbone(latents_repo / "models/faces-w/backbone.pt", params["experiments"]["faces-w"]["backbone"])
    original = make(latent_dim=16)
    original.load_state_dict(torch.load(latents_repo / "toy.pt", weights_only=True))
    w = torch.randn(4, 16)
    assert not stored.has_encoder and torch.allclose(stored.decode(w), original.decode(w))
