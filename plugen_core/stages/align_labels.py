"""Stage `align_labels@<experiment>`: join the labels onto the latent rows (NaN = unlabelled), validate them, and
store the attribute schema (kinds, classes, normalisation) that every later stage reads. Encoded latents take the
dataset's labelled subset; sampled ones (a GAN) are labelled by a classifier first (plugen_core/labelling.py). Either
way no held-out combination, whole or in part, reaches the table the plugin trains on; labelling.json says what was
dropped or blanked."""
from __future__ import annotations

import numpy as np
import pandas as pd

from plugen_core import labelling
from plugen_core.datasets.labels import enforce_held_out
from plugen_core.io import PlugenInputError, read_array, read_json, read_table, run_stage, write_json, write_table
from plugen_core.resume import TrainingState
from plugen_core.schema import Schema
from plugen_core.stages import experiment_stage


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
    cfg, layout, generator, device = experiment_stage(__doc__)
    latents = read_array(layout.latents)
    index = read_table(layout.index)
    spec = read_json(layout.attributes)
    held_out = cfg["dataset"]["labelled"].get("held_out") or []
    labelled, record = enforce_held_out(read_table(layout.labelled), held_out)  # the data stage's choice holds none
    stats = {"source": "dataset labels", "held_out": record}
    state = None  # a labeller's training progress, when one is trained
    if layout.generated.is_file():  # sampled latents: label what they generate
        p = cfg["labeller"]
        if not p:
            raise PlugenInputError(f"params: experiments.{cfg['name']}.labeller is missing: its backbone has no encoder, so a classifier labels its samples")
        samples = read_array(layout.samples)
        state = TrainingState(f"align_labels@{cfg['name']}", {"labeller": p, "seed": cfg["seed"]}, [layout.samples, layout.labelled, layout.attributes])
        labeller = labelling.train_labeller(Schema.from_dict({"attributes": spec}), samples, labelled, p, device, generator, state)
        rules = cfg["dataset"]["labelled"] | ({"count": p["count"]} if "count" in p else {})
        labelled, stats = labelling.label_generated(labeller.cpu(), read_array(layout.generated), index, rules, p["threshold"], np.random.default_rng(cfg["seed"]))
        stats["source"] = "labeller trained on the dataset's labelled subset"
        stats |= labelling.accuracy_on_test(labeller, samples, read_table(layout.labels))
        print(f"[align_labels] labeller accuracy on the dataset's test split {stats.get('labeller.accuracy', float('nan')):.3f}; unsure labels left missing: {stats['unsure']}")
    table, schema = align(latents, index, labelled, spec)
    if not table["labelled"].any():
        raise PlugenInputError(f"experiment {cfg['name']}: no latent row is labelled ({stats['source']}): the plugin would learn from no label")
    write_table(table, layout.table)
    write_json(schema.to_dict(), layout.schema)
    write_json(stats, layout.labelling)
    if state:
        state.clear()
    print(f"[align_labels] {int(table['labelled'].sum())} labelled of {len(table)} latents ({stats['source']}), attributes {schema.names} -> {layout.aligned}/")


if __name__ == "__main__":
    run_stage(main)
