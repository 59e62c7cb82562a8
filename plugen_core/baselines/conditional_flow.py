"""A conditional flow, StyleFlow-like (Abdal et al., TOG 2021): w = T^-1(z | y) with z ~ N(0, I), the label vector y as
the flow's context.

StyleFlow uses a continuous normalising flow; here T is a stack of nflows affine couplings whose MLPs read y beside
the half of w they condition on (the NaiveLinear/LU transforms of nflows 0.14 call torch.solve, which this torch
lacks). It is trained by maximum likelihood on the labelled latents only; labels a row lacks are filled with a latent
classifier's predictions, since y must be complete. Generate: attributes a target leaves unspecified are drawn from
their marginals in the labelled data, then z ~ N(0, t^2 I) is mapped with the labels. Edit (the paper's step):
z = T(w | y) with the original labels (the latent classifier's reading, as a given latent comes without labels), then
w' = T^-1(z | y') with the edited ones.
"""
from __future__ import annotations

from itertools import pairwise

import torch
from nflows.transforms import ActNorm, AffineCouplingTransform, CompositeTransform
from torch import nn

from plugen_core.baselines.base import Baseline, seeded, train
from plugen_core.baselines.latent_classifier import LatentClassifier
from plugen_core.prior import LOG_SQRT_2PI


class ContextNet(nn.Module):
    """A coupling's MLP; it reads the labels beside the untouched half of w."""

    def __init__(self, in_features: int, out_features: int, context_features: int, hidden: int, layers: int):
        super().__init__()
        sizes = [in_features + context_features] + [hidden] * (layers - 1)
        blocks = [m for a, b in pairwise(sizes) for m in (nn.Linear(a, b), nn.LeakyReLU(0.2))]
        self.net = nn.Sequential(*blocks, nn.Linear(sizes[-1], out_features))

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([x, context], dim=1))


def build_transform(dim: int, context_dim: int, couplings: int, hidden: int, layers: int) -> CompositeTransform:
    steps = [ActNorm(dim)]  # scales the latents first: the couplings then see unit-scale inputs
    for k in range(couplings):
        mask = (torch.arange(dim) + k) % 2
        steps.append(AffineCouplingTransform(mask, lambda i, o: ContextNet(i, o, context_dim, hidden, layers)))
    return CompositeTransform(steps)


class ConditionalFlow(Baseline):
    def __init__(
        self, couplings: int = 4, hidden: int = 64, layers: int = 3, epochs: int = 100, batch_size: int = 128, lr: float = 1e-3,
        classifier: dict | None = None, prior=None,
    ):
        """`epochs` 0: an untrained flow (the negative control). `classifier`: LatentClassifier.trained settings."""
        super().__init__(prior)
        self.couplings, self.hidden, self.layers = couplings, hidden, layers
        self.epochs, self.batch_size, self.lr = epochs, batch_size, lr
        self.classifier_settings = classifier or {}

    def _fit(self, w, context, generator) -> None:
        self.classifier = LatentClassifier.trained(w, context, self.schema, generator, **self.classifier_settings)
        rows = ~torch.isnan(context).all(dim=1)
        w, context = w[rows], context[rows]
        labels = torch.where(torch.isnan(context), self.classifier.predict(w), context)
        self.marginals = {name: context[~torch.isnan(context[:, sl]).any(dim=1), sl] for name, sl in self.schema.slices.items()}
        size = (self.couplings, self.hidden, self.layers)
        self.transform = seeded(generator, lambda: build_transform(self.dim, labels.shape[1], *size))
        nll = lambda rows: -self.log_prob(w[rows], labels[rows]).mean()
        train(self.transform, nll, len(w), self.epochs, self.batch_size, self.lr, generator)

    def log_prob(self, w: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        z, logdet = self.transform(w, context=labels)
        return (-0.5 * z**2 - LOG_SQRT_2PI).sum(dim=1) + logdet

    def fill_unspecified(self, target: torch.Tensor, generator=None) -> torch.Tensor:
        """Each unspecified attribute drawn from its values in the labelled data (whole attributes: a categorical gets
        one class)."""
        target = target.clone()
        for name, sl in self.schema.slices.items():
            rows = torch.isnan(target[:, sl]).any(dim=1)
            known = self.marginals[name]
            target[rows, sl] = known[torch.randint(len(known), (int(rows.sum()),), generator=generator)]
        return target

    def read(self, w: torch.Tensor) -> torch.Tensor:
        return self.classifier.predict(w)

    @torch.no_grad()
    def _sample(self, target, temperature, generator) -> torch.Tensor:
        labels = self.fill_unspecified(target, generator)
        z = temperature * torch.randn(len(target), self.dim, generator=generator)
        return self.transform.inverse(z, context=labels)[0]

    @torch.no_grad()
    def _edit(self, w, edit) -> torch.Tensor:
        original = self.classifier.predict(w)
        z = self.transform(w, context=original)[0]
        return self.transform.inverse(z, context=torch.where(torch.isnan(edit), original, edit))[0]
