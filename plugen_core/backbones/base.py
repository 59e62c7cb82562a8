"""The backbone interface every generative model implements (VAE here; a GAN and a molecule VAE later).

Stages only move opaque arrays: `preprocess` turns stored data into model input and `postprocess`
turns model output back into the stored format, so nothing outside a backbone assumes images.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np
import torch
from torch import nn

from plugen_core.images import from_uint8, to_uint8
from plugen_core.io import PlugenInputError, inference_batch, load_checkpoint, save_checkpoint
from plugen_core.resume import TrainingState


class Backbone(nn.Module, ABC):
    kind: str = ""
    has_encoder: bool = False
    decodes: bool = True  # False: decode is the identity (latent space only), so there is nothing to reconstruct

    def __init__(self, latent_dim: int):
        super().__init__()
        self.latent_dim = latent_dim

    @abstractmethod
    def config(self) -> dict:
        """Constructor kwargs, stored with the weights."""

    @abstractmethod
    def decode(self, w: torch.Tensor) -> torch.Tensor:
        """Latent codes -> model-space data."""

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Model-space data -> latent codes (a VAE's posterior mean)."""
        raise NotImplementedError(f"backbone '{self.kind}' has no encoder")

    def sample_prior(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randn(n, self.latent_dim, generator=generator)

    @abstractmethod
    def preprocess(self, raw: np.ndarray) -> torch.Tensor:
        """Stored data (e.g. uint8 images) -> model input."""

    @abstractmethod
    def postprocess(self, x: torch.Tensor) -> np.ndarray:
        """Model output -> stored data format."""

    @abstractmethod
    def fit(
        self, data: np.ndarray, epochs: int, batch_size: int, lr: float, device: torch.device, generator: torch.Generator, state: TrainingState | None = None
    ) -> list[dict]:
        """Pre-train on unlabelled data; returns one dict of metrics per epoch. `state`: where the loop saves each
        epoch and resumes from (plugen_core/resume.py)."""

    @property
    def device(self) -> torch.device:
        tensor = next(self.parameters(), None)
        return tensor.device if tensor is not None else torch.device("cpu")

    def inference_batch(self) -> int:
        """Rows per pass of encode_data / decode_data (io.inference_batch: small on a CPU)."""
        return inference_batch(self.device)

    @torch.no_grad()
    def encode_data(self, raw: np.ndarray, batch_size: int | None = None) -> torch.Tensor:
        """Stored data -> latents (on CPU), in batches."""
        device = self.device
        batch_size = batch_size or self.inference_batch()
        return torch.cat([self.encode(self.preprocess(raw[s : s + batch_size]).to(device)).cpu() for s in range(0, len(raw), batch_size)])

    @torch.no_grad()
    def decode_data(self, w: torch.Tensor, batch_size: int | None = None) -> np.ndarray:
        """Latents -> stored data format, in batches."""
        device = self.device
        batch_size = batch_size or self.inference_batch()
        return np.concatenate([self.postprocess(self.decode(w[s : s + batch_size].to(device))) for s in range(0, len(w), batch_size)])

    def save(self, path: str | Path, trained: dict | None = None) -> None:
        """`trained`: how it was trained (seconds, device, threads), for its model card."""
        save_checkpoint({"kind": self.kind, "config": self.config(), "state_dict": self.state_dict(), "trained": trained or {}}, path)


class ImageBackbone(Backbone):
    """A backbone of uint8 (N, H, W, C) images whose side is a power of two >= 16: `n_scales` halvings take it to the
    4x4 feature map its networks start or end at."""

    def __init__(self, latent_dim: int, image_size: int, channels: int, width: int):
        super().__init__(latent_dim)
        self.image_size, self.channels, self.width = image_size, channels, width
        self.n_scales = int(math.log2(image_size)) - 2
        if 2 ** (self.n_scales + 2) != image_size or self.n_scales < 2:
            raise ValueError(f"image_size must be a power of two >= 16, got {image_size}")

    def preprocess(self, raw: np.ndarray) -> torch.Tensor:
        return from_uint8(raw)

    def postprocess(self, x: torch.Tensor) -> np.ndarray:
        return to_uint8(x)


def load_backbone(path: str | Path, registry: dict[str, type[Backbone]], expected: dict) -> Backbone:
    """The backbone stored at `path`, built as `expected` (the params' backbone section, which the user trusts) says.
    A checkpoint is data: what to build, and for an imported backbone which factory to import and call, comes from
    the params; a file whose kind or settings disagree with them is refused before anything is built."""
    ckpt = load_checkpoint(path, ("kind", "config", "state_dict"))
    kind, stored = expected.get("kind"), ckpt["config"]
    if ckpt["kind"] != kind:
        raise PlugenInputError(f"{path}: holds a backbone of kind {ckpt['kind']!r}, but the params ask for {kind!r}")
    if kind not in registry:
        raise PlugenInputError(f"backbone.kind '{kind}' is unknown (known: {sorted(registry)})")
    if not isinstance(stored, dict):
        raise PlugenInputError(f"{path}: its config must be a mapping, got {type(stored).__name__}")
    if kind == "import":  # built from the params' factory and config only: the file's must be the same
        wanted = {"factory": expected.get("factory"), "config": expected.get("config") or {}}
        compared = set(stored) | set(wanted)
    else:  # built from the file's config: the keys the params also set must agree
        wanted, compared = expected, set(stored) & set(expected)
    clash = sorted(k for k in compared if wanted.get(k) != stored.get(k))
    if clash:
        detail = ", ".join(f"{k}: params {wanted.get(k)!r} vs file {stored.get(k)!r}" for k in clash)
        raise PlugenInputError(f"{path}: the stored backbone does not match the params ({detail})")
    model = registry[kind](**(wanted if kind == "import" else stored))
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        raise PlugenInputError(f"{path}: weights do not match the stored backbone config ({e})") from e
    return model.eval()
