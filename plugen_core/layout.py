"""Where each stage reads and writes, relative to the workspace; dvc.yaml spells the same paths for DVC."""
from __future__ import annotations

from pathlib import Path


class DatasetLayout:
    def __init__(self, dataset: str):
        self.dataset = dataset
        self.data = Path("data") / dataset
        self.samples = self.data / "samples.npy"
        self.labels = self.data / "labels.parquet"
        self.labelled = self.data / "labelled.parquet"
        self.attributes = self.data / "attributes.json"
        self.judge = Path("models/judges") / f"{dataset}.pt"
        self.judge_history = Path("metrics/judges") / f"{dataset}_history.csv"


class Layout(DatasetLayout):
    """An experiment's files (and its dataset's)."""

    def __init__(self, cfg: dict):
        super().__init__(cfg["dataset"]["name"])
        name = cfg["name"]
        self.backbone = Path("models") / name / "backbone.pt"
        self.backbone_history = Path("metrics") / name / "backbone_history.csv"
        self.latents_dir = Path("latents") / name
        self.latents = self.latents_dir / "latents.npy"
        self.index = self.latents_dir / "index.parquet"
        self.generated = self.latents_dir / "generated.npy"  # samples decoded from sampled latents (no encoder)
        self.aligned = Path("aligned") / name
        self.table = self.aligned / "table.parquet"
        self.schema = self.aligned / "schema.json"
        self.labelling = self.aligned / "labelling.json"
        self.plugen = Path("models") / name / "plugen.pt"
        self.flow_history = Path("metrics") / name / "flow_history.csv"
        self.metrics = Path("metrics") / name / "metrics.json"
        self.plots = Path("plots") / name
        self.baselines = Path("baselines") / name  # grids of the methods PluGeN is measured against
        self.baseline_metrics = Path("metrics") / name / "baselines.json"  # their scores, beside PluGeN's
