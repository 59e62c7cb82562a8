"""Image array conventions: stored as uint8 (N, H, W, C); models take float (N, C, H, W) in [0, 1]."""
from __future__ import annotations

import numpy as np
import torch


def from_uint8(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0


def to_uint8(x: torch.Tensor) -> np.ndarray:
    return (x.detach().clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per-image Gaussian blur (sigma per row of x), 5x5 kernel; used for judge augmentation."""
    r = torch.arange(-2, 3, dtype=x.dtype, device=x.device)
    k1 = torch.exp(-(r[None] ** 2) / (2 * sigma[:, None] ** 2))
    k1 = k1 / k1.sum(dim=1, keepdim=True)
    k2 = k1[:, :, None] * k1[:, None, :]  # (N, 5, 5)
    n, c, h, w = x.shape
    weight = k2.repeat_interleave(c, dim=0)[:, None]  # one kernel per (image, channel)
    out = torch.nn.functional.conv2d(torch.nn.functional.pad(x.reshape(1, n * c, h, w), (2, 2, 2, 2), mode="replicate"), weight, groups=n * c)
    return out.reshape(n, c, h, w)
