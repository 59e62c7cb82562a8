"""Stage `train_flow`: train the PluGeN flow on the frozen backbone's latents and the aligned labels."""
from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
import torch

from plugen_core import flow, tracking
from plugen_core.io import PlugenInputError, load_params, read_array, read_json, read_table, resolve_device, section, seed_everything, write_table
from plugen_core.schema import Schema


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--latents", default="latents/latents.npy")
    ap.add_argument("--aligned", default="aligned")
    ap.add_argument("--out", default="models/plugen.pt")
    ap.add_argument("--history", default="metrics/flow_history.csv")
    args = ap.parse_args()
    params = load_params(args.params)
    p = section(params, "flow")
    generator = seed_everything(params["seed"])
    device = resolve_device(params.get("device", "auto"))
    run = tracking.join("train_flow", params)

    latents = read_array(args.latents)
    table = read_table(f"{args.aligned}/table.parquet")
    schema = Schema.from_dict(read_json(f"{args.aligned}/schema.json"))
    if len(latents) != len(table):
        raise PlugenInputError(f"{args.latents} has {len(latents)} rows but {args.aligned}/table.parquet has {len(table)}")
    rows = (table["split"] == "train").to_numpy() & (table["labelled"].to_numpy() | p["use_unlabelled"])
    context = schema.encode(table.loc[rows, schema.names])
    labelled_context = context[table.loc[rows, "labelled"].to_numpy()]
    w = torch.from_numpy(np.ascontiguousarray(latents[rows]))

    model = flow.PluGeN.create(
        schema, w.shape[1], labelled_context, p["sigma0"], p["balanced"], p["continuous_sigma_scale"],
        coupling=p["coupling"], couplings=p["couplings"], hidden=p["hidden"], layers=p["layers"],
    ).to(device)
    history = flow.fit(
        model, w, torch.from_numpy(context), p["epochs"], p["batch_size"], p["lr"],
        p["sigma0"], p["sigma_gamma"], p["sigma_min"], p["grad_clip"], generator, p["labelled_share"], p["input_noise"],
    )
    model.cpu().save(args.out)
    write_table(pd.DataFrame(history), args.history)
    run.log_history("flow", history)
    print(f"[train_flow] {len(w)} latents ({len(labelled_context)} labelled) in {history[-1]['elapsed_s']:.1f}s on {device} -> {args.out}, {args.history}")


if __name__ == "__main__":
    tracking.run_stage(main)
