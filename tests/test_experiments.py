"""Several experiments in one real `dvc repro`: the GAN (sampled latents labelled by a classifier), a user's backbone
by import path, bring-your-own latents with a CelebA-layout labels file, and an image folder with an attributes CSV."""
import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from plugen_core.evaluation import METRICS_CONTRACT, RECONSTRUCTION_KEYS
from tests.byo import write_images, write_latents, write_toy_weights
from tests.conftest import SMOKE_PARAMS, copy_repo, dvc, set_params

TINY_LABELLER = {"width": 8, "epochs": 2, "batch_size": 64, "lr": 0.003, "augment": 0.0, "threshold": 0.6}


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    repo = copy_repo(tmp_path_factory.mktemp("experiments") / "repo", experiments=("shapes-gan",))
    set_params(repo / "params.yaml", {k: v for k, v in SMOKE_PARAMS.items() if "shapes-vae" not in k})
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["experiments"]["shapes-gan"]["backbone"] |= {"pretrained": None, "epochs": 1, "width": 16}  # from scratch, tiny
    params["experiments"]["shapes-gan"]["labeller"] = TINY_LABELLER
    params["judge"] |= {"epochs": 3, "batch_size": 32}  # the latent judge learns from a few hundred rows
    params["tracking"]["uri"] = "off"  # tests/test_registry.py covers tracking; here it would only add minutes
    params["datasets"]["faces"] = write_latents(repo / "byo/latents") | {"input": "byo/latents", "judge_fraction": 0.3}
    params["datasets"]["folder"] = write_images(repo / "byo/images") | {"input": "byo/images"}
    write_toy_weights(repo / "byo/toy.pt", latent_dim=16)  # at least the 10 attribute coordinates of shapes
    params["experiments"] |= {
        "toy": {"dataset": "shapes", "labeller": TINY_LABELLER,
                "backbone": {"kind": "import", "factory": "tests.toy_backbone:make", "config": {"latent_dim": 16}, "weights": "byo/toy.pt"}},
        "faces-w": {"dataset": "faces", "backbone": {"kind": "none"}, "flow": {"epochs": 40, "batch_size": 128}},
        "faces-w-untrained": {"dataset": "faces", "backbone": {"kind": "none"}, "flow": {"epochs": 0}},  # negative control
        "folder-vae": {"dataset": "folder", "backbone": {"kind": "vae", "latent_dim": 8, "width": 8, "epochs": 2, "batch_size": 16, "lr": 0.002}},
    }
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    dvc(repo, "repro")
    return repo


def metrics(repo, experiment: str) -> dict:
    return json.loads((repo / f"metrics/{experiment}/metrics.json").read_text())


@pytest.mark.slow
def test_every_experiment_writes_its_metrics_and_dvc_shows_them_side_by_side(repo):
    shown = json.loads(dvc(repo, "metrics", "show", "--json"))
    files = {path: "error" not in item for rev in shown.values() for path, item in rev["data"].items()}
    experiments = ("shapes-gan", "toy", "faces-w", "faces-w-untrained", "folder-vae")
    assert {path for path, written in files.items() if written} == {f"metrics/{e}/metrics.json" for e in experiments}
    assert {path for path, written in files.items() if not written} == {f"metrics/{e}/baselines.json" for e in experiments}  # the benchmark's, not run
    # The contract keys each can have: reconstructions need an encoder and a decoder (the VAE), unseen combinations a
    # held-out one, continuous MAE a continuous attribute (faces: CelebA's binary ones only; folder: none held out).
    absent = {
        "shapes-gan": RECONSTRUCTION_KEYS,
        "toy": RECONSTRUCTION_KEYS,
        "faces-w": RECONSTRUCTION_KEYS + ("generation.seen.continuous_mae", "generation.unseen.continuous_mae"),
        "folder-vae": ("generation.unseen.accuracy", "generation.unseen.joint", "generation.seen.continuous_mae", "generation.unseen.continuous_mae"),
    }
    for experiment, keys in absent.items():
        m = metrics(repo, experiment)
        assert [k for k in METRICS_CONTRACT if k not in m] == [k for k in METRICS_CONTRACT if k in keys], experiment
    for experiment in ("shapes-gan", "toy", "faces-w", "folder-vae"):
        assert (repo / f"plots/{experiment}/generation_grid.png").stat().st_size > 1000
        assert (repo / f"plots/{experiment}/traversals").is_dir()
    assert "Data and pipelines are up to date" in dvc(repo, "status", "dvc.yaml")  # the main pipeline (reports/dvc.yaml is run apart)


@pytest.mark.slow
def test_gan_samples_are_labelled_by_the_labeller_under_the_datasets_rules(repo):
    labelling = json.loads((repo / "aligned/shapes-gan/labelling.json").read_text())
    assert labelling["source"].startswith("labeller") and labelling["labelled"] == SMOKE_PARAMS["datasets.shapes.labelled.count"]
    table = pd.read_parquet(repo / "aligned/shapes-gan/table.parquet")
    labelled = table[table["labelled"]]
    assert len(labelled) == labelling["labelled"] and (labelled["split"] == "train").all()
    assert not ((labelled["shape"] == "triangle") & (labelled["colour"] == "blue")).any()  # held out, as for real labels
    generated = np.load(repo / "latents/shapes-gan/generated.npy")
    assert generated.shape == (len(table), 32, 32, 3)


@pytest.mark.slow
def test_the_users_backbone_generates_from_its_own_weights(repo):
    from tests.toy_backbone import make

    decoder = make(latent_dim=16)
    decoder.load_state_dict(torch.load(repo / "byo/toy.pt", weights_only=True))
    latents = torch.from_numpy(np.load(repo / "latents/toy/latents.npy")[:16])
    generated = np.load(repo / "latents/toy/generated.npy")[:16]
    assert latents.shape[1] == 16
    assert np.abs(decoder.postprocess(decoder.decode(latents)).astype(int) - generated).max() <= 1


@pytest.mark.slow
def test_latents_experiment_is_judged_in_latent_space(repo):
    trained, untrained = metrics(repo, "faces-w"), metrics(repo, "faces-w-untrained")
    assert trained["judge.space"] == "latent" and trained["judge.accuracy"] >= 0.8
    # Attributes read off rotated Gaussian latents (tests/byo.py): a working plugin hits most requested combinations,
    # the held-out one (Smiling and Male together) included. The untrained flow, the identity, must fail every bar:
    # it puts the requested labels on coordinates that mean nothing. Measured, trained / untrained: seen joint 0.54 /
    # 0.04 (the judge's own joint ceiling is about 0.63), unseen joint 0.96 / 0.06, manipulation joint 0.59 / 0.06,
    # free classifier 0.88 / 0.47 (chance: 1/8, 1/4, 0.5).
    bars = {"generation.seen.joint": 0.4, "generation.unseen.joint": 0.6, "manipulation.joint": 0.4, "classifier.accuracy": 0.75}
    for key, bar in bars.items():
        assert trained[key] >= bar > untrained[key], (key, trained[key], untrained[key])
