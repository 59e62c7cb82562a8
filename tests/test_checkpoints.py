"""Shipped checkpoints: every one in zoo/checkpoints/ verifies against its card and loads; a corrupt, swapped or
mismatched file is refused with a message naming the file and what is wrong, and nothing is built from it."""
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from plugen_core import checkpoints
from plugen_core.backbones import load_backbone
from plugen_core.backbones.vae import ConvVAE
from plugen_core.io import PlugenInputError
from plugen_core.judge import Judge
from plugen_core.schema import Schema
from plugen_core.stages.backbone import build_for
from plugen_core.stages.train_judge import shipped_judge

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted((REPO / "zoo/checkpoints").glob("*.safetensors"))
IMAGES = np.zeros((2, 32, 32, 3), np.uint8)


@pytest.fixture
def shipped_vae(tmp_path) -> Path:
    torch.manual_seed(0)
    vae = ConvVAE(latent_dim=8, width=8)
    path = tmp_path / "vae.safetensors"
    checkpoints.write(path, vae.state_dict(), {"name": "vae", "kind": "vae", "config": vae.config()})
    return path


@pytest.mark.parametrize("weights", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_checkpoint_verifies_against_its_card(weights):
    card = checkpoints.read_card(weights)
    tensors, _ = checkpoints.load_verified(weights, card["kind"])
    assert card["size_bytes"] == weights.stat().st_size < 12 * 2**20  # a few MB, committed to git (moses-vae: 11.2)
    for key in ("config", "data", "training", "reproduce", "commit", "hardware", "quality", "seed"):
        assert key in card, key
    for name in card["files"].values():
        assert (weights.parent / name).is_file(), name
    if card["kind"] == "judge":
        judge = Judge(Schema.from_dict(card["schema"]), tuple(card["config"]["input_shape"]), card["config"]["width"])
        judge.load_state_dict(tensors)
    else:
        samples = np.array(["CCO", "c1ccccc1"]) if card["kind"] == "selfies-vae" else IMAGES
        build_for({"kind": card["kind"], "pretrained": str(weights)}, samples, "test")


def test_a_shipped_backbone_is_built_with_its_own_weights(shipped_vae, tmp_path):
    model = build_for({"kind": "vae", "pretrained": str(shipped_vae), "epochs": 3}, IMAGES, "test")
    model.save(tmp_path / "backbone.pt")
    reloaded = load_backbone(tmp_path / "backbone.pt", {"kind": "vae", "epochs": 3})
    w = torch.randn(4, 8)
    torch.manual_seed(0)
    original = ConvVAE(latent_dim=8, width=8).eval()  # the weights shipped_vae wrote
    assert torch.allclose(reloaded.decode(w), original.decode(w))


def test_a_tampered_checkpoint_is_refused_naming_file_and_hash(shipped_vae):
    expected = checkpoints.read_card(shipped_vae)["sha256"]
    data = bytearray(shipped_vae.read_bytes())
    data[-1] ^= 1
    shipped_vae.write_bytes(bytes(data))
    with pytest.raises(PlugenInputError, match=f"{shipped_vae}: sha256 [0-9a-f]{{64}} differs from {expected}"):
        build_for({"kind": "vae", "pretrained": str(shipped_vae)}, IMAGES, "test")


def test_a_stale_pin_is_refused(shipped_vae):
    with pytest.raises(PlugenInputError, match=f"{shipped_vae}: sha256 [0-9a-f]{{64}} is not {'0' * 64}, the one the params pin .pretrained_sha256."):
        build_for({"kind": "vae", "pretrained": str(shipped_vae), "pretrained_sha256": "0" * 64}, IMAGES, "test")


def test_the_default_params_pin_every_shipped_checkpoint_they_use():
    """zoo/ is a DVC project of its own, so a checkpoint shipped there reaches `dvc repro` only through its pin."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    entries = [(e["backbone"], "pretrained") for e in params["experiments"].values()] + [(d, "pretrained_judge") for d in params["datasets"].values()]
    pinned = [(entry[key], entry.get(f"{key}_sha256")) for entry, key in entries if entry.get(key)]
    assert pinned
    for weights, pin in pinned:
        assert pin == checkpoints.read_card(REPO / weights)["sha256"], f"params pin {pin} for {weights}: set it to its card's sha256"


def test_a_swapped_checkpoint_is_refused(shipped_vae, tmp_path):
    other = tmp_path / "other.safetensors"
    checkpoints.write(other, ConvVAE(latent_dim=8, width=8).state_dict(), {"name": "other", "kind": "vae", "config": {}})
    shipped_vae.write_bytes(other.read_bytes())  # the right card, another file's weights
    with pytest.raises(PlugenInputError, match="is corrupt or was swapped"):
        checkpoints.load_verified(shipped_vae, "vae")


@pytest.mark.parametrize(
    "params, message",
    [
        ({"kind": "gan"}, "its card says it holds a 'vae', but the params ask for a 'gan'"),
        ({"kind": "vae", "latent_dim": 16}, "incompatible config (latent_dim: params 16 vs checkpoint 8)"),
        ({"kind": "vae", "pretrained": "missing.safetensors"}, "missing.safetensors: checkpoint file not found"),
    ],
)
def test_a_mismatched_checkpoint_is_refused(shipped_vae, params, message):
    with pytest.raises(PlugenInputError, match=f".*{message.replace('(', '.').replace(')', '.')}"):
        build_for({"pretrained": str(shipped_vae)} | params, IMAGES, "test")


def test_a_card_that_is_missing_or_broken_is_named(shipped_vae):
    card = checkpoints.card_path(shipped_vae)
    card.write_text(yaml.safe_dump({"kind": "vae"}))
    with pytest.raises(PlugenInputError, match=r"model card lacks \['config', 'sha256'\]"):
        checkpoints.load_verified(shipped_vae, "vae")
    card.unlink()
    with pytest.raises(PlugenInputError, match="vae.card.yaml: model card file not found"):
        checkpoints.load_verified(shipped_vae, "vae")


def test_a_shipped_judge_must_know_the_datasets_attributes(tmp_path):
    schema = Schema.from_dict({"attributes": [{"name": "hollow", "kind": "binary"}]})
    judge = Judge(schema, (32, 32, 3), width=4)
    path = tmp_path / "judge.safetensors"
    checkpoints.write(path, judge.state_dict(), {"kind": "judge", "config": {"input_shape": [32, 32, 3], "width": 4}, "schema": schema.to_dict()})
    assert isinstance(shipped_judge(str(path), schema, (32, 32, 3)), Judge)
    other = Schema.from_dict({"attributes": [{"name": "smiling", "kind": "binary"}]})
    with pytest.raises(PlugenInputError, match="the judge was trained on other attributes"):
        shipped_judge(str(path), other, (32, 32, 3))


CRAFTED = {"kind": "import", "config": {"factory": "subprocess:getoutput", "config": {"cmd": "touch PWNED"}}, "state_dict": {}}


@pytest.mark.parametrize(
    "params, message",
    [
        ({"kind": "vae"}, "holds a backbone of kind 'import', but the params ask for 'vae'"),
        ({"kind": "import", "factory": "tests.toy_backbone:make", "config": {"latent_dim": 16}}, "does not match the params (config: params {'latent_dim': 16} vs file {'cmd': 'touch PWNED'}, factory: params 'tests.toy_backbone:make' vs file 'subprocess:getoutput')"),
    ],
)
def test_a_checkpoint_naming_code_to_run_runs_nothing(tmp_path, monkeypatch, params, message):
    """A plain-dict backbone.pt (which weights_only loading accepts) naming a factory: what to import comes from the
    params only, so the file is refused and nothing runs."""
    monkeypatch.chdir(tmp_path)
    torch.save(CRAFTED, tmp_path / "backbone.pt")
    with pytest.raises(PlugenInputError) as e:
        load_backbone(tmp_path / "backbone.pt", params)
    assert message in str(e.value) and not (tmp_path / "PWNED").exists()


def test_a_backbone_whose_config_disagrees_with_the_params_is_refused(tmp_path):
    ConvVAE(latent_dim=8, width=8).save(tmp_path / "backbone.pt")
    with pytest.raises(PlugenInputError, match=r"latent_dim: params 16 vs file 8"):
        load_backbone(tmp_path / "backbone.pt", {"kind": "vae", "latent_dim": 16})


def test_the_same_checkpoint_saved_twice_is_the_same_bytes(tmp_path):
    """DVC compares outputs by md5: an unchanged model must not look changed (the archive is not named after the
    random temp file it is written through)."""
    from plugen_core.io import save_checkpoint

    state = {"state_dict": {"w": torch.arange(6.0)}, "config": {"a": 1}}
    save_checkpoint(state, tmp_path / "a.pt")
    save_checkpoint(state, tmp_path / "b.pt")
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()
