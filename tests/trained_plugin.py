"""Small trained plugins laid out as the pipeline leaves them (params.yaml, models/<experiment>/backbone.pt and
plugen.pt), built in seconds on the shipped backbones: a flow trained briefly on the latents of freshly rendered shapes
(shapes-vae) or of MOSES molecules (moses-vae). `epochs=0` leaves the flow untrained: the negative control."""
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
import yaml

from plugen_core import chemistry, config
from plugen_core.datasets import molecules, shapes
from plugen_core.flow import PluGeN, fit
from plugen_core.layout import Layout
from plugen_core.schema import Attribute, Schema
from plugen_core.stages.backbone import build_for
from plugen_core.stages.train_judge import shipped_judge

REPO = Path(__file__).resolve().parents[1]
FLOW = {"couplings": 4, "hidden": 128, "layers": 3}
SHAPES_EPOCHS, MOSES_EPOCHS = 15, 5  # seconds of training: colour and background are learnt, shape barely
REQUEST = {"colour": "blue", "light_background": 1}  # two attributes such a plugin already separates


def joint_agreement(judged: pd.DataFrame, request: dict) -> float:
    """The share of samples on which the judge sees every requested attribute at once."""
    return float(np.all([judged[k].astype(str) == str(v) for k, v in request.items()], axis=0).mean())


def write_params(root: Path, experiment: str) -> dict:
    """The project's params with only `experiment` (and its dataset), shipped files named by absolute path."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    entry = params["experiments"][experiment]
    entry["backbone"]["pretrained"] = str(REPO / entry["backbone"]["pretrained"])
    params["experiments"] = {experiment: entry}
    params["datasets"] = {entry["dataset"]: params["datasets"][entry["dataset"]]}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return config.experiment(params, experiment)


def train(root: Path, cfg: dict, samples: np.ndarray, labels: pd.DataFrame, spec: list[dict], epochs: int) -> None:
    """Stage the shipped backbone and a flow trained for `epochs` on its latents of `samples`, where the pipeline would."""
    layout = Layout(cfg)
    backbone = build_for(cfg["backbone"], samples, "test")
    backbone.save(root / layout.backbone)
    w = backbone.encode_data(samples)
    schema = Schema.from_spec(spec, labels)
    context = schema.encode(labels[schema.names])
    plugin = PluGeN.create(schema, w.shape[1], context, sigma=0.7, balanced=True, continuous_scale=0.5, **FLOW)
    fit(plugin, w, torch.from_numpy(context), epochs=epochs, batch_size=128, lr=3e-3, sigma0=0.7, sigma_gamma=0.9, sigma_min=0.2,
        grad_clip=1.0, generator=torch.Generator().manual_seed(0), input_noise=0.2)
    plugin.eval().save(root / layout.plugen)


def shapes_plugin(root: Path, epochs: int, n: int = 3000) -> Path:
    cfg = write_params(root, "shapes-vae")
    entry = cfg["dataset"]
    labels = shapes.sample_attributes(n, np.random.default_rng(0), entry["size_range"], entry["x_range"], entry["y_jitter"], entry["image_size"])
    spec = shapes.attribute_spec(entry["image_size"], entry["size_range"], entry["x_range"])
    train(root, cfg, shapes.render(labels, entry["image_size"]), labels, spec, epochs)
    return root


def shapes_judge():
    """The shipped evaluation judge of the shapes dataset (the pipeline's `train_judge@shapes`)."""
    entry = yaml.safe_load((REPO / "params.yaml").read_text())["datasets"]["shapes"]
    schema = Schema([Attribute(**a) for a in shapes.attribute_spec(entry["image_size"], entry["size_range"], entry["x_range"])])
    return shipped_judge(str(REPO / entry["pretrained_judge"]), schema, (entry["image_size"], entry["image_size"], 3)).eval()


def moses_plugin(root: Path, epochs: int, n: int = 1200) -> Path:
    cfg = write_params(root, "moses-vae")
    smiles = chemistry.canonical(pd.read_csv(molecules.moses_file("test.csv.gz"))["SMILES"].to_numpy(str)[:n])
    smiles = smiles[molecules.selfies_tokens(smiles) <= cfg["dataset"]["max_tokens"]]
    labels = chemistry.properties(smiles)
    spec = [{"name": name, "kind": "continuous", "unit": chemistry.UNITS[name]} for name in labels.columns]
    train(root, cfg, smiles, labels, spec, epochs)
    return root


def built_once(tmp_path_factory, name: str, build: Callable[[Path], Path]) -> Path:
    """A workspace built once per test session and shared by the test modules that ask for it."""
    root = tmp_path_factory.getbasetemp() / name
    if not (root / ".built").exists():
        root.mkdir(exist_ok=True)
        build(root)
        (root / ".built").touch()
    return root


def shared_shapes_plugin(tmp_path_factory) -> Path:
    return built_once(tmp_path_factory, "shapes-plugin", lambda root: shapes_plugin(root, epochs=SHAPES_EPOCHS))


def shared_moses_plugin(tmp_path_factory) -> Path:
    return built_once(tmp_path_factory, "moses-plugin", lambda root: moses_plugin(root, epochs=MOSES_EPOCHS))
