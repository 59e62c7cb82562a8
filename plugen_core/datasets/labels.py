"""Attribute tables of bring-your-own datasets: reading (CSV, parquet, CelebA's `list_attr_celeba.txt`), inferring
each attribute's kind, splitting rows, and choosing the plugin's labelled subset (shared with the shapes benchmark)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from plugen_core.io import PlugenInputError, read_table, require_file


def read_labels(path: str | Path) -> pd.DataFrame:
    """A labels table. `.txt` is CelebA's layout: a row count, a header of attribute names, then one row per image
    (file name, then -1/1 per attribute); the file names become the `file` column."""
    path = require_file(path, "labels")
    if path.suffix != ".txt":
        return read_table(path)
    lines = path.read_text().splitlines()
    try:
        count, names = int(lines[0].strip()), lines[1].split()
    except (IndexError, ValueError) as e:
        raise PlugenInputError(f"{path}: not in CelebA's layout (line 1: the row count, line 2: the attribute names)") from e
    rows = [line.split() for line in lines[2:] if line.strip()]
    bad = next((i for i, r in enumerate(rows) if len(r) != len(names) + 1), None)
    if bad is not None:
        raise PlugenInputError(f"{path}: line {bad + 3} has {len(rows[bad])} fields; expected a file name and {len(names)} values")
    if len(rows) != count:
        raise PlugenInputError(f"{path}: line 1 announces {count} rows but the file has {len(rows)}")
    table = pd.DataFrame([r[1:] for r in rows], columns=names)
    for name in names:
        table[name] = _to_number(table[name], name, path)
    table.insert(0, "file", [r[0] for r in rows])
    return table


def _to_number(col: pd.Series, name: str, path: Path) -> pd.Series:
    values = pd.to_numeric(col, errors="coerce")
    bad = col[values.isna() & col.notna()]
    if len(bad):
        raise PlugenInputError(f"{path}: column '{name}' has non-numeric value(s) {sorted(map(str, bad.unique()))[:5]}")
    return values


RESERVED = ("id", "split")  # columns every labels table gets from the pipeline


def infer_spec(table: pd.DataFrame, names: list[str], path: str | Path) -> tuple[pd.DataFrame, list[dict]]:
    """The attribute spec of columns `names` and the table with binary columns as 0/1: values in {-1, 1} or {0, 1}
    are binary, text is categorical (its classes sorted), other numbers are continuous."""
    missing = [n for n in names if n not in table]
    if missing:
        raise PlugenInputError(f"{path}: unknown column(s) {missing}; the table has {list(table.columns)}")
    reserved = [n for n in names if n in RESERVED]
    if reserved:
        raise PlugenInputError(f"{path}: column(s) {reserved} cannot be attributes (the pipeline numbers and splits the rows itself); "
                               "list the attributes in the dataset's `attributes:`, or rename the columns")
    table, spec = table.copy(), []
    for name in names:
        col = table[name]
        present = col.dropna()
        if present.empty:
            raise PlugenInputError(f"{path}: column '{name}' holds no value")
        numeric = pd.to_numeric(present, errors="coerce")
        if len(present) > 1 and present.nunique() == len(present) and numeric.isna().all():
            raise PlugenInputError(f"{path}: column '{name}' has a different value in every row ({present.iloc[0]!r}, {present.iloc[1]!r}, ...): an id, not an attribute; list the attributes in the dataset's `attributes:`")
        if numeric.notna().all():
            values = set(numeric.unique())
            stray = _stray_in_binary(numeric)
            if stray is not None:
                raise PlugenInputError(f"{path}: column '{name}' is binary but for value {numeric[stray]:g} in row {stray}; fix that label or drop the row")
            if values <= {-1, 1} or values <= {0, 1}:
                table[name] = (pd.to_numeric(col) == 1).astype(float).where(col.notna())
                spec.append({"name": name, "kind": "binary"})
            else:
                table[name] = pd.to_numeric(col)
                spec.append({"name": name, "kind": "continuous", "low": float(numeric.min()), "high": float(numeric.max())})
        elif numeric.isna().all():
            spec.append({"name": name, "kind": "categorical", "classes": sorted(map(str, present.unique()))})
        else:
            bad = sorted(map(str, present[numeric.isna()].unique()))[:5]
            raise PlugenInputError(f"{path}: column '{name}' mixes numbers with non-numeric value(s) {bad}")
    return table, spec


def _stray_in_binary(numeric: pd.Series):
    """The row of the first value outside a {0, 1} or {-1, 1} coding that covers at least 99% of the column (a typo in
    a binary column, which would otherwise silently make it continuous); None when there is no such coding."""
    for coding in ({0, 1}, {-1, 1}):
        inside = numeric.isin(coding)
        if not inside.all() and inside.mean() >= 0.99 and numeric[inside].nunique() == 2:
            return numeric.index[~inside.to_numpy()][0]
    return None


def assign_splits(n: int, fractions: dict[str, float], rng: np.random.Generator) -> np.ndarray:
    """A split name per row: `fractions` of the rows (shuffled) for each non-train split, the rest train."""
    split = np.full(n, "train", dtype=object)
    order, start = rng.permutation(n), 0
    for name, fraction in fractions.items():
        count = int(round(fraction * n))
        split[order[start : start + count]] = name
        start += count
    if start >= n:
        raise PlugenInputError(f"split fractions {fractions} leave no training rows of {n}")
    return split


def is_interval(value) -> bool:
    """A held-out value `[low, high]` of a continuous attribute: a region, not a single value."""
    return isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)


def equals(column: pd.Series, value) -> np.ndarray:
    """Where a label equals `value`, as text or as a number (a binary 1 is 1.0 in a table with missing labels), or, for
    an interval `[low, high]`, lies inside it."""
    if is_interval(value):
        numbers = pd.to_numeric(column, errors="coerce")
        return ((numbers >= value[0]) & (numbers <= value[1])).to_numpy()
    return (column.astype(str) == str(value)).to_numpy() | (column == value).to_numpy()


def matches(df: pd.DataFrame, combination: dict) -> np.ndarray:
    """Rows whose attributes equal every value of `combination`."""
    hit = np.ones(len(df), dtype=bool)
    for name, value in combination.items():
        hit &= equals(df[name], value)
    return hit


def partial_matches(df: pd.DataFrame, combination: dict) -> np.ndarray:
    """Rows holding some values of `combination` with its other attributes missing: half a held-out combination."""
    known, conflict = np.zeros(len(df), dtype=int), np.zeros(len(df), dtype=bool)
    for name, value in combination.items():
        present, same = df[name].notna().to_numpy(), equals(df[name], value)
        known += present & same
        conflict |= present & ~same
    return ~conflict & (known > 0) & (known < len(combination))


def enforce_held_out(labels: pd.DataFrame, held_out: list[dict]) -> tuple[pd.DataFrame, dict]:
    """`labels` with no trace of a held-out combination: rows holding a whole one are dropped, and rows holding part of
    one with the rest missing (a labeller unsure of a colour) lose those labels. Returns the counts too."""
    labels, dropped, blanked = labels.copy(), 0, 0
    for combination in held_out:
        whole = matches(labels, combination)
        dropped += int(whole.sum())
        labels = labels[~whole]
    left = True
    while left:  # blanking half of one combination can leave half of another (a blue circle unsure of its
        left = False  # hollowness loses "circle" and is then half a blue triangle): passes until none is left
        for combination in held_out:
            part = partial_matches(labels, combination)
            left |= bool(part.any())
            for name, value in combination.items():
                hit = part & equals(labels[name], value)
                blanked += int(hit.sum())
                labels[name] = labels[name].where(~hit)
    return labels, {"combinations": held_out, "rows_dropped": dropped, "labels_blanked": blanked}


def check_rules(labelled: dict, spec: list[dict], where: str) -> None:
    """Held-out and correlation rules must name real attributes and values (a continuous attribute: an interval
    `[low, high]`, so that a held-out combination is a region, e.g. high logP at low weight)."""
    unknown = set(labelled) - {"count", "held_out", "correlated"}
    if unknown:  # `size` was this key's name: DVC's run cache leaves keys so named out of a stage's hash
        raise PlugenInputError(f"{where}: unknown key(s) {sorted(unknown)} (known: count, held_out, correlated)" + ("; `size` is now `count`" if "size" in unknown else ""))
    by_name = {a["name"]: a for a in spec}
    for key, needs in (("held_out", ()), ("correlated", ("a", "b", "strength"))):
        rules = labelled.get(key) or []
        if not isinstance(rules, list) or not all(isinstance(r, dict) and set(needs) <= set(r) for r in rules):
            raise PlugenInputError(f"{where}.{key} must be a list of mappings" + (f", each with {list(needs)}" if needs else "") + f", got {rules!r}")
    for combo in labelled.get("held_out") or []:
        for name, value in combo.items():
            if name not in by_name:
                raise PlugenInputError(f"{where}.held_out: unknown attribute '{name}' (known: {sorted(by_name)})")
            a = by_name[name]
            if a["kind"] == "continuous":
                if not is_interval(value) or not value[0] < value[1]:
                    raise PlugenInputError(f"{where}.held_out: '{name}' is continuous; hold out an interval [low, high] with low < high, got {value!r}")
                continue
            allowed = a.get("classes") or [0, 1]
            if value not in allowed:
                raise PlugenInputError(f"{where}.held_out: '{name}' has no value {value!r} (allowed: {allowed})")
    for pair in labelled.get("correlated") or []:
        for key in ("a", "b"):
            if by_name.get(pair[key], {}).get("kind") != "binary":
                raise PlugenInputError(f"{where}.correlated: '{pair[key]}' is not a binary attribute")
        if isinstance(pair["strength"], bool) or not isinstance(pair["strength"], (int, float)) or not 0 < pair["strength"] < 1:
            raise PlugenInputError(f"{where}.correlated: strength must be in (0, 1), got {pair['strength']}")


def select_labelled(labels: pd.DataFrame, rules: dict, rng: np.random.Generator) -> tuple[pd.DataFrame, dict]:
    """The plugin's labelled subset of the training rows that have a label: no trace of a held-out combination
    (`enforce_held_out`), paired binary attributes that agree with probability `strength` (the paper's rare-combination
    setting), at most `count` rows (null: as many as the pairing allows). Returns what was done, for the record."""
    names = [c for c in labels.columns if c not in ("id", "split", "file")]
    pool, record = enforce_held_out(labels[(labels["split"] == "train").to_numpy()], rules.get("held_out") or [])
    pool = pool[pool[names].notna().any(axis=1).to_numpy()]
    weights = np.ones(len(pool))
    for pair in rules.get("correlated") or []:
        a, b = pool[pair["a"]], pool[pair["b"]]
        agree = (a == b).to_numpy() | a.isna().to_numpy() | b.isna().to_numpy()  # an unknown pair says nothing: kept
        weights *= np.where(agree, pair["strength"], 1 - pair["strength"])
    count = rules.get("count")
    if count is not None and (not isinstance(count, int) or isinstance(count, bool) or count < 1):
        raise PlugenInputError(f"labelled.count must be a whole number >= 1 (or null: every eligible row), got {count!r}")
    if not len(pool):
        raise PlugenInputError(f"no labelled training row is left once the held_out combinations {rules.get('held_out') or []} are removed: the plugin would learn from no label")
    if count is None:  # keep each row with probability weight / max: the pairs agree at `strength`, nothing else is lost
        idx = np.flatnonzero(rng.random(len(pool)) < weights / weights.max())
    elif count > len(pool):
        raise PlugenInputError(f"labelled.count {count} exceeds the {len(pool)} eligible labelled training rows")
    else:
        idx = np.sort(rng.choice(len(pool), size=count, replace=False, p=weights / weights.sum()))
    return pool.iloc[idx], record
