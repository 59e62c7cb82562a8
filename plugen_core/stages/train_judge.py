"""Stage `train_judge@<dataset>`: train the evaluation judge on real labelled samples of every combination: the
dataset's `judge` split where it has one (bring-your-own latents: rows whose labels the flow never sees), else its
training split. A CNN for images, an MLP for latent vectors. A dataset entry's `pretrained_judge` names a judge shipped
in zoo/checkpoints/ instead (trained there the same way, on the same rendered data), verified against its card. A molecule
dataset's judge is RDKit (`judge.PropertyJudge`): it computes the properties, so nothing is trained."""
from __future__ import annotations

import argparse
import time

import pandas as pd
import torch

from plugen_core import checkpoints, config, threads
from plugen_core.io import PlugenInputError, load_params, read_array, read_json, read_table, resolve_device, run_stage, section, seed_everything, write_table
from plugen_core.judge import Judge, PropertyJudge
from plugen_core.layout import DatasetLayout
from plugen_core.resume import TrainingState
from plugen_core.schema import Schema


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--dataset", required=True, help="an entry of params.yaml datasets")
    args = ap.parse_args()
    params = load_params(args.params)
    entry = config.dataset(params, args.dataset)
    p = section(params, "judge")
    if entry["source"] not in config.MOLECULE_SOURCES and not entry.get("pretrained_judge"):  # a judge is trained here
        config.check("judge", p, config.JUDGE)
    layout = DatasetLayout(args.dataset)
    generator = seed_everything(params.get("seed", 0))
    device = resolve_device(params.get("device", "auto"))
    threads.configure(params.get("threads", "auto"))

    samples = read_array(layout.samples)
    labels = read_table(layout.labels)
    schema = Schema.from_dict({"attributes": read_json(layout.attributes)})
    state = TrainingState(f"train_judge@{args.dataset}", {"judge": p, "seed": params.get("seed", 0)}, [layout.samples, layout.labels])
    start = time.perf_counter()
    if entry["source"] in config.MOLECULE_SOURCES:  # RDKit computes the properties exactly: nothing to train
        judge, how, history = PropertyJudge(schema), f"RDKit computes {schema.names}", []
    elif entry.get("pretrained_judge"):
        judge = shipped_judge(entry["pretrained_judge"], schema, samples.shape[1:], entry.get("pretrained_judge_sha256"))
        how = f"shipped, from {entry['pretrained_judge']}"
        history = []
    else:
        split = "judge" if (labels["split"] == "judge").any() else "train"
        rows = (labels["split"] == split).to_numpy()
        judge = Judge(schema, input_shape=samples.shape[1:], width=p["width"])
        history = judge.fit(samples[rows], labels[rows].reset_index(drop=True), p["epochs"], p["batch_size"], p["lr"], p["augment"], device, generator, state)
        how = f"trained on the {split} split ({int(rows.sum())} rows)"
    if isinstance(judge, Judge):
        judge.cpu()
    judge.save(layout.judge, trained={"seconds": time.perf_counter() - start, "device": str(device), "threads": torch.get_num_threads()})
    write_table(pd.DataFrame(history, columns=["epoch", "loss"]), layout.judge_history)
    state.clear()
    print(f"[train_judge] {args.dataset}: {how} -> {layout.judge}, {layout.judge_history}")


def shipped_judge(weights: str, schema: Schema, input_shape: tuple[int, ...], pinned: str | None = None) -> Judge:
    """A judge shipped in zoo/checkpoints/, verified against its card (and the params' pin), for data of exactly this
    schema and shape."""
    tensors, card = checkpoints.load_verified(weights, "judge", pinned, "pretrained_judge_sha256")
    if card.get("schema") != schema.to_dict():
        raise PlugenInputError(f"{weights}: the judge was trained on other attributes or ranges ({card.get('schema')}) than this dataset's ({schema.to_dict()}); drop pretrained_judge to train one")
    config = checkpoints.check_config(card, {"input_shape": list(input_shape)}, weights)
    judge = Judge(schema, input_shape=tuple(config["input_shape"]), width=config["width"])
    try:
        judge.load_state_dict(tensors)
    except RuntimeError as e:
        raise PlugenInputError(f"{weights}: weights do not fit a judge of its card's config ({e})") from e
    return judge


if __name__ == "__main__":
    run_stage(main)
