"""LACE (Nie et al., NeurIPS 2021): a classifier on latents defines an energy-based model in the backbone's latent space.

E(w | y) = sum over the specified attributes of E_k(w, y_k) + E_prior(w), with E_k = -log p(y_k | w) from the latent
classifier (a Gaussian of width `continuous_sigma` around its prediction for a continuous attribute) and
E_prior(w) = ||w||^2 / 2 for an N(0, I) prior. Generation starts from prior samples and runs `steps` of either
  - "langevin": w <- w - eta grad E(w | y) + sqrt(2 eta) t noise, which samples p(w | y) (t = temperature), or
  - "ode": the paper's ODE sampler; under an N(0, I) prior the prior's score cancels the drift of the VP diffusion, so
    it reduces to Euler steps w <- w - eta grad sum_k E_k(w, y_k): attribute terms only, no noise.
With a Gaussian prior of covariance C = L L^T (a GaussianPrior: a VAE's encoded latents) the dynamics are preconditioned
by it (grad -> C grad, noise -> L noise): its near-constant directions would otherwise need a step far below `step_size`
to stay stable, and moves along them would leave the latents the backbone decodes well.
Editing (the paper's sequential editing) runs the ODE from w for `edit_steps` steps with the edited target and, for
every attribute not edited, the classifier's reading of w, so the other attributes are held where they were.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from plugen_core.baselines.base import Baseline
from plugen_core.baselines.latent_classifier import LatentClassifier

SAMPLERS = ("langevin", "ode")


def standard_normal_energy(w: torch.Tensor) -> torch.Tensor:
    return 0.5 * (w**2).sum(dim=1)


class LACE(Baseline):
    def __init__(
        self, sampler: str = "langevin", steps: int = 100, step_size: float = 0.05, edit_steps: int = 20,
        continuous_sigma: float = 0.1, classifier: dict | None = None, prior=None,
        prior_energy: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ):
        """`steps`/`edit_steps` 0: no dynamics at all (the negative control). `prior_energy`: -log p(w) up to a
        constant, to pair with a `prior` other than N(0, I) (default: the prior's own `energy`, e.g. a GaussianPrior's,
        else N(0, I)'s)."""
        if sampler not in SAMPLERS:
            raise ValueError(f"LACE sampler must be one of {SAMPLERS}, got '{sampler}'")
        super().__init__(prior)
        self.sampler, self.steps, self.step_size, self.edit_steps = sampler, steps, step_size, edit_steps
        self.continuous_sigma = continuous_sigma
        self.prior_energy = prior_energy or getattr(prior, "energy", standard_normal_energy)
        self.classifier_settings = classifier or {}

    def _fit(self, w, context, generator) -> None:
        self.classifier = LatentClassifier.trained(w, context, self.schema, generator, **self.classifier_settings)
        for p in self.classifier.parameters():
            p.requires_grad_(False)  # only w moves in the dynamics

    def energy(self, w: torch.Tensor, target: torch.Tensor, with_prior: bool) -> torch.Tensor:
        attributes = -self.classifier.log_likelihood(w, target, self.continuous_sigma)
        return attributes + self.prior_energy(w) if with_prior else attributes

    def dynamics(self, w: torch.Tensor, target: torch.Tensor, steps: int, langevin: bool, temperature=1.0, generator=None):
        """`steps` of Langevin dynamics on E(w | y), or (not `langevin`) Euler steps of the ODE on the attribute terms."""
        scale = getattr(self.prior, "scale", None)  # L of a Gaussian prior: precondition by C = L L^T
        for _ in range(steps):
            w = w.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.energy(w, target, with_prior=langevin).sum(), w)
            w = w - self.step_size * (grad if scale is None else grad @ scale @ scale.T)
            if langevin:
                noise = torch.randn(w.shape, generator=generator)
                w = w + (2 * self.step_size) ** 0.5 * temperature * (noise if scale is None else noise @ scale.T)
        return w.detach()

    def read(self, w: torch.Tensor) -> torch.Tensor:
        return self.classifier.predict(w)

    def _sample(self, target, temperature, generator) -> torch.Tensor:
        start = self.draw_prior(len(target), temperature, generator)
        return self.dynamics(start, target, self.steps, self.sampler == "langevin", temperature, generator)

    def _edit(self, w, edit) -> torch.Tensor:
        target = torch.where(torch.isnan(edit), self.classifier.predict(w), edit)
        return self.dynamics(w, target, self.edit_steps, langevin=False)
