"""The PluGeN prior: an nflows Distribution over z whose context is the encoded label vector.

Attribute coordinates come first (layout of `Schema.encode`), then standard-normal style coordinates.
Binary-like coordinate (binary attribute or one class of a categorical): label 1 -> N(+1, s_pos^2),
label 0 -> N(-1, s_neg^2), missing -> p N(+1, s_pos^2) + (1-p) N(-1, s_neg^2).
Continuous coordinate with normalised label v: N(v, (c sigma)^2); missing: N(m, s^2 + (c sigma)^2), where c
(`continuous_scale`, default 1) narrows continuous coordinates: a flow only learns an attribute's value to
within its prior width, and a continuous target wants more precision than a class.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from nflows.distributions.base import Distribution

LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)
P_CLAMP = 0.01  # keeps balanced widths and mixture weights away from 0 when a class is (almost) absent


def normal_log_pdf(x: torch.Tensor, mean, std) -> torch.Tensor:
    return -((x - mean) ** 2) / (2 * std**2) - torch.log(std) - LOG_SQRT_2PI


class WithGradient(torch.autograd.Function):
    """A per-row value whose gradient with respect to its input the forward pass computes alongside it: the backward
    is one product rather than autograd retracing every elementwise op of the density."""

    @staticmethod
    def forward(ctx, inputs: torch.Tensor, value_and_gradient):
        value, gradient = value_and_gradient(inputs)
        ctx.save_for_backward(gradient)
        return value

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        (gradient,) = ctx.saved_tensors
        return grad_output[:, None] * gradient, None


class PluGeNPrior(Distribution):
    def __init__(
        self,
        dim: int,
        groups: list[tuple[str, int, int]],
        positive_rate: torch.Tensor,
        cont_mean: torch.Tensor,
        cont_std: torch.Tensor,
        sigma: float = 0.7,
        balanced: bool = True,
        continuous_scale: float = 1.0,
    ):
        """`groups`: (kind, start, stop) per attribute; `positive_rate`, `cont_mean`, `cont_std` per attribute
        coordinate (only the entries of the matching kind are used)."""
        super().__init__()
        self.dim = dim
        self.groups = [tuple(g) for g in groups]
        self.n_attr = groups[-1][2] if groups else 0
        if self.n_attr > dim:
            raise ValueError(f"the schema needs {self.n_attr} coordinates but the latent has only {dim}")
        self.balanced = balanced
        self.continuous_scale = continuous_scale
        is_cont = torch.zeros(self.n_attr, dtype=torch.bool)
        for kind, start, stop in self.groups:
            is_cont[start:stop] = kind == "continuous"
        self.register_buffer("is_continuous", is_cont)
        self.register_buffer("positive_rate", torch.as_tensor(positive_rate, dtype=torch.float32).clamp(P_CLAMP, 1 - P_CLAMP))
        self.register_buffer("cont_mean", torch.as_tensor(cont_mean, dtype=torch.float32))
        self.register_buffer("cont_std", torch.as_tensor(cont_std, dtype=torch.float32))
        self.register_buffer("sigma", torch.tensor(float(sigma)))
        self.register_buffer("tables", torch.empty(8, self.n_attr), persistent=False)  # set_sigma fills both
        self.register_buffer("missing_tables", torch.empty(4, self.n_attr), persistent=False)
        self.set_sigma(float(sigma))
        self.register_load_state_dict_post_hook(lambda prior, keys: prior.set_sigma(prior.sigma))  # a loaded sigma

    @classmethod
    def from_labels(cls, dim: int, groups, context: np.ndarray, sigma: float, balanced: bool, continuous_scale: float = 1.0) -> "PluGeNPrior":
        """Fit p (positive rates) and m, s (continuous label statistics) on the labelled rows of `context`."""
        with np.errstate(invalid="ignore"):
            rate = np.nan_to_num(np.nanmean(context, axis=0), nan=0.5) if len(context) else np.full(context.shape[1], 0.5)
            mean = np.nan_to_num(np.nanmean(context, axis=0)) if len(context) else np.zeros(context.shape[1])
            std = np.nan_to_num(np.nanstd(context, axis=0), nan=1.0) if len(context) else np.ones(context.shape[1])
        return cls(dim, groups, torch.tensor(rate), torch.tensor(mean), torch.tensor(np.maximum(std, 1e-3)), sigma, balanced, continuous_scale)

    def config(self) -> dict:
        return {"dim": self.dim, "groups": [list(g) for g in self.groups], "balanced": self.balanced, "continuous_scale": self.continuous_scale}

    def widths(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(sigma_pos, sigma_neg) per binary-like coordinate."""
        if not self.balanced:
            return self.sigma.expand(self.n_attr), self.sigma.expand(self.n_attr)
        p = self.positive_rate
        return self.sigma * torch.sqrt(2 * p), self.sigma * torch.sqrt(2 * (1 - p))

    def set_sigma(self, sigma: float | torch.Tensor) -> None:
        """Set the width and tabulate, per attribute coordinate, the Gaussians `log_prob` needs: done once per epoch
        rather than in every batch. Rows: label scale and offset (the component's mean is label * scale + offset),
        then (mean, 1/std, log-normaliser + log-weight) of the component for label 1 (missing: the first mixture
        component) and for label 0 (the second); a continuous coordinate's two missing components are the same
        Gaussian at half weight each."""
        self.sigma.fill_(float(sigma))
        s_pos, s_neg = self.widths()
        cont, p = self.is_continuous, self.positive_rate
        s_cont = (self.continuous_scale * self.sigma).expand(self.n_attr)
        s_missing = torch.sqrt(self.cont_std**2 + s_cont**2)
        s_pos, s_neg = torch.where(cont, s_cont, s_pos), torch.where(cont, s_cont, s_neg)
        half = torch.full_like(p, 0.5)
        self.tables = torch.stack([
            torch.where(cont, 1.0, 2.0), torch.where(cont, 0.0, -1.0),
            1 / s_pos, 1 / s_neg, -torch.log(s_pos) - LOG_SQRT_2PI, -torch.log(s_neg) - LOG_SQRT_2PI,
            torch.where(cont, self.cont_mean, 1.0), torch.where(cont, self.cont_mean, -1.0),
        ])
        self.missing_tables = torch.stack([
            1 / torch.where(cont, s_missing, s_pos), 1 / torch.where(cont, s_missing, s_neg),
            torch.where(cont, -torch.log(s_missing) + torch.log(half), -torch.log(s_pos) + torch.log(p)) - LOG_SQRT_2PI,
            torch.where(cont, -torch.log(s_missing) + torch.log(half), -torch.log(s_neg) + torch.log1p(-p)) - LOG_SQRT_2PI,
        ])

    def _log_prob(self, inputs: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        if context is None:
            context = torch.full_like(inputs[:, : self.n_attr], float("nan"))
        return WithGradient.apply(inputs, lambda z: self._log_prob_and_gradient(z, context))

    def _log_prob_and_gradient(self, inputs: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per row log p(z | labels), and its gradient with respect to z: a Gaussian's is -(z - mean) / std^2, a
        mixture's the responsibility-weighted sum of its components'."""
        a, style = inputs[:, : self.n_attr], inputs[:, self.n_attr :]
        scale, offset, inv_pos, inv_neg, norm_pos, norm_neg, mean_1, mean_0 = self.tables
        inv_1, inv_0, norm_1, norm_0 = self.missing_tables
        label = torch.nan_to_num(context)
        positive = label > 0.5
        inv = torch.where(positive, inv_pos, inv_neg)
        d = (a - torch.addcmul(offset, label, scale)) * inv
        d_1, d_0 = (a - mean_1) * inv_1, (a - mean_0) * inv_0
        l_1, l_0 = norm_1 - 0.5 * d_1**2, norm_0 - 0.5 * d_0**2
        mixture = torch.logaddexp(l_1, l_0)
        r_1 = torch.exp(l_1 - mixture)  # the first component's responsibility
        missing = torch.isnan(context)
        value = torch.where(missing, mixture, torch.where(positive, norm_pos, norm_neg) - 0.5 * d**2).sum(dim=1)
        grad = torch.where(missing, -(r_1 * d_1 * inv_1 + (1 - r_1) * d_0 * inv_0), -d * inv)
        return value - 0.5 * (style**2).sum(dim=1) - LOG_SQRT_2PI * style.shape[1], torch.cat([grad, -style], dim=1)

    def fill_missing(self, context: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw every missing attribute from its marginal in the labelled data (whole attributes, so a
        categorical gets exactly one class). Labels stay on the CPU, where the seeded generator draws."""
        context = context.clone()
        for kind, start, stop in self.groups:
            block = context[:, start:stop]
            rows = torch.isnan(block).any(dim=1)
            n = int(rows.sum())
            if n == 0:
                continue
            if kind == "categorical":
                cls = torch.multinomial(self.positive_rate[start:stop].cpu(), n, replacement=True, generator=generator)
                block[rows] = torch.nn.functional.one_hot(cls, stop - start).float()
            elif kind == "binary":
                block[rows, 0] = (torch.rand(n, generator=generator) < self.positive_rate[start].cpu()).float()
            else:
                block[rows, 0] = self.cont_mean[start].cpu() + self.cont_std[start].cpu() * torch.randn(n, generator=generator)
        return context

    def posterior(self, inputs: torch.Tensor) -> torch.Tensor:
        """The labels the prior reads off z by Bayes' rule, in the context layout (the free classifier): per
        binary-like coordinate the probability of its class (a categorical's classes compete within its block), per
        continuous coordinate the posterior mean of the normalised value under the labels' N(m, s^2)."""
        a = inputs[:, : self.n_attr]
        s_pos, s_neg = self.widths()
        p = self.positive_rate
        evidence = torch.log(p) + normal_log_pdf(a, 1.0, s_pos) - torch.log1p(-p) - normal_log_pdf(a, -1.0, s_neg)
        out = torch.sigmoid(evidence)
        s_cont2 = (self.continuous_scale * self.sigma) ** 2
        continuous = (a * self.cont_std**2 + self.cont_mean * s_cont2) / (self.cont_std**2 + s_cont2)
        out = torch.where(self.is_continuous, continuous, out)
        for kind, start, stop in self.groups:
            if kind == "categorical":  # log p_c + log N(z_c; +1) - log N(z_c; -1), up to a constant shared by all c
                log_pos = torch.log(p[start:stop]) + normal_log_pdf(a[:, start:stop], 1.0, s_pos[start:stop]) - normal_log_pdf(a[:, start:stop], -1.0, s_neg[start:stop])
                out[:, start:stop] = torch.softmax(log_pos, dim=1)
        return out

    def means(self, context: torch.Tensor) -> torch.Tensor:
        """Centre of each coordinate's component for the given labels (NaN stays NaN)."""
        return torch.where(self.is_continuous, context, 2 * context - 1)

    def sample_given(
        self, context: torch.Tensor, temperature: float = 1.0, style_temperature: float = 1.0, generator=None
    ) -> torch.Tensor:
        """z for fully specified labels: attribute coordinates ~ N(mean, (t sigma)^2), style ~ N(0, t_style^2)."""
        if torch.isnan(context).any():
            raise ValueError("sample_given needs fully specified labels; call fill_missing first")
        device = self.sigma.device  # the prior's; the labels and the seeded draws come from the CPU
        context = context.to(device)
        s_pos, s_neg = self.widths()
        s_cont = (self.continuous_scale * self.sigma).expand_as(context)
        std = torch.where(self.is_continuous, s_cont, torch.where(context > 0.5, s_pos, s_neg))
        n = context.shape[0]
        attr = self.means(context) + temperature * std * torch.randn(context.shape, generator=generator).to(device)
        style = style_temperature * torch.randn(n, self.dim - self.n_attr, generator=generator).to(device)
        return torch.cat([attr, style], dim=1)

    def _sample(self, num_samples: int, context: torch.Tensor | None) -> torch.Tensor:
        if context is None:
            labels = torch.full((num_samples, self.n_attr), float("nan"))
            return self.sample_given(self.fill_missing(labels))
        labels = context.repeat_interleave(num_samples, dim=0)
        return self.sample_given(self.fill_missing(labels)).reshape(context.shape[0], num_samples, self.dim)
