"""The judge: a small network that reads every attribute off a sample, a CNN for images and an MLP for latent
vectors (bring-your-own latents: a latent-space judge). Trained on real labelled data of every combination, never on
generated samples; its penultimate layer doubles as the FID/KID feature space. The same class, trained on the
plugin's labelled subset only, is the labeller of backbones without an encoder (plugen_core/labelling.py). Molecules
are judged by RDKit instead (`PropertyJudge`): it computes their properties exactly."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from plugen_core import resume
from plugen_core.images import from_uint8, gaussian_blur
from plugen_core.io import PlugenInputError, inference_batch, load_checkpoint, save_checkpoint
from plugen_core.schema import Schema

FEATURES = 128


class Judge(nn.Module):
    def __init__(self, schema: Schema, input_shape: tuple[int, ...] = (32, 32, 3), width: int = 32):
        super().__init__()
        self.schema = schema
        self.input_shape, self.width = tuple(input_shape), width
        self.images = len(self.input_shape) == 3  # (H, W, C) uint8 images; otherwise (dim,) float vectors
        if self.images:
            convs: list[nn.Module] = []
            for c_in, c_out in [(self.input_shape[2], width), (width, 2 * width), (2 * width, 4 * width)]:
                convs += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(), nn.MaxPool2d(2)]
            self.trunk = nn.Sequential(*convs, nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(4 * width * 16, FEATURES), nn.ReLU())
        elif len(self.input_shape) == 1:
            hidden = 8 * width
            self.trunk = nn.Sequential(nn.BatchNorm1d(self.input_shape[0]), nn.Linear(self.input_shape[0], hidden), nn.ReLU(), nn.Dropout(0.1), nn.Linear(hidden, FEATURES), nn.ReLU())
        else:
            raise PlugenInputError(f"judge: samples must be images (H, W, C) or vectors (dim,), got shape {self.input_shape}")
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

    def to_input(self, samples: np.ndarray | torch.Tensor) -> torch.Tensor:
        if isinstance(samples, torch.Tensor):
            return samples
        return from_uint8(samples) if self.images else torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))

    @torch.no_grad()
    def outputs(self, samples: np.ndarray | torch.Tensor, batch_size: int | None = None) -> np.ndarray:
        self.eval()
        device = next(self.parameters()).device
        batch_size = batch_size or inference_batch(device)
        return torch.cat([self(self.to_input(samples[s : s + batch_size]).to(device)).cpu() for s in range(0, len(samples), batch_size)]).numpy()

    def predict(self, samples: np.ndarray | torch.Tensor) -> pd.DataFrame:
        """Attribute values in the schema's own units (class names, 0/1, continuous values)."""
        return self.read(self.outputs(samples))[0]

    def read(self, out: np.ndarray) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Attribute values, and the probability of the predicted value of each discrete attribute."""
        out, confidence = out.copy(), {}
        for a in self.schema.attributes:  # logits -> the 1/0 coding that Schema.decode reads
            sl = self.schema.slices[a.name]
            if a.kind == "binary":
                p = 1 / (1 + np.exp(-out[:, sl.start]))
                confidence[a.name] = np.maximum(p, 1 - p)
                out[:, sl] = (out[:, sl] > 0).astype(np.float32)
            elif a.kind == "categorical":
                confidence[a.name] = torch.softmax(torch.from_numpy(out[:, sl]), dim=1).max(dim=1).values.numpy()
        return self.schema.decode(out), pd.DataFrame(confidence)

    def fit(self, samples: np.ndarray, labels: pd.DataFrame, epochs: int, batch_size: int, lr: float, augment: float, device, generator, state=None) -> list[dict]:
        """`augment`: fraction of each image batch given mild blur and noise, so decoded images are judged fairly.
        Rows with a missing label are left out."""
        known = labels[self.schema.names].notna().all(axis=1).to_numpy()
        if not known.any():
            raise PlugenInputError("judge: no training row has every attribute labelled")
        samples, target = samples[known], torch.from_numpy(self.schema.encode(labels.loc[known, self.schema.names]))
        self.to(device).train()
        opt = torch.optim.Adam(self.parameters(), lr=lr)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * math.ceil(len(samples) / batch_size))
        history: list[dict] = []
        for epoch in resume.epochs(state, epochs, history, generator, model=self, optimiser=opt, schedule=sched):
            perm = torch.randperm(len(samples), generator=generator).numpy()
            total = 0.0
            for start in tqdm(range(0, len(samples), batch_size), desc=f"judge epoch {epoch + 1}/{epochs}", leave=False):
                idx = perm[start : start + batch_size]
                x = self.to_input(samples[idx])
                n_aug = int(round(augment * len(x))) if self.images else 0
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
            history.append({"epoch": epoch + 1, "loss": total / len(samples)})
            print(f"[judge] epoch {epoch + 1}/{epochs} loss {history[-1]['loss']:.4f}", flush=True)
        return history

    def save(self, path, trained: dict | None = None) -> None:
        """`trained`: how it was trained (seconds, device, threads), for its model card."""
        save_checkpoint({"schema": self.schema.to_dict(), "input_shape": list(self.input_shape), "width": self.width, "state_dict": self.state_dict(), "trained": trained or {}}, path)

    @classmethod
    def load(cls, path) -> "Judge":
        ckpt = load_checkpoint(path, ("schema", "input_shape", "width", "state_dict"))
        judge = cls(Schema.from_dict(ckpt["schema"]), input_shape=tuple(ckpt["input_shape"]), width=ckpt["width"])
        judge.load_state_dict(ckpt["state_dict"])
        return judge.eval()


class PropertyJudge:
    """The molecule judge: RDKit computes each property of a generated SMILES exactly, so there is nothing to train.
    Stored as its schema (the data's ranges) and the RDKit version, in the judge's place of the pipeline."""

    kind = "rdkit"
    images = False

    def __init__(self, schema):
        self.schema = schema

    def predict(self, smiles) -> pd.DataFrame:
        from plugen_core import chemistry  # RDKit: imported by molecule experiments only

        return chemistry.properties(smiles)[self.schema.names]

    def save(self, path, trained: dict | None = None) -> None:
        from rdkit import __version__ as rdkit_version

        save_checkpoint({"kind": self.kind, "schema": self.schema.to_dict(), "rdkit": rdkit_version, "trained": trained or {}}, path)

    @classmethod
    def load(cls, path) -> "PropertyJudge":
        from plugen_core import chemistry

        ckpt = load_checkpoint(path, ("kind", "schema"))
        if ckpt["kind"] != cls.kind:
            raise PlugenInputError(f"{path}: holds a judge of kind {ckpt['kind']!r}, not RDKit's property judge")
        schema = Schema.from_dict(ckpt["schema"])
        unknown = [n for n in schema.names if n not in chemistry.PROPERTIES]
        if unknown:
            raise PlugenInputError(f"{path}: RDKit computes no property {unknown} (it computes {list(chemistry.PROPERTIES)})")
        return cls(schema)

