"""Stage `extract_latents@<experiment>`: the latent codes the plugin trains on. A backbone with an encoder encodes
every sample of the dataset (the VAE's posterior mean); a bring-your-own latents dataset is used as it is; a
backbone without one (a GAN) draws as many latents from its prior, keeping the dataset's train/test split sizes,
and decodes them, so that `align_labels` can label what they generate."""
from __future__ import annotations

import numpy as np

from plugen_core.backbones import load_backbone
from plugen_core.io import read_array, read_table, run_stage, write_array, write_table
from plugen_core.stages import experiment_stage


def main() -> None:
    cfg, layout, generator, device = experiment_stage(__doc__)
    backbone = load_backbone(layout.backbone, cfg["backbone"]).to(device)
    samples = read_array(layout.samples)
    index = read_table(layout.labels)[["id", "split"]]
    if cfg["dataset"]["source"] == "latents":
        latents, how = samples, "taken from the dataset"
    elif backbone.has_encoder:
        latents, how = backbone.encode_data(samples).numpy(), "encoded"
    else:
        latents = backbone.sample_prior(len(index), generator)
        write_array(backbone.decode_data(latents), layout.generated)
        latents, how = latents.numpy(), f"sampled from the prior and decoded to {layout.generated}"
    write_array(latents.astype(np.float32), layout.latents)
    write_table(index, layout.index)
    print(f"[extract_latents] {latents.shape[0]} latents of dim {latents.shape[1]} ({how}) -> {layout.latents_dir}/")


if __name__ == "__main__":
    run_stage(main)
