"""The flow training as it was when #14 was filed (commit f1de230), kept to time today's loop against it.

Same model and maths as `plugen_core.flow`: nflows' masked couplings (index gathers and scatters per coupling), the
prior's log-density of that commit (read from git: every branch of every coordinate, widths recomputed per call),
Adam and gradient clipping one tensor at a time, a tqdm bar and three host syncs per batch.
"""
from __future__ import annotations

import subprocess
import types
from pathlib import Path

import torch
from nflows.transforms import AdditiveCouplingTransform, CompositeTransform
from tqdm import tqdm

from plugen_core import flow

COMMIT = "f1de230"
REPO = Path(__file__).resolve().parents[1]


def prior_module() -> types.ModuleType:
    """plugen_core/prior.py as of COMMIT, from this clone's git history."""
    source = subprocess.run(["git", "show", f"{COMMIT}:plugen_core/prior.py"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    module = types.ModuleType("filed_prior")
    exec(compile(source, f"{COMMIT}:plugen_core/prior.py", "exec"), module.__dict__)
    return module


def model_like(model: flow.PluGeN) -> flow.PluGeN:
    """`model` rebuilt the filed way, with the same weights: masked couplings sharing its coupling nets, its ActNorm,
    and the filed prior with its statistics."""
    dim = model.prior.dim
    nets = model.transform._transforms[0].nets
    steps = [AdditiveCouplingTransform((torch.arange(dim) + k) % 2, lambda i, o, net=net: net) for k, net in enumerate(nets)]
    p = model.prior
    prior = prior_module().PluGeNPrior(dim, p.groups, p.positive_rate, p.cont_mean, p.cont_std, float(p.sigma), p.balanced, p.continuous_scale)
    return flow.PluGeN(CompositeTransform(steps + [model.transform._transforms[-1]]), prior, model.schema, model.config)


def epoch(model, opt, w, context, labelled, order, batch_size, grad_clip, input_noise, generator, device) -> float:
    """One epoch of the filed loop; returns the mean NLL."""
    total = 0.0
    for idx in tqdm(order.split(batch_size), leave=False):
        batch = w[idx].to(device)
        batch = batch + input_noise * torch.randn(batch.shape, generator=generator).to(device)
        nll = -model.log_prob(batch, context[idx].to(device))
        opt.zero_grad()
        nll.mean().backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        nll = nll.detach().cpu()
        total += nll.sum().item()
        nll[labelled[idx]].sum().item(), nll[~labelled[idx]].sum().item()  # the filed loop's per-split sums
    return total / len(order)


def optimiser(model, lr: float) -> torch.optim.Optimizer:
    return torch.optim.Adam(model.parameters(), lr=lr)


