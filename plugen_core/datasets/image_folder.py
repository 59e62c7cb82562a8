"""Bring-your-own images: a folder of images plus an attributes table (e.g. CelebA), resized to the backbone's size.

    source: images
    input: byo/faces            # the folder DVC tracks; every image file under it is a sample
    labels: attributes.csv      # inside `input`: a `file` column (path relative to `input`) and attribute columns;
                                # CSV, parquet or CelebA's list_attr_celeba.txt; images without a row are unlabelled
    attributes: null            # the columns to use (null: every column but `file`)
    image_size: 32
    crop: center                # center: crop the central square, then resize | none: resize the whole image
    test_fraction: 0.1
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from plugen_core.datasets.labels import assign_splits, infer_spec, read_labels
from plugen_core.io import PlugenInputError

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}


def load_image(path: Path, size: int, crop: str) -> np.ndarray:
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
    except (OSError, UnidentifiedImageError) as e:
        raise PlugenInputError(f"{path}: not a readable image ({e})") from e
    if crop == "center":
        side = min(image.size)
        left, top = (image.width - side) // 2, (image.height - side) // 2
        image = image.crop((left, top, left + side, top + side))
    return np.asarray(image.resize((size, size), Image.Resampling.LANCZOS), dtype=np.uint8)


def prepare(entry: dict, rng: np.random.Generator) -> tuple[np.ndarray, pd.DataFrame, list[dict]]:
    folder = Path(entry["input"])
    if not folder.is_dir():
        raise PlugenInputError(f"{folder}: image folder not found (datasets.{entry['name']}.input)")
    labels_path = folder / entry.get("labels", "attributes.csv")
    table = read_labels(labels_path)
    if "file" not in table:
        raise PlugenInputError(f"{labels_path}: column 'file' is missing (each row's image, relative to {folder})")
    names = entry.get("attributes") or [c for c in table.columns if c != "file"]
    table, spec = infer_spec(table, names, labels_path)
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.suffix.lower() in EXTENSIONS)
    if not files:
        raise PlugenInputError(f"{folder}: no image files ({sorted(EXTENSIONS)})")
    unknown = sorted(set(table["file"].astype(str)) - set(files))
    if unknown:
        raise PlugenInputError(f"{labels_path}: {len(unknown)} row(s) name no image in {folder}, e.g. {unknown[:3]}")
    if table["file"].duplicated().any():
        raise PlugenInputError(f"{labels_path}: duplicated file(s) {table['file'][table['file'].duplicated()].tolist()[:3]}")
    images = np.stack([load_image(folder / f, entry["image_size"], entry.get("crop", "center")) for f in files])
    labels = pd.DataFrame({"id": np.arange(len(files)), "split": assign_splits(len(files), {"test": entry.get("test_fraction", 0.1)}, rng), "file": files})
    labels = labels.merge(table[["file"] + names].astype({"file": str}), on="file", how="left")
    return images, labels, spec
