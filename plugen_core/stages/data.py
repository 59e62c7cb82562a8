"""Stage `data`: render the shapes benchmark and choose the plugin's labelled subset."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from plugen_core import tracking
from plugen_core.datasets import shapes
from plugen_core.io import PlugenInputError, load_params, section, write_array, write_json, write_table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", default="data/shapes")
    args = ap.parse_args()
    params = load_params(args.params)
    p = section(params, "data")
    out = Path(args.out)
    spec = shapes.attribute_spec(p["image_size"], p["size_range"], p["x_range"])
    check_rules(p["labelled"], spec)
    if p["labelled"]["size"] > 0.1 * p["n_train"]:
        print(f"[data] note: labelled size {p['labelled']['size']} is over 10% of {p['n_train']} training images")

    rng = np.random.default_rng(params["seed"])
    n = p["n_train"] + p["n_test"]
    labels = shapes.sample_attributes(n, rng, p["size_range"], p["x_range"], p["y_jitter"], p["image_size"])
    labels.insert(0, "id", np.arange(n))
    labels.insert(1, "split", np.where(np.arange(n) < p["n_train"], "train", "test"))
    images = shapes.render(labels, p["image_size"])
    try:
        labelled = shapes.select_labelled(labels, p["labelled"]["size"], p["labelled"]["held_out"], p["labelled"]["correlated"], rng)
    except ValueError as e:
        raise PlugenInputError(f"data.labelled: {e}") from e
    names = [a["name"] for a in spec]

    write_array(images, out / "images.npy")
    write_table(labels, out / "labels.parquet")
    write_table(labelled[["id"] + names], out / "labelled.parquet")
    write_json(spec, out / "attributes.json")
    print(f"[data] {n} images ({p['n_train']} train, {p['n_test']} test), {len(labelled)} labelled -> {out}/")


def check_rules(labelled: dict, spec: list[dict]) -> None:
    """Held-out and correlation rules must name real attributes and values."""
    by_name = {a["name"]: a for a in spec}
    for combo in labelled["held_out"]:
        for name, value in combo.items():
            if name not in by_name:
                raise PlugenInputError(f"data.labelled.held_out: unknown attribute '{name}' (known: {sorted(by_name)})")
            a = by_name[name]
            allowed = a.get("classes") or ([0, 1] if a["kind"] == "binary" else None)
            if allowed is None:
                raise PlugenInputError(f"data.labelled.held_out: '{name}' is continuous; only categorical/binary attributes can be held out")
            if value not in allowed:
                raise PlugenInputError(f"data.labelled.held_out: '{name}' has no value {value!r} (allowed: {allowed})")
    for pair in labelled["correlated"]:
        for key in ("a", "b"):
            if by_name.get(pair[key], {}).get("kind") != "binary":
                raise PlugenInputError(f"data.labelled.correlated: '{pair[key]}' is not a binary attribute")
        if not 0 < pair["strength"] < 1:
            raise PlugenInputError(f"data.labelled.correlated: strength must be in (0, 1), got {pair['strength']}")


if __name__ == "__main__":
    tracking.run_stage(main)
