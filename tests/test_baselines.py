"""Each baseline on a toy latent space whose attributes are known rules of w, judged by those rules.

Latents w ~ N(0, I) in 6 dimensions; along orthonormal directions: binary `lit` = [w.u > 0]; categorical `hue` = the
closest of three directions 120 degrees apart in the plane of two others (a cone each); continuous `size` = 10 + 2 w.v.
The labelled rows (about a fifth, some without `size`) never show lit=1 with hue=blue: the unseen combination.
Every method must hit requested combinations and edit one attribute while keeping the others; each negative control
breaks the method's core step and must miss the same thresholds.
"""
import copy

import numpy as np
import pandas as pd
import pytest
import torch

from plugen_core.baselines import LACE, ConditionalFlow, GaussianPrior, InterFaceGAN, RejectionSampling
from plugen_core.baselines.base import seeded
from plugen_core.baselines.conditional_flow import build_transform
from plugen_core.baselines.latent_classifier import LatentClassifier
from plugen_core.schema import Schema

DIM, N, N_LABELLED = 6, 3000, 800
HUES = ["red", "green", "blue"]
_Q = np.linalg.qr(np.random.default_rng(0).normal(size=(DIM, DIM)))[0]
U_LIT, U_HUE, V_HUE, U_SIZE = _Q[:, 0], _Q[:, 1], _Q[:, 2], _Q[:, 3]
HUE_DIRECTIONS = np.stack([np.cos(t) * U_HUE + np.sin(t) * V_HUE for t in 2 * np.pi * np.arange(3) / 3])
TOLERANCE = 0.1  # of the continuous attribute's range, as in the evaluation
SEEN = {"lit": 0, "hue": "green", "size": 12.0}
UNSEEN = {"lit": 1, "hue": "blue"}  # never labelled together
PASS = 0.8  # share of samples the rules must judge right (generation: every requested value at once; preservation)
EDIT_PASS = 0.7  # share of edits the rules must see land; lower than PASS because a conditional flow maps a point far
# from a boundary to one just across it, where its soft boundary misses some (about 0.8 of its edits land here)
TEMPERATURE = 0.5  # as the evaluation samples the plugin


def truth(w) -> pd.DataFrame:
    w = np.asarray(w, dtype=np.float64)
    return pd.DataFrame({
        "lit": (w @ U_LIT > 0).astype(int),
        "hue": np.array(HUES)[(w @ HUE_DIRECTIONS.T).argmax(axis=1)],
        "size": 10 + 2 * (w @ U_SIZE),
    })


@pytest.fixture(scope="module")
def toy():
    return make_toy()


def make_toy():
    """(latents, encoded context with NaN = unlabelled, schema)."""
    w = torch.randn(N, DIM, generator=torch.Generator().manual_seed(1))
    labels = truth(w)
    labelled = np.zeros(N, dtype=bool)
    labelled[:N_LABELLED] = True
    labelled &= ~((labels["lit"] == 1) & (labels["hue"] == "blue")).to_numpy()
    table = labels.astype(object)
    table.loc[~labelled] = np.nan
    table.loc[np.flatnonzero(labelled)[::5], "size"] = np.nan  # partial labels
    spec = [{"name": "lit", "kind": "binary"}, {"name": "hue", "kind": "categorical", "classes": HUES}]
    spec.append({"name": "size", "kind": "continuous"})
    schema = Schema.from_spec(spec, labels[labelled])
    return w, torch.from_numpy(schema.encode(table)), schema


def fitted(method, toy):
    w, context, schema = toy
    return method.fit(w, context, schema, torch.Generator().manual_seed(2))


def hit_rate(model, target: dict, n: int = 200) -> float:
    """Share of samples for `target` in which the rules see every requested value at once."""
    w, labels = model.sample_latents(pd.DataFrame([target]), n, TEMPERATURE, generator=torch.Generator().manual_seed(3))
    assert w.shape == (n, DIM) and labels.shape == (n, model.schema.n_coords) and not torch.isnan(labels).any()
    requested = torch.from_numpy(model.schema.encode(pd.DataFrame([target])))
    given = ~torch.isnan(requested[0])
    assert torch.equal(labels[:, given], requested[:, given].expand(n, -1))  # the labels hold what was asked for
    return float(agrees(truth(w), target, model.schema).all(axis=1).mean())


def agrees(judged: pd.DataFrame, wanted, schema: Schema) -> pd.DataFrame:
    """Per requested attribute, whether the judged value is the wanted one (continuous: within tolerance)."""
    wanted = pd.DataFrame([wanted] * len(judged)) if isinstance(wanted, dict) else wanted
    out = {}
    for name in wanted.columns:
        if schema[name].kind == "continuous":
            out[name] = (judged[name] - wanted[name]).abs().to_numpy() <= TOLERANCE * schema[name].range
        else:
            out[name] = judged[name].to_numpy() == wanted[name].to_numpy()
    return pd.DataFrame(out)


def edit_scores(model, name: str, n: int = 200) -> tuple[float, float]:
    """(success, preservation) of setting `name` to another value on held-out latents."""
    w = torch.randn(n, DIM, generator=torch.Generator().manual_seed(4))
    before = truth(w)
    if name == "lit":
        new = 1 - before["lit"]
    elif name == "hue":
        new = before["hue"].map({h: HUES[(i + 1) % 3] for i, h in enumerate(HUES)})
    else:
        new = np.where(before["size"] > 10, 8.0, 12.0)
    after = truth(model.manipulate(w, pd.DataFrame({name: np.asarray(new)})))
    success = agrees(after[[name]], pd.DataFrame({name: np.asarray(new)}), model.schema)[name].mean()
    kept = [c for c in before.columns if c != name]
    preservation = agrees(after[kept], before[kept], model.schema).all(axis=1).mean()
    return float(success), float(preservation)


CLASSIFIER = {"epochs": 40, "lr": 3e-3}  # the latent classifier's settings for the methods that have one


def broken_interfacegan(model):
    """Every boundary normal flipped: the method believes each attribute's sides (and continuous sign) reversed."""
    broken = copy.copy(model)
    broken.set_boundaries(-model.normals, -model.offsets, model.gains)
    return broken


def broken_flow(model):
    """An untrained flow (the same latent classifier reads the original labels)."""
    broken = copy.copy(model)
    untrained = lambda: build_transform(DIM, model.schema.n_coords, model.couplings, model.hidden, model.layers)
    broken.transform = seeded(torch.Generator().manual_seed(5), untrained)
    return broken


def broken_lace(model):
    """No Langevin/ODE steps: samples stay prior draws, edits leave w as it was."""
    broken = copy.copy(model)
    broken.steps = broken.edit_steps = 0
    return broken


def broken_rejection(model):
    """An untrained latent classifier decides what to keep."""
    broken = copy.copy(model)
    broken.classifier = seeded(torch.Generator().manual_seed(5), lambda: LatentClassifier(model.schema, DIM))
    return broken


METHODS = {  # name: (the method, the same method with its core step broken)
    "interfacegan": (lambda: InterFaceGAN(), broken_interfacegan),
    "conditional_flow": (lambda: ConditionalFlow(epochs=60, lr=3e-3, classifier=CLASSIFIER), broken_flow),
    "lace": (lambda: LACE(classifier=CLASSIFIER), broken_lace),
    "rejection": (lambda: RejectionSampling(max_draws=1000, classifier=CLASSIFIER), broken_rejection),
}


@pytest.fixture(scope="module", params=list(METHODS))
def method(request, toy):
    """(name, the fitted method, its broken twin), fitted once per module."""
    make, breaker = METHODS[request.param]
    model = fitted(make(), toy)
    return request.param, model, breaker(model)


# Methods that compose a never-labelled combination from per-attribute parts (boundaries, energies, a classifier's
# checks); a conditional flow has to generalise from the combinations it saw: 0.75-0.9 here, varying with the seed and
# the thread count, so it must only beat its untrained twin (< 0.1) by far.
COMPOSES = {"interfacegan", "lace", "rejection"}


def test_generation_hits_requested_combinations_even_unseen(method):
    name, model, _ = method
    rates = {str(t): hit_rate(model, t) for t in (SEEN, UNSEEN)}
    assert rates[str(SEEN)] >= PASS and rates[str(UNSEEN)] >= (PASS if name in COMPOSES else 0.5), f"{name}: {rates}"
    if name == "rejection":  # about 1/6 of prior draws are lit and blue: the last call's report says so
        assert 0.05 < model.acceptance < 0.5 and model.shortfall == 0, (model.acceptance, model.shortfall)
    if name == "lace":  # the paper's ODE sampler, on the same classifier
        ode = copy.copy(model)
        ode.sampler = "ode"
        assert min(hit_rate(ode, t) for t in (SEEN, UNSEEN)) >= PASS


def test_generation_negative_control_misses(method):
    name, _, broken = method
    rates = {str(t): hit_rate(broken, t) for t in (SEEN, UNSEEN)}
    assert max(rates.values()) < PASS, f"{name} with its core step broken still hits: {rates}"


@pytest.mark.parametrize("attribute", ["lit", "hue", "size"])
def test_editing_changes_one_attribute_and_keeps_the_others(method, attribute):
    name, model, broken = method
    if not model.can_edit:
        with pytest.raises(NotImplementedError, match="only generates"):
            model.manipulate(torch.zeros(3, DIM), {attribute: np.nan})
        return
    success, preservation = edit_scores(model, attribute)
    broken_success, _ = edit_scores(broken, attribute)
    assert success >= EDIT_PASS and preservation >= PASS, f"{name} editing {attribute}: success {success}, kept {preservation}"
    assert broken_success < EDIT_PASS, f"{name} with its core step broken still edits {attribute}: success {broken_success}"


@pytest.mark.parametrize("conditional", [True, False])
def test_interfacegan_conditional_edit_keeps_the_other_boundaries(toy, conditional):
    """The paper's projection: an edit along the projected normal leaves every other attribute's distance as it was;
    the plain normal (not orthogonal to the others' normals, estimated from confounded labels) moves them."""
    model = fitted(InterFaceGAN(conditional=conditional), toy)
    w = toy[0][:100]
    moved = model.distances(model.manipulate(w, {"lit": 1})) - model.distances(w)
    others = moved[:, model.schema.slices["lit"].stop :].abs().max().item()
    assert (others < 1e-4) if conditional else (others > 0.05), others


def test_a_fitted_gaussian_prior_draws_like_its_latents_and_scores_them():
    """For a VAE the baselines start from a Gaussian fitted to the encoded latents, not N(0, I)."""
    g = torch.Generator().manual_seed(0)
    latents = 3.0 + torch.randn(5000, 4, generator=g) @ torch.tensor([[2.0, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0.5, 0], [0, 0, 0, 1]])
    prior = GaussianPrior(latents)
    drawn = prior(5000, g)
    assert torch.allclose(drawn.mean(0), latents.mean(0), atol=0.15) and torch.allclose(torch.cov(drawn.T), torch.cov(latents.T), atol=0.3)
    assert prior.energy(latents.mean(0, keepdim=True)) < prior.energy(latents.mean(0, keepdim=True) + 3)
    cold = RejectionSampling(prior=prior).draw_prior(1000, 0.0, g)
    assert torch.allclose(cold, prior.mean.expand(1000, -1))  # temperature 0: the prior's centre, not the origin


def test_lace_on_a_gaussian_prior_with_a_near_constant_direction_stays_stable(toy):
    """A VAE's latents have directions of almost no spread; unpreconditioned Langevin steps blow up along them."""
    w, context, schema = toy
    squeezed = w.clone()
    squeezed[:, -1] *= 0.01  # a direction of almost no spread, as a VAE's unused latent dimensions
    model = LACE(classifier=CLASSIFIER, prior=GaussianPrior(squeezed)).fit(squeezed, context, schema, torch.Generator().manual_seed(0))
    drawn, _ = model.sample_latents(pd.DataFrame([SEEN]), 200, 0.5, torch.Generator().manual_seed(1))
    assert torch.isfinite(drawn).all() and drawn[:, -1].abs().max() < 0.2
