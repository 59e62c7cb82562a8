"""What a backbone's samples are, and how they travel: uint8 (H, W, C) images as PNG (base64 in JSON and tables),
SMILES strings as they are, anything else as numbers. Shared by the registered MLflow model, the `plugen` command
and the demo page; light on imports, so that a command starts fast."""
from __future__ import annotations

import base64
from io import BytesIO

import numpy as np
from PIL import Image


def is_image(sample: np.ndarray) -> bool:
    return sample.ndim == 3 and sample.dtype == np.uint8


def is_text(sample) -> bool:
    return isinstance(sample, str)


def png_bytes(image: np.ndarray) -> bytes:
    buffer = BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def encode_png(image: np.ndarray) -> str:
    return base64.b64encode(png_bytes(image)).decode("ascii")


def decode_png(text: str) -> np.ndarray:
    """A base64 PNG (or a `data:image/png;base64,` URL) as uint8 (H, W, 3)."""
    return np.array(Image.open(BytesIO(base64.b64decode(text.split(",")[-1]))).convert("RGB"))  # writable: torch may read it


def tile(images: np.ndarray, columns: int, zoom: int, gap: int) -> np.ndarray:
    """uint8 (N, H, W, C) images as one picture: rows of `columns`, each image enlarged `zoom` times pixel for pixel
    (every zoom-th pixel of a cell is the sample exactly), `gap` white pixels between cells (one image: just itself)."""
    n, h, w, channels = images.shape
    rows = -(-n // columns)
    cell_h, cell_w = h * zoom + gap, w * zoom + gap
    out = np.full((rows * cell_h - gap, columns * cell_w - gap, channels), 255, np.uint8)
    for i, image in enumerate(images):
        top, left = (i // columns) * cell_h, (i % columns) * cell_w
        out[top : top + h * zoom, left : left + w * zoom] = image.repeat(zoom, axis=0).repeat(zoom, axis=1)
    return out
