"""PluGeN model: an unconditional nflows transform F (w -> z) plus the label-conditioned prior.

Loss, conditional generation and manipulation are each a few lines on top of the two parts.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from nflows.transforms import ActNorm, CompositeTransform, Transform
from torch import nn

from plugen_core import resume
from plugen_core.io import PlugenInputError, load_checkpoint, save_checkpoint
from plugen_core.prior import PluGeNPrior
from plugen_core.schema import Schema

COUPLINGS = ("additive", "affine")
CHUNK = 1024  # rows per pass of the flow without gradients (generation, editing, classifying)
HISTORY_COLUMNS = ("epoch", "nll", "nll_labelled", "nll_unlabelled", "sigma", "lr", "elapsed_s")  # one row per epoch


class CouplingNet(nn.Module):
    """MLP with LeakyReLU; takes (and ignores) the nflows context: F is unconditional."""

    def __init__(self, in_features: int, out_features: int, hidden: int, layers: int):
        super().__init__()
        sizes = [in_features] + [hidden] * (layers - 1) + [out_features]
        blocks: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            blocks.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                blocks.append(nn.LeakyReLU(0.2))
        nn.init.zeros_(blocks[-1].weight)  # each coupling starts as the identity
        nn.init.zeros_(blocks[-1].bias)
        self.net = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor, context=None) -> torch.Tensor:
        return self.net(x)


class AlternatingCouplings(Transform):
    """NICE's stack of couplings (RealNVP's, `affine`, with nflows' bounded scale): coupling k adds a function of the
    even coordinates to the odd ones when k is even, of the odd ones to the even ones when k is odd. nflows'
    CouplingTransform takes any mask, so each coupling gathers and scatters coordinates by index (and, additive, takes
    the log of a scale of ones); here the halves are split once and joined once. The same function as nflows' masked
    couplings with the same nets (tests/test_flow.py)."""

    def __init__(self, dim: int, couplings: int, affine: bool, net):
        super().__init__()
        evens, odds, per = (dim + 1) // 2, dim // 2, 2 if affine else 1
        self.affine = affine
        self.nets = nn.ModuleList(net(evens, odds * per) if k % 2 == 0 else net(odds, evens * per) for k in range(couplings))

    def forward(self, inputs, context=None):
        return self._run(inputs, inverse=False)

    def inverse(self, inputs, context=None):
        return self._run(inputs, inverse=True)

    def _run(self, inputs: torch.Tensor, inverse: bool) -> tuple[torch.Tensor, torch.Tensor]:
        halves = [inputs[:, 0::2], inputs[:, 1::2]]
        logabsdet = inputs.new_zeros(len(inputs))
        order = range(len(self.nets))
        for k in reversed(order) if inverse else order:
            given, moved = k % 2, 1 - k % 2
            params, x = self.nets[k](halves[given]), halves[moved]
            if not self.affine:
                halves[moved] = x - params if inverse else x + params
                continue
            shift, scale = params[:, : x.shape[1]], torch.sigmoid(params[:, x.shape[1] :] + 2) + 1e-3
            halves[moved] = (x - shift) / scale if inverse else x * scale + shift
            log_scale = torch.log(scale).sum(dim=1)
            logabsdet = logabsdet - log_scale if inverse else logabsdet + log_scale
        outputs = inputs.new_empty(inputs.shape)
        outputs[:, 0::2], outputs[:, 1::2] = halves
        return outputs, logabsdet


def build_transform(dim: int, couplings: int = 4, hidden: int = 256, layers: int = 4, coupling: str = "additive") -> CompositeTransform:
    """NICE: couplings alternating between the even and the odd coordinates, then a learned per-coordinate scaling
    (NICE's last layer)."""
    if coupling not in COUPLINGS:
        raise PlugenInputError(f"flow.coupling must be one of {list(COUPLINGS)}, got '{coupling}'")
    net = lambda i, o: CouplingNet(i, o, hidden, layers)  # noqa: E731
    return CompositeTransform([AlternatingCouplings(dim, couplings, coupling == "affine", net), ActNorm(dim)])


class PluGeN(nn.Module):
    def __init__(self, transform: CompositeTransform, prior: PluGeNPrior, schema: Schema, config: dict):
        super().__init__()
        self.transform = transform
        self.prior = prior
        self.schema = schema
        self.config = config  # build_transform kwargs, stored for reloading

    @classmethod
    def create(
        cls, schema: Schema, dim: int, labelled_context: np.ndarray, sigma: float, balanced: bool = True, continuous_scale: float = 1.0, **transform_kwargs
    ) -> "PluGeN":
        groups = [(a.kind, schema.slices[a.name].start, schema.slices[a.name].stop) for a in schema.attributes]
        prior = PluGeNPrior.from_labels(dim, groups, labelled_context, sigma, balanced, continuous_scale)
        config = {"dim": dim, **transform_kwargs}
        return cls(build_transform(**config), prior, schema, config)

    def log_prob(self, w: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        z, logdet = self.transform(w)
        return self.prior.log_prob(z, context=context) + logdet

    def loss(self, w: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        return -self.log_prob(w, context).mean()

    def to_z(self, w: torch.Tensor) -> torch.Tensor:
        return self._in_chunks(lambda rows: self.transform(rows)[0], w)

    def to_w(self, z: torch.Tensor) -> torch.Tensor:
        return self._in_chunks(lambda rows: self.transform.inverse(rows)[0], z)

    @staticmethod
    def _in_chunks(fn, x: torch.Tensor) -> torch.Tensor:
        """`fn` over CHUNK rows at a time when no gradient is wanted: 10,000 latents in one pass allocate 10 MB per
        layer, whose page faults made the pass 2x slower on a CPU (221 against 112 ms)."""
        if torch.is_grad_enabled() or len(x) <= CHUNK:
            return fn(x)
        return torch.cat([fn(rows) for rows in x.split(CHUNK)])

    def context(self, targets: pd.DataFrame | dict, extrapolate: bool = False) -> torch.Tensor:
        """Encode requested attribute values (missing columns or NaN = unspecified). A continuous value outside the
        range the plugin was trained on is refused unless `extrapolate`."""
        if isinstance(targets, dict):
            targets = pd.DataFrame([targets])
        return torch.from_numpy(self.schema.encode(targets, strict_range=not extrapolate))

    @torch.no_grad()
    def sample_latents(
        self, targets: pd.DataFrame | dict, n_per_target: int = 1, temperature: float = 1.0, style_temperature: float = 1.0, generator=None, extrapolate: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Backbone latents w with the requested attributes; unspecified ones are drawn from their marginals.
        Returns (w, the full label context each sample was drawn for)."""
        context = self.context(targets, extrapolate).repeat_interleave(n_per_target, dim=0)
        labels = self.prior.fill_missing(context, generator)
        z = self.prior.sample_given(labels, temperature, style_temperature, generator)  # on the prior's device
        return self.to_w(z), labels

    @torch.no_grad()
    def manipulate(self, w: torch.Tensor, edits: pd.DataFrame | dict, extrapolate: bool = False) -> torch.Tensor:
        """Move the edited attributes' coordinates of z = F(w) to their target means; keep every other coordinate."""
        z = self.to_z(w)
        target = self.prior.means(self.context(edits, extrapolate).to(z.device)).expand(z.shape[0], -1)
        attr = torch.where(torch.isnan(target), z[:, : self.prior.n_attr], target)
        return self.to_w(torch.cat([attr, z[:, self.prior.n_attr :]], dim=1))

    @torch.no_grad()
    def classify(self, w: torch.Tensor) -> pd.DataFrame:
        """The free classifier: each attribute's value read off z = F(w) by Bayes' rule under the prior (original
        units), and `p(<name>=<class>)` columns with the probability of every class of a discrete attribute."""
        posterior = self.prior.posterior(self.to_z(w.to(self._device()))).cpu().numpy()
        out = self.schema.decode(posterior)
        for a in self.schema.attributes:
            block = posterior[:, self.schema.slices[a.name]]
            if a.kind == "categorical":
                out = out.assign(**{f"p({a.name}={c})": block[:, i] for i, c in enumerate(a.classes)})
            elif a.kind == "binary":
                out[f"p({a.name}=1)"] = block[:, 0]
        return out

    @torch.no_grad()
    def traverse(self, w: torch.Tensor, coordinate: int, values) -> torch.Tensor:
        """(len(values), N, D) latents: z = F(w) with one coordinate set to each value in turn, mapped back."""
        z = self.to_z(w.to(self._device()))
        steps = []
        for value in values:
            z_v = z.clone()
            z_v[:, coordinate] = float(value)
            steps.append(self.to_w(z_v))
        return torch.stack(steps)

    def _device(self) -> torch.device:
        return next(self.parameters()).device

    def save(self, path: str | Path, extra: dict | None = None) -> None:
        save_checkpoint(
            {
                "config": self.config,
                "prior_config": self.prior.config(),
                "schema": self.schema.to_dict(),
                "state_dict": self.state_dict(),
                **(extra or {}),
            },
            path,
        )

    @classmethod
    def load(cls, path: str | Path) -> "PluGeN":
        ckpt = load_checkpoint(path, ("config", "prior_config", "schema", "state_dict"))
        schema = Schema.from_dict(ckpt["schema"])
        state, pc = ckpt["state_dict"], ckpt["prior_config"]
        try:
            prior = PluGeNPrior(
                pc["dim"], pc["groups"], state["prior.positive_rate"], state["prior.cont_mean"], state["prior.cont_std"],
                balanced=pc["balanced"], continuous_scale=pc["continuous_scale"],
            )
            model = cls(build_transform(**ckpt["config"]), prior, schema, ckpt["config"])
        except (KeyError, TypeError) as e:
            raise PlugenInputError(f"{path}: checkpoint lacks or mangles a field of the plugin ({type(e).__name__}: {e})") from e
        try:
            model.load_state_dict(state)
        except RuntimeError as e:
            raise PlugenInputError(f"{path}: checkpoint does not match its stored architecture ({e})") from e
        return model.eval()


def sigma_schedule(epoch: int, sigma0: float, gamma: float, sigma_min: float) -> float:
    return max(sigma_min, sigma0 * gamma**epoch)


def fit(
    model: PluGeN,
    w: torch.Tensor,
    context: torch.Tensor,
    epochs: int,
    batch_size: int,
    lr: float,
    sigma0: float,
    sigma_gamma: float,
    sigma_min: float,
    grad_clip: float,
    generator: torch.Generator,
    labelled_share: float = 0.0,
    input_noise: float = 0.0,
    min_epoch_rows: int = 0,
    state: resume.TrainingState | None = None,
    on_epoch: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Maximum likelihood under the PluGeN prior; rows whose context is all NaN are unlabelled. With 0 epochs the
    flow stays the identity (couplings start at zero, ActNorm initialises in its first training step).
    `labelled_share`: the share of each epoch's rows drawn from labelled ones (they are repeated), so a few
    labels are not drowned by many unlabelled latents; 0 keeps the natural share.
    `input_noise`: std of Gaussian noise added to w in training. With few labels the flow otherwise
    memorises them (perfect on labelled latents, far worse on held-out ones); noise makes it learn
    attribute directions that hold in a neighbourhood of each latent.
    `min_epoch_rows`: each epoch draws at least this many rows (repeating them), so a flow fitted on a few labelled
    latents alone takes as many steps, under the same sigma schedule, as one fitted beside many unlabelled ones.
    `state`: where the loop saves each epoch and resumes from (plugen_core/resume.py).
    `on_epoch`: called with each epoch's history row (e.g. to score held-out data); its time is kept off the clock."""
    if epochs < 0:
        raise PlugenInputError(f"flow.epochs must be >= 0 (0: an untrained flow, the negative control), got {epochs}")
    device = model._device()
    labelled = ~torch.isnan(context).all(dim=1)
    w, context = w.to(device), context.to(device)  # moved once; batches are gathered where they live
    parameters = list(model.parameters())
    opt = optimiser(parameters, lr)
    history: list[dict] = []
    epochs_left = resume.epochs(state, epochs, history, generator, model=model, optimiser=opt)
    start = time.perf_counter() - (history[-1]["elapsed_s"] if history else 0.0)  # a resumed run's clock goes on
    for epoch in epochs_left:
        model.train()
        sigma = sigma_schedule(epoch, sigma0, sigma_gamma, sigma_min)
        model.prior.set_sigma(sigma)
        order = epoch_order(labelled, labelled_share, generator, min_epoch_rows)
        nlls = []  # per row, read once per epoch: no host sync per batch
        for idx in order.split(batch_size):
            noise = input_noise * torch.randn((len(idx), w.shape[1]), generator=generator)
            nlls.append(train_step(model, opt, w[idx] + noise.to(device), context[idx], grad_clip, parameters))
        nll, lab = torch.cat(nlls).cpu().double(), labelled[order]
        row = {
            "epoch": epoch + 1,
            "nll": nll.mean().item(),
            "nll_labelled": nll[lab].mean().item() if lab.any() else float("nan"),
            "nll_unlabelled": nll[~lab].mean().item() if (~lab).any() else float("nan"),
            "sigma": sigma,
            "lr": lr,
            "elapsed_s": time.perf_counter() - start,
        }
        history.append(row)
        if on_epoch is not None:
            paused = time.perf_counter()
            on_epoch(row)
            start += time.perf_counter() - paused
        print(f"[train_flow] epoch {row['epoch']}/{epochs} nll {row['nll']:.3f} labelled {row['nll_labelled']:.3f} sigma {sigma:.3f}", flush=True)
    return history


def optimiser(parameters, lr: float) -> torch.optim.Optimizer:
    """Adam, fused: its update is one kernel for every parameter rather than a dozen ops per tensor."""
    return torch.optim.Adam(parameters, lr=lr, fused=True)


def train_step(model: PluGeN, opt: torch.optim.Optimizer, w: torch.Tensor, context: torch.Tensor, grad_clip: float, parameters: list) -> torch.Tensor:
    """One optimiser step on a batch; returns each row's NLL, left on the device (reading it would sync).
    `parameters`: the model's, listed once (walking the module tree every step cost 3% of one)."""
    nll = -model.log_prob(w, context)
    opt.zero_grad()
    nll.mean().backward()
    torch.nn.utils.clip_grad_norm_(parameters, grad_clip, foreach=True)
    opt.step()
    return nll.detach()


def epoch_order(labelled: torch.Tensor, labelled_share: float, generator: torch.Generator, min_rows: int = 0) -> torch.Tensor:
    """A shuffled epoch of row indices in which labelled rows make up about `labelled_share`, repeated whole to at
    least `min_rows` rows."""
    lab, unl = torch.nonzero(labelled).flatten(), torch.nonzero(~labelled).flatten()
    rows = torch.arange(len(labelled))
    if labelled_share > 0 and len(lab) and len(unl):
        rows = torch.cat([unl, lab.repeat(max(1, round(labelled_share / (1 - labelled_share) * len(unl) / len(lab))))])
    if 0 < len(rows) < min_rows:
        rows = rows.repeat(-(-min_rows // len(rows)))
    return rows[torch.randperm(len(rows), generator=generator)]
