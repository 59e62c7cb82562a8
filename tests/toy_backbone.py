"""A user's own backbone, as docs/bring-your-own.md describes it: a small pre-trained decoder from 8-dim latents
to 32x32 RGB images, with no encoder. The pipeline builds it from `tests.toy_backbone:make` and loads its weights."""
import numpy as np
import torch
from torch import nn


class TinyDecoder(nn.Module):
    def __init__(self, latent_dim: int = 8, image_size: int = 32):
        super().__init__()
        self.latent_dim, self.image_size = latent_dim, image_size
        self.net = nn.Sequential(nn.Linear(latent_dim, 64), nn.Tanh(), nn.Linear(64, 3 * image_size * image_size))

    def decode(self, w: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(w)).view(-1, 3, self.image_size, self.image_size)

    def preprocess(self, raw: np.ndarray) -> torch.Tensor:  # stored uint8 (N, H, W, C) -> float (N, C, H, W)
        return torch.from_numpy(raw).permute(0, 3, 1, 2).float() / 255

    def postprocess(self, x: torch.Tensor) -> np.ndarray:
        return (x.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()


def make(**config) -> TinyDecoder:
    return TinyDecoder(**config)
