"""`kind: none`: no generative model, for bring-your-own latents. Its "data" are the latent codes themselves, so
the plugin trains, generates and edits in latent space and the judge reads latents (a latent-space judge)."""
from __future__ import annotations

import numpy as np
import torch

from plugen_core.backbones.base import Backbone


class LatentSpace(Backbone):
    kind = "none"
    has_encoder = True
    decodes = False  # decode is the identity: there are no reconstructions to judge

    def config(self) -> dict:
        return {"latent_dim": self.latent_dim}

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def decode(self, w: torch.Tensor) -> torch.Tensor:
        return w

    def preprocess(self, raw: np.ndarray) -> torch.Tensor:
        if raw.ndim != 2 or raw.shape[1] != self.latent_dim:
            raise ValueError(f"expected latents of shape (rows, {self.latent_dim}), got {raw.shape}")
        return torch.from_numpy(np.ascontiguousarray(raw, dtype=np.float32))

    def postprocess(self, x: torch.Tensor) -> np.ndarray:
        return x.detach().cpu().numpy().astype(np.float32)

    def fit(self, data, epochs, batch_size, lr, device, generator, state=None) -> list[dict]:
        return []  # nothing to train
