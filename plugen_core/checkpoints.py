"""Shipped pre-trained checkpoints: the weights as safetensors (plain tensors, never code) and a model card beside them
(`<name>.card.yaml`) saying what they are (kind, config), how they were made (data, seed, command, commit, time,
hardware) and how good they are. Loading checks the file's sha256 against its card, so a corrupt or swapped file is
refused by name, and against the params' pin where they give one (`pretrained_sha256`): zoo/ is a DVC project of its
own, so the main pipeline's DVC cannot see a file there change, but it sees the pin change, and reruns what depends on
it. The pretraining pipeline in zoo/ writes both (plugen_core/stages/publish.py)."""
from __future__ import annotations

from pathlib import Path

import torch
import yaml

from plugen_core.io import PlugenInputError, atomic_path, file_digest, require_file

REQUIRED = ("kind", "config", "sha256")


def card_path(weights: str | Path) -> Path:
    weights = Path(weights)
    return weights.with_name(weights.name.removesuffix(".safetensors") + ".card.yaml")


def sha256(path: str | Path) -> str:
    return file_digest(path, "sha256")


def read_card(weights: str | Path) -> dict:
    path = require_file(card_path(weights), "model card")
    try:
        card = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise PlugenInputError(f"{path}: not valid YAML ({e})") from e
    missing = [k for k in REQUIRED if not isinstance(card, dict) or k not in card]
    if missing:
        raise PlugenInputError(f"{path}: model card lacks {missing}")
    return card


def load_verified(weights: str | Path, kind: str, pinned: str | None = None, pin_key: str = "pretrained_sha256") -> tuple[dict[str, torch.Tensor], dict]:
    """The tensors of a shipped checkpoint and its card, once the file's sha256 matches the card (and `pinned`, the
    params' `pin_key`, where given) and the card says it holds `kind` (which the caller's own config names: a
    checkpoint never chooses what to build)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    weights = require_file(weights, "checkpoint")
    card = read_card(weights)
    actual = sha256(weights)
    if actual != card["sha256"]:
        raise PlugenInputError(
            f"{weights}: sha256 {actual} differs from {card['sha256']}, the one its card {card_path(weights)} expects: the file "
            "is corrupt or was swapped; restore it (git checkout) or reproduce it (cd zoo && dvc repro)"
        )
    if pinned is not None and actual != pinned:
        raise PlugenInputError(
            f"{weights}: sha256 {actual} is not {pinned}, the one the params pin ({pin_key}): another checkpoint was shipped "
            "there; set the params' pin to its card's sha256, so that DVC reruns what the new weights change"
        )
    if card["kind"] != kind:
        raise PlugenInputError(f"{weights}: its card says it holds a '{card['kind']}', but the params ask for a '{kind}'")
    try:
        return load_file(weights), card
    except (SafetensorError, OSError) as e:
        raise PlugenInputError(f"{weights}: unreadable safetensors file ({e})") from e


def check_config(card: dict, wanted: dict, weights: str | Path) -> dict:
    """The card's config, once every key the params also give agrees with it."""
    clash = {k: (wanted[k], card["config"][k]) for k in wanted if k in card["config"] and wanted[k] != card["config"][k]}
    if clash:
        detail = ", ".join(f"{k}: params {a!r} vs checkpoint {b!r}" for k, (a, b) in clash.items())
        raise PlugenInputError(f"{weights}: incompatible config ({detail}); drop those keys or train from scratch")
    return dict(card["config"])


def write(weights: str | Path, state_dict: dict[str, torch.Tensor], card: dict) -> dict:
    """Write the weights as safetensors and their card (with the file's sha256 and size added); returns the card."""
    from safetensors.torch import save_file

    weights = Path(weights)
    with atomic_path(weights) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in state_dict.items()}, str(tmp))
        card = {**card, "sha256": sha256(tmp), "size_bytes": tmp.stat().st_size}
    with atomic_path(card_path(weights)) as tmp:
        tmp.write_text(yaml.safe_dump(card, sort_keys=False))
    return card
