"""The judge: a small CNN that reads every attribute off an image. Trained on real labelled images of
every combination, never on generated ones; its penultimate layer doubles as the FID/KID feature space."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from plugen_core.images import from_uint8, gaussian_blur
from plugen_core.io import load_checkpoint, save_checkpoint
from plugen_core.schema import Schema

FEATURES = 128


class Judge(nn.Module):
    def __init__(self, schema: Schema, channels: int = 3, width: int = 32):
        super().__init__()
        self.schema = schema
        self.channels, self.width = channels, width
        convs: list[nn.Module] = []
        for c_in, c_out in [(channels, width), (width, 2 * width), (2 * width, 4 * width)]:
            convs += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(), nn.MaxPool2d(2)]
        self.trunk = nn.Sequential(*convs, nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(4 * width * 16, FEATURES), nn.ReLU())
        self.head = nn.Linear(FEATURES, schema.n_coords)
        self.num_features = FEATURES  # read by torchmetrics when the judge is its feature extractor

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))

    def loss(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        out = self(x)
        total = x.new_zeros(())
        for a in self.schema.attributes:
            sl = self.schema.slices[a.name]
            if a.kind == "categorical":
                total = total + F.cross_entropy(out[:, sl], target[:, sl].argmax(dim=1))
            elif a.kind == "binary":
                total = total + F.binary_cross_entropy_with_logits(out[:, sl], target[:, sl])
            else:  # normalised to [-1, 1]; weighted so a few % of the range costs as much as a wrong class
                total = total + 10 * F.mse_loss(out[:, sl], target[:, sl])
        return total

    @torch.no_grad()
    def predict(self, images: np.ndarray | torch.Tensor, batch_size: int = 512) -> pd.DataFrame:
        """Attribute values in the schema's own units (class names, 0/1, continuous values)."""
        self.eval()
        device = next(self.parameters()).device
        outs = []
        for start in range(0, len(images), batch_size):
            x = images[start : start + batch_size]
            x = from_uint8(x) if isinstance(x, np.ndarray) else x
            outs.append(self(x.to(device)).cpu())
        out = torch.cat(outs).numpy()
        for a in self.schema.attributes:  # logits -> the 1/0 coding that Schema.decode reads
            if a.kind == "binary":
                sl = self.schema.slices[a.name]
                out[:, sl] = (out[:, sl] > 0).astype(np.float32)
        return self.schema.decode(out)

    def fit(self, images: np.ndarray, labels: pd.DataFrame, epochs: int, batch_size: int, lr: float, augment: float, device, generator) -> list[dict]:
        """`augment`: fraction of each batch given mild blur and noise, so decoded images are judged fairly."""
        target = torch.from_numpy(self.schema.encode(labels[self.schema.names]))
        self.to(device).train()
        opt = torch.optim.Adam(self.parameters(), lr=lr)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * math.ceil(len(images) / batch_size))
        history = []
        for epoch in range(epochs):
            perm = torch.randperm(len(images), generator=generator).numpy()
            total = 0.0
            for start in tqdm(range(0, len(images), batch_size), desc=f"judge epoch {epoch + 1}/{epochs}", leave=False):
                idx = perm[start : start + batch_size]
                x = from_uint8(images[idx])
                n_aug = int(round(augment * len(x)))
                if n_aug:
                    sigma = 0.3 + 0.9 * torch.rand(n_aug, generator=generator)
                    noise = 0.03 * torch.rand(n_aug, 1, 1, 1, generator=generator) * torch.randn(x[:n_aug].shape, generator=generator)
                    x[:n_aug] = (gaussian_blur(x[:n_aug], sigma) + noise).clamp(0, 1)
                loss = self.loss(x.to(device), target[idx].to(device))
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                total += loss.item() * len(idx)
            history.append({"epoch": epoch + 1, "loss": total / len(images)})
            print(f"[judge] epoch {epoch + 1}/{epochs} loss {history[-1]['loss']:.4f}", flush=True)
        return history

    def save(self, path) -> None:
        save_checkpoint({"schema": self.schema.to_dict(), "channels": self.channels, "width": self.width, "state_dict": self.state_dict()}, path)

    @classmethod
    def load(cls, path) -> "Judge":
        ckpt = load_checkpoint(path, ("schema", "channels", "width", "state_dict"))
        judge = cls(Schema.from_dict(ckpt["schema"]), channels=ckpt["channels"], width=ckpt["width"])
        judge.load_state_dict(ckpt["state_dict"])
        return judge.eval()
