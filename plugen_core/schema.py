"""Attribute schema: names, kinds, classes and normalisation, stored once and read by every stage.

Each attribute owns coordinates of the flow's output z: one for a binary or continuous attribute,
C for a categorical one (one per class). `encode` turns a labels table into that coordinate
layout (1/0 for binary-like coordinates, the normalised value for continuous ones, NaN = missing).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from plugen_core.io import PlugenInputError

KINDS = ("binary", "categorical", "continuous")


@dataclass
class Attribute:
    name: str
    kind: str
    classes: list[str] = field(default_factory=list)  # categorical only
    low: float | None = None  # continuous: normalisation min/max, mapped to [-1, 1]
    high: float | None = None
    unit: str = ""

    @property
    def width(self) -> int:
        return len(self.classes) if self.kind == "categorical" else 1

    @property
    def range(self) -> float:
        return float(self.high - self.low)

    def normalise(self, values: np.ndarray) -> np.ndarray:
        return 2 * (values - self.low) / self.range - 1

    def denormalise(self, values: np.ndarray) -> np.ndarray:
        return (np.asarray(values) + 1) / 2 * self.range + self.low


class Schema:
    def __init__(self, attributes: list[Attribute]):
        names = [a.name for a in attributes]
        if len(set(names)) != len(names):
            raise PlugenInputError(f"schema: duplicate attribute names in {names}")
        for a in attributes:
            if a.kind not in KINDS:
                raise PlugenInputError(f"schema: attribute '{a.name}' has unknown kind '{a.kind}' (expected one of {KINDS})")
            if a.kind == "categorical" and len(a.classes) < 2:
                raise PlugenInputError(f"schema: categorical attribute '{a.name}' needs at least 2 classes")
            if a.kind == "continuous" and (a.low is None or a.high is None or not a.high > a.low):
                raise PlugenInputError(f"schema: continuous attribute '{a.name}' needs low < high, got {a.low}, {a.high}")
        self.attributes = attributes
        offsets = np.cumsum([0] + [a.width for a in attributes])
        self.slices = {a.name: slice(int(o), int(o + a.width)) for a, o in zip(attributes, offsets)}
        self.n_coords = int(offsets[-1])

    @property
    def names(self) -> list[str]:
        return [a.name for a in self.attributes]

    def __getitem__(self, name: str) -> Attribute:
        for a in self.attributes:
            if a.name == name:
                return a
        raise PlugenInputError(f"unknown attribute '{name}'; the schema has {self.names}")

    def to_dict(self) -> dict:
        return {"attributes": [asdict(a) for a in self.attributes]}

    @classmethod
    def from_dict(cls, d: dict) -> "Schema":
        try:
            return cls([Attribute(**a) for a in d["attributes"]])
        except (KeyError, TypeError) as e:
            raise PlugenInputError(f"schema: malformed attribute entry ({e})") from e

    @classmethod
    def from_spec(cls, spec: list[dict], labelled: pd.DataFrame) -> "Schema":
        """A schema whose continuous normalisation is the min/max of the labelled data."""
        attrs = []
        for a in spec:
            a = dict(a)
            if a["kind"] == "continuous":
                if a["name"] not in labelled:
                    raise PlugenInputError(f"labels: continuous attribute '{a['name']}' has no column to normalise with")
                col = _numeric(labelled, a["name"]).dropna()
                if col.empty:
                    raise PlugenInputError(f"labels: continuous attribute '{a['name']}' has no labelled value to normalise with")
                a["low"], a["high"] = float(col.min()), float(col.max())
            attrs.append(Attribute(**a))
        return cls(attrs)

    def encode(self, labels: pd.DataFrame, strict_range: bool = False) -> np.ndarray:
        """(N, n_coords) float32 context: 1/0 per binary-like coordinate, normalised continuous values, NaN = missing.

        Every schema attribute must be a column (a column of NaN means unlabelled); unknown columns are refused.
        """
        unknown = [c for c in labels.columns if c not in self.names]
        if unknown:
            raise PlugenInputError(f"labels: unknown attribute(s) {unknown}; the schema has {self.names}")
        out = np.full((len(labels), self.n_coords), np.nan, dtype=np.float32)
        for a in self.attributes:
            if a.name not in labels:
                continue
            sl = self.slices[a.name]
            col = labels[a.name]
            present = col.notna().to_numpy()
            if a.kind == "binary":
                out[present, sl.start] = _binary(col[present], a.name)
            elif a.kind == "categorical":
                values = col[present].astype(str)
                bad = sorted(set(values) - set(a.classes))
                if bad:
                    raise PlugenInputError(f"labels: attribute '{a.name}' has value(s) {bad} outside its classes {a.classes}")
                onehot = (values.to_numpy()[:, None] == np.array(a.classes)[None, :]).astype(np.float32)
                out[np.flatnonzero(present), sl] = onehot
            else:
                values = _numeric(labels, a.name)[present].to_numpy(dtype=np.float64)
                outside = np.flatnonzero((values < a.low) | (values > a.high)) if strict_range else []
                if len(outside):
                    row = np.flatnonzero(present)[outside[0]]
                    raise PlugenInputError(f"'{a.name}' = {values[outside[0]]:g} (row {row}) is outside the data's range [{a.low:g}, {a.high:g}]; ask for extrapolation explicitly to allow it")
                out[present, sl.start] = a.normalise(values)
        return out

    def decode(self, context: np.ndarray) -> pd.DataFrame:
        """Inverse of `encode` for fully specified rows: class = argmax, binary = coordinate > 0.5."""
        cols = {}
        for a in self.attributes:
            block = context[:, self.slices[a.name]]
            if a.kind == "categorical":
                cols[a.name] = np.array(a.classes)[block.argmax(axis=1)]
            elif a.kind == "binary":
                cols[a.name] = (block[:, 0] > 0.5).astype(int)
            else:
                cols[a.name] = a.denormalise(block[:, 0])
        return pd.DataFrame(cols)


def _numeric(df: pd.DataFrame, name: str) -> pd.Series:
    col = pd.to_numeric(df[name], errors="coerce")
    bad = df[name][col.isna() & df[name].notna()]
    if len(bad):
        raise PlugenInputError(f"labels: attribute '{name}' has non-numeric value(s) {sorted(map(str, bad.unique()))[:5]}")
    return col


def _binary(col: pd.Series, name: str) -> np.ndarray:
    """Accept 0/1, -1/+1 (CelebA files) and booleans."""
    values = pd.to_numeric(col.astype(object).replace({True: 1, False: 0}), errors="coerce")
    ok = values.isin([0, 1, -1])
    if not ok.all():
        raise PlugenInputError(f"labels: binary attribute '{name}' has value(s) {sorted(map(str, col[~ok].unique()))[:5]}; expected 0/1 or -1/1")
    return (values.to_numpy() == 1).astype(np.float32)
