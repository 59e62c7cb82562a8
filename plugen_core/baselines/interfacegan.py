"""InterFaceGAN (Shen et al., CVPR 2020): attributes as linear boundaries in latent space.

Fit: per binary-like coordinate (a binary attribute, or one class of a categorical one against the rest) a linear SVM on
the labelled latents; per continuous attribute a linear regression. Each gives a unit normal n and an offset b, so that
d(w) = n.w + b is the signed distance to the boundary (continuous: the value is gain * d).
Edit: move w along a direction e, by the smallest step that puts it `margin` beyond the requested side of its boundary
(a categorical: beyond the requested class's boundary and ahead of every other class by `margin`), or exactly onto the
requested continuous value. Conditional manipulation (the paper's projection, `conditional=True`): e is the normal with
its components along every other attribute's normals removed, so moving along e leaves their distances unchanged.
Generate: draw from the backbone's prior and edit each specified attribute in turn; unspecified attributes are untouched.
"""
from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import LinearRegression
from sklearn.svm import LinearSVC

from plugen_core.baselines.base import Baseline, reading


class InterFaceGAN(Baseline):
    def __init__(self, margin: float = 1.0, conditional: bool = True, svm_c: float = 1.0, prior=None):
        """`margin`: how far beyond a boundary an edit lands, in standard deviations of the latents' distances to it."""
        super().__init__(prior)
        self.margin, self.conditional, self.svm_c = margin, conditional, svm_c

    def _fit(self, w, context, generator) -> None:
        normals, offsets, gains = [], [], []
        for a in self.schema.attributes:
            sl = self.schema.slices[a.name]
            for j in range(sl.start, sl.stop):
                rows = ~torch.isnan(context[:, j])
                x, y = w[rows].numpy(), context[rows, j].numpy()
                if a.kind == "continuous":
                    fitted = LinearRegression().fit(x, y)
                else:
                    fitted = LinearSVC(C=self.svm_c).fit(x, y > 0.5)
                coef, intercept = np.ravel(fitted.coef_), float(np.ravel(fitted.intercept_)[0])
                norm = float(np.linalg.norm(coef))
                normals.append(coef / norm)
                offsets.append(intercept / norm)
                gains.append(norm if a.kind == "continuous" else 1.0)
        self.set_boundaries(torch.tensor(np.array(normals), dtype=torch.float32), torch.tensor(offsets), torch.tensor(gains))
        self.margins = self.margin * (w @ self.normals.T).std(dim=0)

    def set_boundaries(self, normals: torch.Tensor, offsets: torch.Tensor, gains: torch.Tensor) -> None:
        """(n_coords, D) unit normals, offsets and gains; the directions edits move along follow from them."""
        self.normals, self.offsets, self.gains = normals, offsets.float(), gains.float()
        self.directions = normals.clone()
        if self.conditional:
            for a in self.schema.attributes:
                sl = self.schema.slices[a.name]
                others = torch.cat([normals[: sl.start], normals[sl.stop :]])
                self.directions[sl] = _orthogonal_to(normals[sl], others)

    def distances(self, w: torch.Tensor) -> torch.Tensor:
        return w @ self.normals.T + self.offsets

    def read(self, w: torch.Tensor) -> torch.Tensor:
        return reading(self.schema, self.distances(w) * self.gains)

    def _sample(self, target, temperature, generator) -> torch.Tensor:
        return self._edit(self.draw_prior(len(target), temperature, generator), target)

    def _edit(self, w: torch.Tensor, edit: torch.Tensor) -> torch.Tensor:
        w = w.clone()
        for a in self.schema.attributes:
            sl = self.schema.slices[a.name]
            rows = ~torch.isnan(edit[:, sl]).any(dim=1)
            if rows.any():
                direction, step = self._step(a.kind, sl, w[rows], edit[rows, sl])
                w[rows] += step[:, None] * direction
        return w

    def _step(self, kind: str, sl: slice, w: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per row, the direction to move along and how far."""
        d, normals, margin = self.distances(w)[:, sl], self.normals[sl], self.margins[sl]
        if kind == "continuous":
            direction = self.directions[sl][[0]].expand(len(w), -1)
            return direction, (target[:, 0] / self.gains[sl][0] - d[:, 0]) / (normals[0] @ direction[0])
        if kind == "binary":
            side = 2 * target[:, :1] - 1  # +1: the positive side, -1: the negative one
            direction = side * self.directions[sl][0]
            return direction, _smallest_step(side * d, (direction @ normals.T) * side, margin)
        k = target.argmax(dim=1)
        direction = self.directions[sl][k]
        lead = d.gather(1, k[:, None]) - d  # how far class k is ahead of each class (0 for itself: no constraint)
        lead_rate = ((normals[k][:, None] - normals[None]) * direction[:, None]).sum(dim=2)
        values = torch.cat([d.gather(1, k[:, None]), lead], dim=1)
        rates = torch.cat([(direction * normals[k]).sum(dim=1, keepdim=True), lead_rate], dim=1)
        return direction, _smallest_step(values, rates, margin[k][:, None])


def _smallest_step(values: torch.Tensor, rates: torch.Tensor, margin) -> torch.Tensor:
    """The least step >= 0 after which every value (changing at its rate per unit step) is at least `margin`;
    constraints that a step cannot help (rate <= 0) are left out."""
    needed = torch.where(rates > 1e-6, (margin - values) / rates.clamp_min(1e-6), torch.full_like(values, -torch.inf))
    return needed.amax(dim=1).clamp_min(0)


def _orthogonal_to(vectors: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
    """`vectors` with their components in the span of `others` removed, renormalised."""
    if len(others) == 0:
        return vectors
    basis = torch.linalg.qr(others.T.double()).Q.float()  # (D, k) orthonormal basis of the others' span
    projected = vectors - (vectors @ basis) @ basis.T
    return projected / projected.norm(dim=1, keepdim=True).clamp_min(1e-8)

