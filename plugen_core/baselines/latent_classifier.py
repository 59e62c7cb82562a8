"""A classifier on latents: an MLP with one head per attribute, shared by the baselines that need p(y | w).

Heads in the context layout: a logit per binary attribute, C logits per categorical one, the normalised value per
continuous one (read as the mean of a Gaussian of fixed width, so that every attribute has a log-likelihood).
"""
from __future__ import annotations

from itertools import pairwise

import torch
from torch import nn
from torch.nn import functional as F

from plugen_core.baselines.base import reading, seeded, train
from plugen_core.prior import normal_log_pdf
from plugen_core.schema import Schema


class LatentClassifier(nn.Module):
    def __init__(self, schema: Schema, dim: int, hidden: int = 128, layers: int = 2):
        super().__init__()
        self.schema = schema
        sizes = [dim] + [hidden] * layers
        # SiLU, not ReLU: LACE follows this network's gradients, which ReLU makes piecewise constant
        blocks = [m for a, b in pairwise(sizes) for m in (nn.Linear(a, b), nn.SiLU())]
        self.net = nn.Sequential(*blocks, nn.Linear(sizes[-1], schema.n_coords))

    @classmethod
    def trained(
        cls, w: torch.Tensor, context: torch.Tensor, schema: Schema, generator: torch.Generator,
        hidden: int = 128, layers: int = 2, epochs: int = 100, batch_size: int = 128, lr: float = 1e-3,
    ) -> LatentClassifier:
        """Fitted by maximum likelihood on every label present (partially labelled rows count for their labels)."""
        model = seeded(generator, lambda: cls(schema, w.shape[1], hidden, layers))
        rows = ~torch.isnan(context).all(dim=1)
        w, context = w[rows], context[rows]
        train(model, lambda idx: -model.log_likelihood(w[idx], context[idx]).mean(), len(w), epochs, batch_size, lr, generator)
        return model

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return self.net(w)

    def log_likelihood(self, w: torch.Tensor, target: torch.Tensor, continuous_sigma: float = 0.1) -> torch.Tensor:
        """(N,) sum over the attributes each row specifies of log p(y_k | w); NaN attributes add nothing."""
        return log_likelihood(self.schema, self(w), target, continuous_sigma)

    @torch.no_grad()
    def predict(self, w: torch.Tensor) -> torch.Tensor:
        """Most likely labels in the context layout."""
        return reading(self.schema, self(w))


def log_likelihood(schema: Schema, scores: torch.Tensor, target: torch.Tensor, continuous_sigma: float = 0.1) -> torch.Tensor:
    """`LatentClassifier.log_likelihood` from the network's outputs `scores`."""
    total = torch.zeros(len(scores))
    for a in schema.attributes:
        sl = schema.slices[a.name]
        given = ~torch.isnan(target[:, sl]).any(dim=1)
        y = torch.nan_to_num(target[:, sl])  # NaN would poison gradients through the unselected branch
        if a.kind == "binary":
            term = -F.binary_cross_entropy_with_logits(scores[:, sl.start], y[:, 0], reduction="none")
        elif a.kind == "categorical":
            term = (F.log_softmax(scores[:, sl], dim=1) * y).sum(dim=1)
        else:
            term = normal_log_pdf(scores[:, sl.start], y[:, 0], torch.tensor(continuous_sigma))
        total = total + torch.where(given, term, torch.zeros(()))
    return total
