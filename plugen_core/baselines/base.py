"""What every baseline shares: the interface, the backbone's prior, requested values in the context layout, training.

A baseline sees what the plugin's `fit` sees: latents w (N, D), the Schema and the encoded context (`Schema.encode`:
NaN = unlabelled), plus a sampler of the backbone's latent prior. It never knows which modality the latents serve.
Targets and edits are DataFrames in original units (a missing column or NaN = unspecified), as for the plugin.
Everything is computed on the CPU; edited latents go back to the device they came from.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

import numpy as np
import pandas as pd
import torch

from plugen_core.schema import Schema

Prior = Callable[[int, "torch.Generator | None"], torch.Tensor]  # (n, generator) -> (n, D) latents of the backbone


def standard_normal(dim: int) -> Prior:
    """The usual backbone prior N(0, I)."""
    return lambda n, generator=None: torch.randn(n, dim, generator=generator)


class GaussianPrior:
    """A Gaussian fitted to latents (mean, full covariance): where to start for a VAE, whose encoded latents lie far
    from its N(0, I) prior (its prior draws decode to blurs). The plugin learns the same latents' distribution."""

    def __init__(self, w: torch.Tensor):
        w = as_float(w).double()
        self.mean = w.mean(dim=0)
        covariance = torch.cov(w.T) + 1e-4 * torch.eye(w.shape[1], dtype=w.dtype)
        self.scale, self.precision = torch.linalg.cholesky(covariance), torch.linalg.inv(covariance)
        self.mean, self.scale, self.precision = self.mean.float(), self.scale.float(), self.precision.float()

    def __call__(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.mean + torch.randn(n, len(self.mean), generator=generator) @ self.scale.T

    def energy(self, w: torch.Tensor) -> torch.Tensor:
        """-log density up to a constant."""
        d = w - self.mean
        return 0.5 * ((d @ self.precision) * d).sum(dim=1)


class Baseline(ABC):
    """Settings go to the constructor (plain values), data to `fit`; `sample_latents` and `manipulate` then work like
    the plugin's. `can_edit` is False for a method that only generates."""

    can_edit = True

    def __init__(self, prior: Prior | None = None):
        self.prior = prior

    def fit(self, w, context, schema: Schema, generator: torch.Generator | None = None) -> Baseline:
        self.schema = schema
        w, context = as_float(w), as_float(context)
        self.dim = w.shape[1]
        self.prior = self.prior or standard_normal(w.shape[1])
        self._fit(w, context, generator or torch.Generator().manual_seed(0))
        return self

    def sample_latents(self, targets: pd.DataFrame | dict, n_per_target: int = 1, temperature: float = 1.0, generator=None):
        """(w, labels): latents with the requested attributes, and per sample the requested values with the method's own
        reading of the sample where a target left an attribute unspecified (context layout)."""
        target = self.encode(targets).repeat_interleave(n_per_target, dim=0)
        w = self._sample(target, temperature, generator)
        return w, torch.where(torch.isnan(target), self.read(w), target)

    def manipulate(self, w: torch.Tensor, edits: pd.DataFrame | dict) -> torch.Tensor:
        """Set the attributes named in `edits` (one row for every latent, or one row per latent); keep the others."""
        edit = self.encode(edits).expand(len(w), -1)
        return self._edit(as_float(w), edit).to(w.device)

    def encode(self, table: pd.DataFrame | dict) -> torch.Tensor:
        """Requested values in the context layout; values outside the labelled range are allowed (extrapolation)."""
        table = pd.DataFrame([table]) if isinstance(table, dict) else table
        return torch.from_numpy(self.schema.encode(table))

    def draw_prior(self, n: int, temperature: float, generator=None) -> torch.Tensor:
        centre = getattr(self.prior, "mean", 0.0)  # the temperature scales the spread around the prior's centre
        return centre + temperature * (self.prior(n, generator) - centre)

    @abstractmethod
    def _fit(self, w: torch.Tensor, context: torch.Tensor, generator: torch.Generator) -> None: ...

    @abstractmethod
    def _sample(self, target: torch.Tensor, temperature: float, generator) -> torch.Tensor: ...

    @abstractmethod
    def read(self, w: torch.Tensor) -> torch.Tensor:
        """The method's own labels for latents, in the context layout (0/1, one-hot, normalised values)."""

    def _edit(self, w: torch.Tensor, edit: torch.Tensor) -> torch.Tensor:
        """Edited latents for the context `edit` (NaN = keep); a method that edits replaces this."""
        raise NotImplementedError(f"{type(self).__name__} only generates: it has no way to edit a given latent")


def as_float(x) -> torch.Tensor:
    return x.detach().cpu().float() if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x, dtype=np.float32))


def reading(schema: Schema, scores: torch.Tensor) -> torch.Tensor:
    """Labels from per-coordinate scores: binary = score > 0 (a logit or a signed distance), categorical = one-hot of the
    best class, continuous = the score itself."""
    out = scores.clone()
    for a in schema.attributes:
        sl = schema.slices[a.name]
        if a.kind == "binary":
            out[:, sl] = (scores[:, sl] > 0).float()
        elif a.kind == "categorical":
            out[:, sl] = torch.nn.functional.one_hot(scores[:, sl].argmax(dim=1), a.width).float()
    return out


def seeded(generator: torch.Generator, build: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    """A network whose initial weights follow `generator`, leaving torch's global random state as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(2**31 - 1, (1,), generator=generator)))
        return build()


def train(module: torch.nn.Module, loss: Callable[[torch.Tensor], torch.Tensor], n_rows: int, epochs: int, batch_size: int, lr: float,
          generator: torch.Generator) -> None:
    """Adam on `loss(row indices)` (a mean over the batch), shuffled mini-batches, gradient norm clipped at 1."""
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    module.train()
    for _ in range(epochs):
        for rows in torch.randperm(n_rows, generator=generator).split(batch_size):
            opt.zero_grad()
            loss(rows).backward()
            torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
            opt.step()
    module.eval()
