"""Backbones by kind. One file per swappable component."""
from pathlib import Path

from plugen_core.backbones.base import Backbone, load_backbone as _load
from plugen_core.backbones.vae import ConvVAE

BACKBONES: dict[str, type[Backbone]] = {ConvVAE.kind: ConvVAE}


def build_backbone(kind: str, **config) -> Backbone:
    from plugen_core.io import PlugenInputError

    if kind not in BACKBONES:
        raise PlugenInputError(f"backbone.kind '{kind}' is unknown (known: {sorted(BACKBONES)})")
    return BACKBONES[kind](**config)


def load_backbone(path: str | Path) -> Backbone:
    return _load(path, BACKBONES)


__all__ = ["Backbone", "BACKBONES", "build_backbone", "load_backbone"]
