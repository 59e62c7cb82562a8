"""Stage `backbone@<experiment>`: the experiment's generative backbone. With `pretrained: <file>.safetensors` (the
default experiments: checkpoints shipped in zoo/checkpoints/), the shipped weights, verified against their model card;
without it, pre-trained here on all training samples of the dataset, without labels (a supplied `import` backbone or
`none` trains nothing and is only checked and stored)."""
from __future__ import annotations

import os
import time

import numpy as np
import pandas as pd
import torch

from plugen_core import checkpoints
from plugen_core.backbones import BACKBONES, TRAINING, Backbone, build_backbone
from plugen_core.backbones.base import ImageBackbone
from plugen_core.backbones.identity import LatentSpace
from plugen_core.backbones.molecule_vae import SelfiesVAE, alphabet_of
from plugen_core.io import PlugenInputError, read_array, read_table, run_stage, write_table
from plugen_core.resume import TrainingState
from plugen_core.stages import experiment_stage


def build_for(p: dict, samples: np.ndarray, where: str) -> Backbone:
    """The backbone `p` describes, sized for the dataset's samples; with `pretrained`, a shipped checkpoint's weights,
    verified against its card, and its config, checked against the params' and the data's."""
    kind, settings = p["kind"], {k: v for k, v in p.items() if k not in TRAINING + ("kind", "pretrained", "pretrained_sha256")}
    cls = BACKBONES.get(kind, Backbone)  # an unknown kind is refused, with the known ones, by build_backbone
    if issubclass(cls, ImageBackbone):
        if samples.ndim != 4 or samples.dtype != np.uint8:
            raise PlugenInputError(f"{where}: backbone '{kind}' needs images, but the dataset holds samples of shape {samples.shape[1:]} ({samples.dtype})")
        settings |= {"image_size": samples.shape[1], "channels": samples.shape[3]}
    elif cls is LatentSpace:
        settings = {"latent_dim": samples.shape[1]} | settings
    elif cls is SelfiesVAE:
        if samples.ndim != 1 or samples.dtype.kind != "U":
            raise PlugenInputError(f"{where}: backbone '{kind}' needs SMILES, but the dataset holds samples of shape {samples.shape[1:]} ({samples.dtype})")
        if not p.get("pretrained"):  # a shipped model reads its own alphabet; the data's molecules are checked on reading
            alphabet, longest = alphabet_of(samples)
            settings |= {"alphabet": alphabet, "max_length": longest}
    if p.get("pretrained"):
        tensors, card = checkpoints.load_verified(p["pretrained"], kind, p.get("pretrained_sha256"))
        model = build_backbone(kind, **checkpoints.check_config(card, settings, p["pretrained"]))
        try:
            model.load_state_dict(tensors)
        except RuntimeError as e:
            raise PlugenInputError(f"{p['pretrained']}: weights do not fit backbone '{kind}' with its card's config ({e})") from e
    else:
        model = build_backbone(kind, **settings)
    if samples.ndim == 2 and samples.shape[1] != model.latent_dim:
        raise PlugenInputError(f"{where}: the dataset's latents have {samples.shape[1]} dimensions but backbone '{kind}' has latent_dim {model.latent_dim}")
    return model


def main() -> None:
    cfg, layout, generator, device = experiment_stage(__doc__)
    p = cfg["backbone"]

    samples = read_array(layout.samples)
    split = read_table(layout.labels)["split"].to_numpy()
    model = build_for(p, samples, f"experiments.{cfg['name']}.backbone")
    train = samples[split == "train"]
    state = TrainingState(f"backbone@{cfg['name']}", {"backbone": p, "seed": cfg["seed"]}, [layout.samples, layout.labels])
    start = time.perf_counter()
    if p.get("pretrained"):  # shipped pre-trained (zoo/): nothing to train
        history, how = [], f"pre-trained, from {p['pretrained']}"
    else:
        history, how = model.fit(train, p.get("epochs", 0), p.get("batch_size", 0), p.get("lr", 0.0), device, generator, state), f"trained on {len(train)} samples"
    seconds = time.perf_counter() - start
    print(f"[backbone] {p['kind']} ({model.latent_dim}-dim latents) {how}, {device}, {seconds:.1f}s")
    hardware = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{os.cpu_count()} CPU cores"
    model.cpu().save(layout.backbone, trained={"seconds": seconds, "device": str(device), "hardware": hardware, "threads": torch.get_num_threads()})
    write_table(pd.DataFrame(history, columns=["epoch"] if not history else None), layout.backbone_history)
    state.clear()
    print(f"[backbone] wrote {layout.backbone}, {layout.backbone_history}")


if __name__ == "__main__":
    run_stage(main)
