"""Pictures for people: generation and manipulation grids, training curves (matplotlib, headless)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from plugen_core.io import atomic_path  # noqa: E402


def _save(fig, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def describe(row: pd.Series) -> str:
    return ", ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())


def image_grid(images: np.ndarray, row_titles: list[str], col_titles: list[str], path: str | Path, title: str, highlight: list[bool] | None = None) -> None:
    """images: (rows, cols, H, W, C) uint8. Highlighted rows get a red title (e.g. unseen combinations). Drawn as one
    mosaic in one axes: a subplot per image made each grid cost seconds."""
    rows, cols, h, w, channels = images.shape
    pad = max(1, h // 8)
    mosaic = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, channels), 255, np.uint8)
    for r in range(rows):
        for c in range(cols):
            top, left = pad + r * (h + pad), pad + c * (w + pad)
            mosaic[top : top + h, left : left + w] = images[r, c]
    fig, ax = plt.subplots(figsize=(1.1 * cols + 3.5, 1.1 * rows + 0.6))
    ax.imshow(mosaic, interpolation="nearest")
    ax.set_axis_off()
    for r, text in enumerate(row_titles):
        ax.text(-pad, pad + r * (h + pad) + h / 2, text, ha="right", va="center", fontsize=7, color="red" if highlight and highlight[r] else "black")
    for c, text in enumerate(col_titles):
        ax.text(pad + c * (w + pad) + w / 2, 0, text, ha="center", va="bottom", fontsize=7)
    fig.suptitle(title, fontsize=9)
    _save(fig, path)


def training_curves(history: pd.DataFrame, columns: list[str], path: str | Path, title: str) -> None:
    fig, axes = plt.subplots(1, len(columns), figsize=(3.2 * len(columns), 2.6), squeeze=False)
    for ax, col in zip(axes[0], columns):
        ax.plot(history["epoch"], history[col])
        ax.set_xlabel("epoch")
        ax.set_title(col, fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    _save(fig, path)


def attribute_scores(metrics: dict, names: list[str], generation_path: str | Path, manipulation_path: str | Path, title: str) -> None:
    """Per-attribute scores as bars, where the samples have no picture (a latent-space experiment): generation
    accuracy (or 1 - MAE for continuous attributes) on seen and unseen combinations; manipulation success and
    preservation."""

    def score(prefix: str, name: str) -> float:
        if f"{prefix}.{name}.accuracy" in metrics:
            return metrics[f"{prefix}.{name}.accuracy"]
        return 1 - metrics.get(f"{prefix}.{name}.mae_fraction", np.nan)

    for path, series, what in (
        (generation_path, {group: [score(f"generation.{group}", n) for n in names] for group in ("seen", "unseen")}, "generation: accuracy (continuous: 1 - MAE/range)"),
        (manipulation_path, {kind: [metrics.get(f"manipulation.{n}.{kind}", np.nan) for n in names] for kind in ("success", "preservation")}, "manipulation"),
    ):
        grouped_bars(names, series, path, f"{title} — {what}", (0, 1.05))


def grouped_bars(groups: list[str], series: dict[str, list[float]], path: str | Path, title: str, ylim: tuple[float, float] | None = None) -> None:
    """One bar per series in each group (e.g. a method's score per experiment)."""
    x, width = np.arange(len(groups)), 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.3 * len(groups) * len(series) + 2), 3))
    for i, (label, values) in enumerate(series.items()):
        ax.bar(x + (i - (len(series) - 1) / 2) * width, values, width=width, label=label)
    ax.set_xticks(x, groups, rotation=45 if len(groups) > 3 else 0, ha="right" if len(groups) > 3 else "center", fontsize=7)
    if ylim:
        ax.set_ylim(*ylim)
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    _save(fig, path)


def spread_curves(x: list[float], series: dict[str, tuple[list[float], list[float], list[float]]], path: str | Path, title: str, xlabel: str, ylabel: str) -> None:
    """A line per series through its means, with bars from its lowest to its highest value (e.g. over seeds); log x."""
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for label, (mean, low, high) in series.items():
        mean, low, high = (np.asarray(v, float) for v in (mean, low, high))
        ax.errorbar(x, mean, yerr=[mean - low, high - mean], marker="o", capsize=3, label=label)
    ax.set_xscale("log", base=2)
    ax.set_xticks(x, [f"{v:g}" for v in x])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    _save(fig, path)


def traversal_curves(values: np.ndarray, readings: dict[str, list[float]], path: str | Path, title: str, ylabel: str) -> None:
    """One line per swept coordinate: what the judge reads as the coordinate moves (for samples without a picture)."""
    fig, ax = plt.subplots(figsize=(4.5, 3))
    for label, ys in readings.items():
        ax.plot(values, ys, marker="o", label=label)
    ax.set_xlabel("z coordinate")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    _save(fig, path)


def property_histograms(requested: dict[str, dict[float, np.ndarray]], path: str | Path, title: str) -> None:
    """Per property, a histogram of the generated molecules' values for each requested value (a dashed line)."""
    fig, axes = plt.subplots(1, len(requested), figsize=(3.6 * len(requested), 2.8), squeeze=False)
    for ax, (name, by_target) in zip(axes[0], requested.items()):
        for i, (target, values) in enumerate(by_target.items()):
            colour = f"C{i}"
            ax.hist(values[~np.isnan(values)], bins=30, alpha=0.5, color=colour, label=f"{target:g}")
            ax.axvline(target, color=colour, linestyle="--")
        ax.set_title(f"{name}: generated vs requested", fontsize=9)
        ax.legend(fontsize=7, title="requested", title_fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    _save(fig, path)
