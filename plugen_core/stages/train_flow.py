"""Stage `train_flow@<experiment>`: train the PluGeN flow on the frozen backbone's latents and the aligned labels."""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from plugen_core import flow
from plugen_core.resume import TrainingState
from plugen_core.io import PlugenInputError, read_array, read_json, read_table, run_stage, write_table
from plugen_core.schema import Schema
from plugen_core.stages import experiment_stage


def main() -> None:
    cfg, layout, generator, device = experiment_stage(__doc__)
    p = cfg["flow"]
    if not p:
        raise PlugenInputError("params: section 'flow' is missing")

    w, context, schema = training_set(layout, p["use_unlabelled"])
    labelled_context = context[~np.isnan(context).all(axis=1)]
    model = build_plugin(schema, w.shape[1], labelled_context, p).to(device)
    state = TrainingState(f"train_flow@{cfg['name']}", {"flow": p, "seed": cfg["seed"]}, [layout.latents, layout.table, layout.schema])
    history = train(model, w, torch.from_numpy(context), p, generator, state)
    model.cpu().save(layout.plugen)
    write_table(pd.DataFrame(history, columns=flow.HISTORY_COLUMNS), layout.flow_history)
    state.clear()
    seconds = history[-1]["elapsed_s"] if history else 0.0  # 0 epochs: the untrained control
    print(f"[train_flow] {len(w)} latents ({len(labelled_context)} labelled), {len(history)} epochs in {seconds:.1f}s on {device} -> {layout.plugen}, {layout.flow_history}")


def build_plugin(schema: Schema, dim: int, labelled_context: np.ndarray, p: dict) -> flow.PluGeN:
    """An untrained plugin as the `flow` params section describes it."""
    return flow.PluGeN.create(
        schema, dim, labelled_context, p["sigma0"], p["balanced"], p["continuous_sigma_scale"],
        coupling=p["coupling"], couplings=p["couplings"], hidden=p["hidden"], layers=p["layers"],
    )


def train(model: flow.PluGeN, w: torch.Tensor, context: torch.Tensor, p: dict, generator: torch.Generator, state=None, on_epoch=None) -> list[dict]:
    """`flow.fit` with the `flow` params section's schedule."""
    return flow.fit(
        model, w, context, p["epochs"], p["batch_size"], p["lr"], p["sigma0"], p["sigma_gamma"], p["sigma_min"],
        p["grad_clip"], generator, p["labelled_share"], p["input_noise"], p["min_epoch_rows"], state, on_epoch,
    )


def training_set(layout, use_unlabelled: bool) -> tuple[torch.Tensor, np.ndarray, Schema]:
    """The latents of the training split the plugin learns from (all, or the labelled ones only), their encoded labels
    (NaN = unlabelled) and the schema. The baselines are fitted on the same."""
    latents = read_array(layout.latents)
    table = read_table(layout.table)
    schema = Schema.from_dict(read_json(layout.schema))
    if len(latents) != len(table):
        raise PlugenInputError(f"{layout.latents} has {len(latents)} rows but {layout.table} has {len(table)}")
    if latents.shape[1] < schema.n_coords:
        raise PlugenInputError(f"{layout.latents}: {latents.shape[1]}-dim latents cannot hold the {schema.n_coords} attribute coordinates of {schema.names}; use a larger latent_dim")
    rows = (table["split"] == "train").to_numpy() & (table["labelled"].to_numpy() | use_unlabelled)
    return torch.from_numpy(np.ascontiguousarray(latents[rows])), schema.encode(table.loc[rows, schema.names]), schema


if __name__ == "__main__":
    run_stage(main)
