"""Stage `data@<dataset>`: prepare a dataset (render the shapes benchmark, read MOSES molecules, or a bring-your-own
image folder, molecule table or latents table) and choose the plugin's labelled subset. Writes data/<dataset>/:
samples.npy (the data the backbone sees), labels.parquet (id, split and every known attribute value), labelled.parquet
(what the plugin may read) and attributes.json (the attribute spec)."""
from __future__ import annotations

import argparse

import numpy as np

from plugen_core import config
from plugen_core.datasets import image_folder, latent_table, molecules, shapes
from plugen_core.datasets.labels import check_rules, select_labelled
from plugen_core.io import PlugenInputError, load_params, run_stage, write_array, write_json, write_table
from plugen_core.layout import DatasetLayout

PREPARE = {
    "shapes": shapes.prepare,
    "images": image_folder.prepare,
    "latents": latent_table.prepare,
    "moses": molecules.prepare_moses,
    "molecules": molecules.prepare_table,
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--dataset", required=True, help="an entry of params.yaml datasets")
    args = ap.parse_args()
    params = load_params(args.params)
    entry = config.dataset(params, args.dataset)
    rules = entry.get("labelled")
    if not isinstance(rules, dict) or "held_out" not in rules:
        raise PlugenInputError(f"params: datasets.{args.dataset}.labelled needs at least `held_out: []` (and optionally count, correlated)")
    layout = DatasetLayout(args.dataset)

    rng = np.random.default_rng(params.get("seed", 0))
    samples, labels, spec = PREPARE[entry["source"]](entry, rng)
    check_rules(rules, spec, f"datasets.{args.dataset}.labelled")
    names = [a["name"] for a in spec]
    labelled, record = select_labelled(labels[["id", "split"] + names], rules, rng)
    n_train = int((labels["split"] == "train").sum())
    if rules.get("count") and rules["count"] > 0.1 * n_train:
        print(f"[data] note: labelled.count {rules['count']} is over 10% of {n_train} training rows")

    write_array(samples, layout.samples)
    write_table(labels, layout.labels)
    write_table(labelled[["id"] + names], layout.labelled)
    write_json(spec, layout.attributes)
    counts = labels["split"].value_counts().to_dict()
    print(f"[data] {args.dataset}: {len(samples)} samples of shape {samples.shape[1:]} {counts}, {len(labelled)} labelled ({record['rows_dropped']} rows of held-out combinations dropped) -> {layout.data}/")


if __name__ == "__main__":
    run_stage(main)
