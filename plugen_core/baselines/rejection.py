"""Rejection sampling from the backbone's prior: the "no plugin" reference.

Draw prior samples and keep those a latent classifier reads as the requested combination (every specified discrete
attribute equal, every specified continuous one within `tolerance` in normalised units, i.e. tolerance/2 of the range).
At most `max_draws` draws per requested sample; a sample that finds no match by then gets the draw of lowest classifier
energy (the nearest miss). `acceptance` (matches per draw) and `shortfall` (samples that got a nearest miss) report the
last call. It only generates: an edit of a given latent is not defined for it, and `manipulate` raises.
"""
from __future__ import annotations

import torch

from plugen_core.baselines.base import Baseline, reading
from plugen_core.baselines.latent_classifier import LatentClassifier, log_likelihood


class RejectionSampling(Baseline):
    can_edit = False

    def __init__(self, tolerance: float = 0.1, max_draws: int = 10_000, draws_per_round: int = 256, classifier: dict | None = None,
                 prior=None):
        """`max_draws`: per requested sample. `classifier`: LatentClassifier.trained settings."""
        super().__init__(prior)
        self.tolerance, self.max_draws, self.draws_per_round = tolerance, max_draws, draws_per_round
        self.classifier_settings = classifier or {}
        self.acceptance, self.shortfall = float("nan"), 0

    def _fit(self, w, context, generator) -> None:
        self.classifier = LatentClassifier.trained(w, context, self.schema, generator, **self.classifier_settings)

    def read(self, w: torch.Tensor) -> torch.Tensor:
        return self.classifier.predict(w)

    def matches(self, labels: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Rows whose labels agree with the target on every specified coordinate."""
        close = (labels - target).abs() <= self.tolerance  # 0/1 coordinates: equal; continuous: within tolerance
        return (close | torch.isnan(target)).all(dim=1)

    @torch.no_grad()
    def _sample(self, target, temperature, generator) -> torch.Tensor:
        n, k = len(target), self.draws_per_round
        best = torch.zeros(n, self.dim)
        best_energy = torch.full((n,), torch.inf)
        done = torch.zeros(n, dtype=torch.bool)
        draws = accepted = 0
        for _ in range(max(1, -(-self.max_draws // k))):
            rows = torch.nonzero(~done).flatten()
            if len(rows) == 0:
                break
            wanted = target[rows].repeat_interleave(k, dim=0)
            candidates = self.draw_prior(len(wanted), temperature, generator)
            scores = self.classifier(candidates)
            hit = self.matches(reading(self.schema, scores), wanted).reshape(len(rows), k)
            energy = -log_likelihood(self.schema, scores, wanted).reshape(len(rows), k)
            lowest, pick = torch.where(hit, -torch.inf, energy).min(dim=1)  # a match beats every miss
            better = lowest < best_energy[rows]
            chosen = candidates.reshape(len(rows), k, -1)[torch.arange(len(rows)), pick]
            best[rows[better]], best_energy[rows[better]] = chosen[better], lowest[better]
            done[rows] = hit.any(dim=1)
            draws, accepted = draws + hit.numel(), accepted + int(hit.sum())
        self.acceptance, self.shortfall = accepted / draws, int((~done).sum())
        return best
