"""Bring-your-own inputs as users arrive with them, written into a repository: latents with a CelebA-layout labels
file, an image folder with an attributes CSV, the weights of tests/toy_backbone.py."""
from pathlib import Path

import numpy as np
import torch

from plugen_core.datasets import shapes

LATENT_NAMES = ["Smiling", "Male", "Eyeglasses"]


def write_latents(folder: Path, n: int = 1500, dim: int = 16, seed: int = 0) -> dict:
    """Gaussian latents whose attributes are read off them (as a face classifier would label StyleGAN samples), and
    list_attr_celeba.txt: a row count, the attribute names, then `file -1/1 ...` per latent. The latents are stored
    rotated by a fixed random rotation, so that no attribute lies along a coordinate of w: the prior gives attributes
    the first coordinates of z, and an untrained flow (the identity) must not find them there."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(n, dim)).astype(np.float32)
    values = np.stack([w[:, 0] > 0, w[:, 1] > 0, w[:, 2] + w[:, 3] > 1.0], axis=1)
    rotation = np.linalg.qr(rng.normal(size=(dim, dim)))[0].astype(np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "latents.npy", w @ rotation)
    rows = [f"{i + 1:06d}.jpg " + " ".join("1" if v else "-1" for v in row) for i, row in enumerate(values)]
    (folder / "list_attr_celeba.txt").write_text("\n".join([str(n), " ".join(LATENT_NAMES), *rows]) + "\n")
    return {"source": "latents", "input": str(folder), "latents": "latents.npy", "labels": "list_attr_celeba.txt",
            "test_fraction": 0.15, "judge_fraction": 0.15, "labelled": {"count": None, "held_out": [{"Smiling": 1, "Male": 1}], "correlated": []}}


def write_images(folder: Path, n: int = 48, labelled: int = 40, seed: int = 0) -> dict:
    """n 40x40 PNGs of the shapes renderer and attributes.csv (file, shape, colour, hollow) for the first `labelled`."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    attrs = shapes.sample_attributes(n, rng, (7.0, 12.0), (14.0, 26.0), 2.0, 40)
    (folder / "img").mkdir(parents=True, exist_ok=True)
    files = [f"img/{i:03d}.png" for i in range(n)]
    for f, image in zip(files, shapes.render(attrs, 40)):
        Image.fromarray(image).save(folder / f)
    table = attrs[["shape", "colour", "hollow"]].assign(file=files)[["file", "shape", "colour", "hollow"]]
    table.head(labelled).to_csv(folder / "attributes.csv", index=False)
    return {"source": "images", "input": str(folder), "labels": "attributes.csv", "image_size": 32, "crop": "center",
            "test_fraction": 0.25, "labelled": {"count": None, "held_out": [], "correlated": []}}


def write_toy_weights(path: Path, latent_dim: int = 8, seed: int = 0) -> Path:
    from tests.toy_backbone import make

    torch.manual_seed(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(make(latent_dim=latent_dim).state_dict(), path)
    return path
