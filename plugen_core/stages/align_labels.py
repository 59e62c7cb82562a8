"""Stage `align_labels`: join the labelled subset onto the latent rows (NaN = unlabelled), validate it,
and store the attribute schema (kinds, classes, normalisation) that every later stage reads."""
from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

from plugen_core import tracking
from plugen_core.io import PlugenInputError, read_array, read_json, read_table, write_json, write_table
from plugen_core.schema import Schema


def align(latents: np.ndarray, index: pd.DataFrame, labelled: pd.DataFrame, spec: list[dict]) -> tuple[pd.DataFrame, Schema]:
    """The aligned table: one row per latent (id, split, labelled, attributes in original units)."""
    if latents.ndim != 2:
        raise PlugenInputError(f"latents: expected a 2-D array (rows, dim), got shape {latents.shape}")
    if len(latents) != len(index):
        raise PlugenInputError(f"latents have {len(latents)} rows but the index has {len(index)}")
    bad_rows = np.flatnonzero(~np.isfinite(latents).all(axis=1))
    if len(bad_rows):
        raise PlugenInputError(f"latents: {len(bad_rows)} row(s) hold NaN or inf, first at row {bad_rows[0]}")
    if "id" not in labelled:
        raise PlugenInputError("labels: column 'id' is missing")
    names = [a["name"] for a in spec]
    unknown = [c for c in labelled.columns if c not in names + ["id"]]
    if unknown:
        raise PlugenInputError(f"labels: unknown attribute column(s) {unknown}; the attributes are {names}")
    schema = Schema.from_spec(spec, labelled)
    schema.encode(labelled.drop(columns="id"))  # validates every value before anything is written
    unknown_ids = set(labelled["id"]) - set(index["id"])
    if unknown_ids:
        raise PlugenInputError(f"labels: {len(unknown_ids)} id(s) match no latent row, e.g. {sorted(unknown_ids)[:3]}")
    if labelled["id"].duplicated().any():
        raise PlugenInputError(f"labels: duplicated id(s) {labelled['id'][labelled['id'].duplicated()].tolist()[:3]}")
    table = index.merge(labelled, on="id", how="left")
    table.insert(2, "labelled", table["id"].isin(labelled["id"]))
    for name in names:
        if name not in table:
            table[name] = np.nan
    return table[["id", "split", "labelled"] + names], schema


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--latents", default="latents")
    ap.add_argument("--labelled", default="data/shapes/labelled.parquet")
    ap.add_argument("--attributes", default="data/shapes/attributes.json")
    ap.add_argument("--out", default="aligned")
    args = ap.parse_args()
    latents = read_array(f"{args.latents}/latents.npy")
    index = read_table(f"{args.latents}/index.parquet")
    table, schema = align(latents, index, read_table(args.labelled), read_json(args.attributes))
    write_table(table, f"{args.out}/table.parquet")
    write_json(schema.to_dict(), f"{args.out}/schema.json")
    print(f"[align_labels] {int(table['labelled'].sum())} labelled of {len(table)} latents, attributes {schema.names} -> {args.out}/")


if __name__ == "__main__":
    tracking.run_stage(main)
