"""Using a trained plugin without writing Python: load it (the pipeline's outputs or the MLflow registry), read the
attribute values a person asks for, and generate, edit or classify. The `plugen` command and the demo page both
stand on this module; neither knows more about the plugin than what is here.

A request names attributes by name and gives values as text or JSON: a class name, 0/1 (or true/false) for a binary
attribute, a number in the range the plugin was trained on for a continuous one. Whatever it leaves out is drawn from
its marginal (generation) or kept (editing)."""
from __future__ import annotations

import difflib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from plugen_core import config
from plugen_core.backbones import Backbone, load_backbone
from plugen_core.flow import PluGeN
from plugen_core.io import PlugenInputError, first_line, load_params, read_array
from plugen_core.layout import Layout
from plugen_core.samples import is_image, is_text
from plugen_core.schema import Schema

BINARY = {"0": 0, "1": 1, "false": 0, "true": 1, "no": 0, "yes": 1}
MEASURED = "rdkit."  # the prefix of a molecule table's columns that RDKit computed from the SMILES
MAX_SEED = 2**63 - 1  # torch's generators take a 64-bit seed


@dataclass
class Trained:
    """A plugin with the backbone that decodes its samples, and the temperatures its evaluation used."""

    name: str
    plugin: PluGeN
    backbone: Backbone
    temperature: float = 1.0
    style_temperature: float = 1.0
    modality: str = field(init=False)  # "images", "molecules" or "vectors": what the backbone decodes to
    sample_shape: tuple = field(init=False)  # of one decoded sample: (H, W, C) for images

    def __post_init__(self):
        probe = self.backbone.decode_data(self.backbone.sample_prior(1))  # the stored format, whatever the backbone
        self.modality = "images" if is_image(probe[0]) else "molecules" if is_text(probe[0]) else "vectors"
        self.sample_shape = probe.shape[1:]

    @property
    def schema(self) -> Schema:
        return self.plugin.schema


def from_pipeline(experiment: str, params_path: str | Path = "params.yaml") -> Trained:
    """The experiment's plugin and backbone as the pipeline left them (models/<experiment>/), read the way the
    evaluate stage reads them."""
    cfg = config.experiment(load_params(params_path), experiment)
    layout = Layout(cfg)
    for path, stage in ((layout.backbone, "backbone"), (layout.plugen, "train_flow")):
        if not path.is_file():
            raise PlugenInputError(f"{path}: experiment '{experiment}' has no trained {stage} output here; "
                                   f"run `dvc repro {stage}@{experiment}` first")
    plugin, backbone = PluGeN.load(layout.plugen), load_backbone(layout.backbone, cfg["backbone"])
    check_latent_sizes(plugin, backbone, str(layout.plugen), str(layout.backbone))
    evaluate = cfg["evaluate"]
    return Trained(experiment, plugin, backbone, evaluate.get("temperature", 1.0), evaluate.get("style_temperature", 1.0))


def from_registry(uri: str, params_path: str | Path = "params.yaml") -> Trained:
    """A registered model (`models:/plugen-shapes-vae@champion`, `runs:/<id>/plugen`) from the tracking store the
    params name (the project's own by default), with the temperatures it was registered with."""
    import mlflow
    from mlflow.exceptions import MlflowException

    if Path(params_path).is_file() or "MLFLOW_TRACKING_URI" not in os.environ:  # without params: the variable alone
        open_store(load_params(params_path))
    try:
        model = mlflow.pyfunc.load_model(uri)
    except (MlflowException, OSError) as e:
        raise PlugenInputError(f"{uri}: no such model in the MLflow store {mlflow.get_tracking_uri()} ({first_line(e)})") from e
    defaults = {p.name: p.default for p in model.metadata.get_params_schema().params}
    loaded = model.unwrap_python_model()
    check_latent_sizes(loaded.plugin, loaded.backbone, f"{uri}: its plugin", "its backbone")
    return Trained(uri, loaded.plugin, loaded.backbone, defaults["temperature"], defaults["style_temperature"])


def check_latent_sizes(plugin: PluGeN, backbone: Backbone, plugin_name: str, backbone_name: str) -> None:
    """Refuse a plugin trained on the latents of another backbone (it would fail at its first matrix product)."""
    if plugin.config["dim"] != backbone.latent_dim:
        raise PlugenInputError(f"{plugin_name} reads latents of size {plugin.config['dim']} but {backbone_name} makes latents of size "
                               f"{backbone.latent_dim}: the two were not trained together")


def open_store(params: dict):
    """A client of the MLflow store the params name (tracking.tracking_uri says which), which also becomes MLflow's
    global one. A local store that does not exist yet is an error, not a new empty database."""
    from plugen_core import tracking

    uri = tracking.tracking_uri(params)
    if uri is None:
        raise PlugenInputError("tracking is off in the params (tracking.uri: off, or no tracking section): no MLflow store to read")
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise PlugenInputError(f"no MLflow store at {uri} yet: run the pipeline first, or run this from the project root")
    return tracking.connect(uri)


def load(experiment: str | None = None, model_uri: str | None = None, params_path: str | Path = "params.yaml") -> Trained:
    if (experiment is None) == (model_uri is None):
        raise PlugenInputError("name either an experiment (--experiment shapes-vae) or a registered model "
                               "(--model models:/plugen-shapes-vae@champion)")
    return from_registry(model_uri, params_path) if model_uri else from_pipeline(experiment, params_path)


def attribute_value(schema: Schema, name: str, value, extrapolate: bool = False):
    """`value` as the plugin reads attribute `name`: a class name, 0/1, or a number inside the range the plugin was
    trained on (outside it only with `extrapolate`). Anything else is an error naming the attribute and the value."""
    if name not in schema.names:
        close = difflib.get_close_matches(name, schema.names, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise PlugenInputError(f"unknown attribute '{name}'{hint} (this plugin has {', '.join(schema.names)})")
    a = schema[name]
    if a.kind == "categorical":
        if str(value) not in a.classes:
            raise PlugenInputError(f"{name}={value}: not a class of '{name}' (one of {', '.join(a.classes)})")
        return str(value)
    if a.kind == "binary":
        if str(value).strip().lower() not in BINARY:
            raise PlugenInputError(f"{name}={value}: '{name}' is binary: 0 or 1")
        return BINARY[str(value).strip().lower()]
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise PlugenInputError(f"{name}={value}: '{name}' takes a number in [{a.low:g}, {a.high:g}]") from None
    if not math.isfinite(number):
        raise PlugenInputError(f"{name}={value}: '{name}' takes a finite number")
    if not (extrapolate or a.low <= number <= a.high):
        raise PlugenInputError(f"{name}={value}: outside the range the plugin was trained on, [{a.low:g}, {a.high:g}]; "
                               "allow it with --extrapolate")
    return number


def parse_settings(pairs: list[str], schema: Schema, extrapolate: bool = False) -> dict:
    """`name=value` texts (the command line's --set) as a request."""
    settings = {}
    for pair in pairs:
        name, sep, value = (part.strip() for part in pair.partition("="))
        if not sep or not name or not value:
            raise PlugenInputError(f"--set {pair!r}: expected attribute=value, e.g. {schema.names[0]}=...")
        if name in settings:
            raise PlugenInputError(f"--set {pair!r}: {name} is set twice; set each attribute once")
        settings[name] = attribute_value(schema, name, value, extrapolate)
    return settings


def generator_of(seed: int | None) -> torch.Generator | None:
    if seed is None:
        return None
    if not 0 <= seed <= MAX_SEED:
        raise PlugenInputError(f"seed {seed}: a whole number from 0 to {MAX_SEED}")
    return torch.Generator().manual_seed(seed)


def generate(
    trained: Trained, settings: dict, n: int, temperature: float | None = None, seed: int | None = None
) -> tuple[np.ndarray, pd.DataFrame, torch.Tensor]:
    """`n` samples for one request: the samples, the attribute values each was drawn for, and their latents."""
    t = trained.temperature if temperature is None else temperature
    # extrapolate: the request's values were checked by attribute_value, which knows whether the user allowed it
    w, labels = trained.plugin.sample_latents(settings, n, t, trained.style_temperature, generator_of(seed), extrapolate=True)
    return trained.backbone.decode_data(w), trained.schema.decode(labels.numpy()), w


def edit(trained: Trained, w: torch.Tensor, settings: dict) -> np.ndarray:
    """The samples of latents `w` with the requested attributes moved and everything else kept."""
    return trained.backbone.decode_data(trained.plugin.manipulate(w, settings, extrapolate=True))


def classify(trained: Trained, w: torch.Tensor) -> pd.DataFrame:
    """The plugin's own read-out of latents `w` (its free classifier, never the judge), with class probabilities."""
    return trained.plugin.classify(w)


def encode(trained: Trained, samples: np.ndarray) -> torch.Tensor:
    """Latents of samples in the stored format (images, SMILES): the backbone's encoder reads them."""
    if not trained.backbone.has_encoder:
        raise PlugenInputError(f"{trained.name}: its backbone ({trained.backbone.kind}) has no encoder, so it cannot read an input; "
                               "pass --latent with latents saved by `plugen generate --save-latents`")
    return trained.backbone.encode_data(samples)


def read_image(trained: Trained, data, where: str) -> np.ndarray:
    """An image file (or bytes) as the backbone's (1, H, W, C) uint8 input, resized to its size."""
    from io import BytesIO

    from PIL import Image, UnidentifiedImageError

    if trained.modality != "images":
        raise PlugenInputError(f"{trained.name} is a {trained.modality} model: it does not read an image ({where})")
    height, width, channels = trained.sample_shape
    try:
        with Image.open(BytesIO(data) if isinstance(data, bytes) else data) as image:
            image = image.convert("RGB" if channels == 3 else "L").resize((width, height), Image.Resampling.BOX)
    except Image.DecompressionBombError as e:  # PIL refuses to decode an image this large: it may be a memory bomb
        raise PlugenInputError(f"{where}: image too large to read ({e})") from e
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise PlugenInputError(f"{where}: not a readable image ({type(e).__name__}: {e})") from e
    return np.array(image, dtype=np.uint8).reshape(1, height, width, channels)  # a copy torch may write to


def read_molecule(trained: Trained, smiles: str) -> np.ndarray:
    """A SMILES as the backbone's input: an error names a string RDKit cannot read."""
    from plugen_core.chemistry import molecule

    if trained.modality != "molecules":
        raise PlugenInputError(f"{trained.name} is a {trained.modality} model: it does not read a SMILES ({smiles!r})")
    if molecule(smiles) is None:
        raise PlugenInputError(f"{smiles!r}: not a valid SMILES (RDKit cannot read it)")
    return np.array([smiles])


def read_input(trained: Trained, text: str) -> np.ndarray:
    """The command line's --input: an image file for an image model, a SMILES for a molecule model."""
    if trained.modality == "images":
        if not Path(text).is_file():
            raise PlugenInputError(f"{text}: image file not found")
        return read_image(trained, Path(text), text)
    if trained.modality == "molecules":
        return read_molecule(trained, text)
    raise PlugenInputError(f"{trained.name} decodes latent vectors, which have no input format: pass --latent")


def read_latents(trained: Trained, path: str | Path) -> torch.Tensor:
    """Latents saved by `plugen generate --save-latents` (a .npy of (N, dim) or (dim,) floats), at least one row, all
    finite."""
    latents = read_array(path)
    dim = trained.backbone.latent_dim
    if latents.ndim not in (1, 2) or latents.shape[-1] != dim or not np.issubdtype(latents.dtype, np.floating):
        raise PlugenInputError(f"{path}: expected floating latents of shape (N, {dim}) for {trained.name}, "
                               f"got {latents.dtype} {latents.shape}")
    rows = latents.reshape(-1, dim)
    if len(rows) == 0:
        raise PlugenInputError(f"{path}: holds no latents (shape {latents.shape}); expected at least one row")
    not_finite = ~np.isfinite(rows).all(axis=1)
    if not_finite.any():
        raise PlugenInputError(f"{path}: row {int(not_finite.argmax())} (counting from 0) holds NaN or infinity; latents must be finite")
    return torch.from_numpy(rows.astype(np.float32))


def molecule_table(smiles: np.ndarray, requested: pd.DataFrame | None = None) -> pd.DataFrame:
    """SMILES with RDKit's measure of each property (`rdkit.logp`, ...; empty for an invalid molecule), after the
    values they were generated for, where given."""
    from plugen_core.chemistry import properties

    table = pd.DataFrame({"smiles": smiles})
    if requested is not None:
        table = table.join(requested.add_prefix("requested.").reset_index(drop=True))
    return table.join(properties(smiles).add_prefix(MEASURED))


def measured(table: pd.DataFrame) -> pd.DataFrame:
    """The properties RDKit computed, of a molecule_table, by their names (logp, ...)."""
    return table[[c for c in table.columns if c.startswith(MEASURED)]].rename(columns=lambda c: c.removeprefix(MEASURED))


def legends(table: pd.DataFrame) -> list[str]:
    """Captions for drawings of a molecule_table's molecules: their measured properties."""
    return ["  ".join(f"{k} {v:.3g}" for k, v in row.items()) if smiles else "invalid"
            for smiles, (_, row) in zip(table["smiles"], measured(table).iterrows())]
