"""The prior's log-density equals a hand computation for every kind of label, missing ones included."""
import math

import numpy as np
import pandas as pd
import pytest
import torch

from plugen_core.prior import PluGeNPrior
from plugen_core.schema import Attribute, Schema


def normal(x, mean, std):
    return -((x - mean) ** 2) / (2 * std**2) - math.log(std) - 0.5 * math.log(2 * math.pi)


@pytest.fixture
def schema():
    return Schema(
        [
            Attribute("smile", "binary"),
            Attribute("hair", "categorical", classes=["black", "blond", "grey"]),
            Attribute("age", "continuous", low=20.0, high=60.0),
        ]
    )


@pytest.fixture
def prior(schema):
    # coordinates: smile | hair.black hair.blond hair.grey | age ; then 2 style coordinates
    groups = [("binary", 0, 1), ("categorical", 1, 4), ("continuous", 4, 5)]
    rate = torch.tensor([0.2, 0.5, 0.3, 0.2, 0.0])
    mean = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.1])
    std = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.4])
    return PluGeNPrior(7, groups, rate, mean, std, sigma=0.5, balanced=True)


def test_log_prob_matches_hand_computation(schema, prior):
    labels = pd.DataFrame({"smile": [1, 0, np.nan], "hair": ["blond", "grey", None], "age": [50.0, np.nan, 20.0]})
    context = torch.from_numpy(schema.encode(labels))
    z = torch.tensor(
        [[0.8, -0.9, 1.2, -1.1, 0.4, 0.3, -0.2], [-1.3, -0.7, -1.0, 0.9, -0.5, 1.0, 0.0], [0.1, 0.6, -0.3, 0.2, -0.8, -0.4, 0.5]]
    )
    got = prior.log_prob(z, context=context)

    s = 0.5
    sp = lambda p: s * math.sqrt(2 * p)  # noqa: E731  balanced widths
    sn = lambda p: s * math.sqrt(2 * (1 - p))  # noqa: E731
    mix = lambda x, p: math.log(p * math.exp(normal(x, 1, sp(p))) + (1 - p) * math.exp(normal(x, -1, sn(p))))  # noqa: E731
    style = lambda row: normal(row[5], 0, 1) + normal(row[6], 0, 1)  # noqa: E731
    age_50 = 2 * (50 - 20) / 40 - 1  # 0.5 normalised
    r = z.tolist()
    expected = [
        normal(r[0][0], 1, sp(0.2)) + normal(r[0][1], -1, sn(0.5)) + normal(r[0][2], 1, sp(0.3)) + normal(r[0][3], -1, sn(0.2))
        + normal(r[0][4], age_50, s) + style(r[0]),
        normal(r[1][0], -1, sn(0.2)) + normal(r[1][1], -1, sn(0.5)) + normal(r[1][2], -1, sn(0.3)) + normal(r[1][3], 1, sp(0.2))
        + normal(r[1][4], 0.1, math.sqrt(0.4**2 + s**2)) + style(r[1]),
        mix(r[2][0], 0.2) + mix(r[2][1], 0.5) + mix(r[2][2], 0.3) + mix(r[2][3], 0.2) + normal(r[2][4], -1.0, s) + style(r[2]),
    ]
    assert torch.allclose(got, torch.tensor(expected), atol=1e-5)


def test_plain_widths_ignore_the_positive_rate(prior):
    prior.balanced = False
    s_pos, s_neg = prior.widths()
    assert torch.allclose(s_pos, torch.full((5,), 0.5)) and torch.allclose(s_neg, torch.full((5,), 0.5))


def test_missing_labels_give_finite_gradients(schema, prior):
    z = torch.randn(4, 7, requires_grad=True)
    context = torch.full((4, 5), float("nan"))
    prior.log_prob(z, context=context).sum().backward()
    assert torch.isfinite(z.grad).all()


def test_marginal_sampling_follows_label_rates(prior):
    gen = torch.Generator().manual_seed(0)
    filled = prior.fill_missing(torch.full((20000, 5), float("nan")), gen)
    assert abs(filled[:, 0].mean().item() - 0.2) < 0.02
    hair = filled[:, 1:4]
    assert torch.all(hair.sum(dim=1) == 1)  # exactly one class per sample
    assert torch.allclose(hair.mean(dim=0), torch.tensor([0.5, 0.3, 0.2]), atol=0.02)
    assert abs(filled[:, 4].mean().item() - 0.1) < 0.02 and abs(filled[:, 4].std().item() - 0.4) < 0.02


def test_continuous_scale_narrows_only_continuous_coordinates(schema, prior):
    labels = pd.DataFrame({"smile": [1, np.nan], "hair": ["grey", None], "age": [30.0, np.nan]})
    context = torch.from_numpy(schema.encode(labels))
    z = torch.tensor([[0.5, -1.2, -0.8, 1.1, -0.3, 0.2, 0.1], [0.0, 0.3, -0.2, 0.4, 0.6, -0.5, 0.9]])
    wide = prior.log_prob(z, context=context)
    prior = PluGeNPrior(7, prior.groups, prior.positive_rate, prior.cont_mean, prior.cont_std, sigma=0.5, continuous_scale=0.5)
    narrow = prior.log_prob(z, context=context)
    s, age_30 = 0.5, 2 * (30 - 20) / 40 - 1
    expected_shift = [
        normal(-0.3, age_30, 0.5 * s) - normal(-0.3, age_30, s),
        normal(0.6, 0.1, math.sqrt(0.4**2 + (0.5 * s) ** 2)) - normal(0.6, 0.1, math.sqrt(0.4**2 + s**2)),
    ]
    assert torch.allclose(narrow - wide, torch.tensor(expected_shift), atol=1e-5)
    attr = prior.sample_given(torch.tensor([[1.0, 0.0, 0.0, 1.0, age_30]]).repeat(20000, 1), generator=torch.Generator().manual_seed(0))
    assert abs(attr[:, 4].std().item() - 0.25) < 0.01 and abs(attr[:, 0].std().item() - s * math.sqrt(2 * 0.2)) < 0.01


def test_posterior_is_bayes_rule_over_the_priors_own_densities(schema, prior):
    """The free classifier: p(y | z) from enumerating labels through log_prob, times the label frequencies."""
    z = torch.tensor([[0.3, -0.2, 0.4, -1.4, 0.6, 0.0, 0.0], [-1.1, 0.9, -0.8, -0.3, -0.2, 1.0, 1.0]])
    posterior = prior.posterior(z)

    def log_prob(**labels):
        return prior.log_prob(z, context=torch.from_numpy(schema.encode(pd.DataFrame([labels] * len(z)))))

    smile = torch.stack([math.log(0.2) + log_prob(smile=1), math.log(0.8) + log_prob(smile=0)], 1).softmax(1)[:, 0]
    assert torch.allclose(posterior[:, 0], smile, atol=1e-5)
    hair = torch.stack([math.log(p) + log_prob(hair=c) for c, p in zip(["black", "blond", "grey"], [0.5, 0.3, 0.2])], 1).softmax(1)
    assert torch.allclose(posterior[:, 1:4], hair, atol=1e-5)
    ages = np.linspace(-20.0, 100.0, 6001)  # normalised v in [-3, 3] on a grid, weighted by the labels' N(0.1, 0.4^2)
    v = torch.from_numpy(2 * (ages - 20) / 40 - 1).float()
    weights = torch.stack([log_prob(age=a) + torch.distributions.Normal(0.1, 0.4).log_prob(x) for a, x in zip(ages, v)], 1).softmax(1)
    assert torch.allclose(posterior[:, 4], (weights * v).sum(1), atol=2e-3)


def test_log_prob_gradient_is_the_densitys(schema, prior):
    """The prior's hand-written gradient against finite differences, for labelled, partly and wholly missing rows."""
    labels = pd.DataFrame({"smile": [1, 0, np.nan, np.nan], "hair": ["blond", None, "grey", None], "age": [50.0, np.nan, 20.0, np.nan]})
    context = torch.from_numpy(schema.encode(labels)).double()
    prior.double()
    prior.set_sigma(0.5)
    z = torch.randn(4, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(0)).requires_grad_()
    assert torch.autograd.gradcheck(lambda z: prior.log_prob(z, context=context), (z,))
