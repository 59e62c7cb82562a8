"""Backbones by kind. One file per swappable component."""
from pathlib import Path

from plugen_core.backbones.base import Backbone, load_backbone as _load
from plugen_core.backbones.gan import DCGAN
from plugen_core.backbones.identity import LatentSpace
from plugen_core.backbones.imported import Imported
from plugen_core.backbones.molecule_vae import SelfiesVAE
from plugen_core.backbones.vae import ConvVAE

BACKBONES: dict[str, type[Backbone]] = {cls.kind: cls for cls in (ConvVAE, DCGAN, LatentSpace, Imported, SelfiesVAE)}
TRAINING = ("epochs", "batch_size", "lr")  # how to pre-train, not what to build


def build_backbone(kind: str, **config) -> Backbone:
    from plugen_core.io import PlugenInputError

    if kind not in BACKBONES:
        raise PlugenInputError(f"backbone.kind '{kind}' is unknown (known: {sorted(BACKBONES)})")
    try:
        return BACKBONES[kind](**config)
    except TypeError as e:  # an unknown or missing key in the params' backbone section
        raise PlugenInputError(f"backbone '{kind}': {e}") from e


def load_backbone(path: str | Path, expected: dict) -> Backbone:
    """`expected`: the params' backbone section (base.load_backbone says why)."""
    return _load(path, BACKBONES, expected)


__all__ = ["Backbone", "BACKBONES", "TRAINING", "build_backbone", "load_backbone"]
