"""The trained plugin as an MLflow model, registered as versions of `plugen-<experiment>`. It carries the
flow (with its attribute schema), the backbone that decodes its samples and the plugen_core code, so loading it
needs nothing but the registry and the pinned packages:

    model = mlflow.pyfunc.load_model("models:/plugen-shapes-vae@champion")
    out = model.predict(pd.DataFrame({"shape": ["triangle", None], "colour": ["blue", "red"]}), params={"seed": 0})
    images = decode_images(out)  # uint8 (2, 32, 32, 3)

Input: one row per requested sample, one column per attribute: a categorical one as its class name, a binary one as
0/1, a continuous one as a number in the attribute's units. A missing column or a null leaves the attribute
unspecified: it is drawn from its marginal; N rows that set nothing are N samples of the marginals.
Output: the same rows with every attribute filled in (the values each sample was drawn for) and `image_png`, the
sample as a base64 PNG (or, for a backbone whose samples are not images, `sample_json`: the sample as a JSON list). Params: `temperature` and `style_temperature` (default: the evaluation's), `seed` (-1: none).
"""
from __future__ import annotations

import json
import math
import tempfile
from importlib.metadata import version
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema as ColumnSchema

from plugen_core.backbones import load_backbone
from plugen_core.flow import PluGeN
from plugen_core.io import PlugenInputError
from plugen_core.samples import decode_png, encode_png, is_image, is_text
from plugen_core.schema import Schema
from plugen_core.tracking import PipelineRun, tracked

CHAMPION = "champion"
IMAGE_COLUMN = "image_png"
VECTOR_COLUMN = "sample_json"
SMILES_COLUMN = "smiles"  # a molecule backbone's samples: canonical SMILES ("" where the decoded tokens make none)
REQUIREMENTS = ("torch", "nflows", "numpy", "pandas", "pyyaml", "tqdm", "pillow")  # what plugen_core imports to load
MOLECULE_REQUIREMENTS = ("rdkit", "selfies")  # ... and to decode a molecule backbone's samples


class PluGeNModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        self.plugin = PluGeN.load(context.artifacts["plugen"])
        # what to build comes from the backbone section recorded when the model was logged, never from the weights file
        backbone_params = json.loads(Path(context.artifacts["backbone_params"]).read_text())
        self.backbone = load_backbone(context.artifacts["backbone"], backbone_params)

    def predict(self, context, model_input: pd.DataFrame, params: dict) -> pd.DataFrame:
        # MLflow checks the params against the signature and fills in their defaults; the plugin's schema checks the input
        generator = torch.Generator().manual_seed(params["seed"]) if params["seed"] >= 0 else None
        w, labels = self.plugin.sample_latents(model_input, 1, params["temperature"], params["style_temperature"], generator, params["extrapolate"])
        out = self.plugin.schema.decode(labels.numpy())
        samples = self.backbone.decode_data(w)
        out[sample_column(samples)] = [encode_png(s) if is_image(s) else str(s) if is_text(s) else json.dumps(s.tolist()) for s in samples]
        return out


def sample_column(samples: np.ndarray) -> str:
    return IMAGE_COLUMN if is_image(samples[0]) else SMILES_COLUMN if is_text(samples[0]) else VECTOR_COLUMN


def decode_images(output: pd.DataFrame) -> np.ndarray:
    """The `image_png` column of a prediction as uint8 (N, H, W, 3)."""
    return np.stack([decode_png(png) for png in output[IMAGE_COLUMN]])


def signature(schema: Schema, defaults: dict, output_column: str) -> ModelSignature:
    """Outputs and params only. An input schema would make MLflow rebuild the request from its known columns, and a
    request that sets no attribute (N empty rows) would reach `predict` as 0 rows; the plugin's schema checks the
    input instead (an unknown column, a class, a number), and the input example shows its columns."""
    def kind(a) -> str:
        return "string" if a.kind == "categorical" else "long" if a.kind == "binary" else "double"

    return ModelSignature(
        inputs=None,
        outputs=ColumnSchema([ColSpec(kind(a), a.name) for a in schema.attributes] + [ColSpec("string", output_column)]),
        params=ParamSchema(
            [
                ParamSpec("temperature", "double", float(defaults["temperature"])),
                ParamSpec("style_temperature", "double", float(defaults["style_temperature"])),
                ParamSpec("seed", "long", -1),
                ParamSpec("extrapolate", "boolean", False),  # allow continuous values outside the training data's range
            ]
        ),
    )


def input_example(schema: Schema) -> pd.DataFrame:
    """Two requests: every attribute given, and only the first one (the others drawn)."""
    full = {a.name: a.classes[0] if a.kind == "categorical" else 1.0 if a.kind == "binary" else (a.low + a.high) / 2 for a in schema.attributes}
    first = schema.names[0]
    return pd.DataFrame([full, {first: full[first]}])


@tracked
def register_plugin(run: PipelineRun, plugen_path: str | Path, backbone_path: str | Path, metrics: dict) -> None:
    """Log the plugin under the evaluation's run as a pyfunc model and register it as a new version of
    `plugen-<experiment>`; `champion` points at the best version."""
    settings, evaluate = run.params["tracking"], run.params.get("evaluate", {})
    name = f"plugen-{settings['experiment']}"
    defaults = {"temperature": evaluate.get("temperature", 1.0), "style_temperature": evaluate.get("style_temperature", 1.0)}
    version = log_and_register(run.run_id, plugen_path, backbone_path, run.params["backbone"], name, metrics, defaults)
    if settings["primary_metric"] not in metrics:
        # a metric this experiment cannot have (check_primary_metric refused typos): no reconstructions (a GAN), or
        # no held-out combination
        print(f"[{run.stage}] registered {name} version {version}; it has no {settings['primary_metric']}, so the champion alias stays")
        return
    champion = promote_if_better(run.client, name, version, metrics, settings["primary_metric"], settings["primary_direction"])
    print(f"[{run.stage}] registered {name} version {version}; champion: version {champion}")


def log_and_register(run_id: str, plugen_path: str | Path, backbone_path: str | Path, backbone_params: dict, name: str, metrics: dict, defaults: dict) -> str:
    """Log the model under the run and register it as a new version of `name`, tagged with the evaluation metrics.
    `backbone_params`: the params' backbone section, stored in the model to say what its weights file must hold.
    Returns the version."""
    schema = PluGeN.load(plugen_path).schema
    backbone = load_backbone(backbone_path, backbone_params)
    output_column = sample_column(backbone.decode_data(backbone.sample_prior(1)))
    # log_model files the model under MLflow's active run; leaving the block ends the run, and evaluate is done by then.
    with mlflow.start_run(run_id=run_id), tempfile.TemporaryDirectory() as tmp:
        recorded = Path(tmp) / "backbone_params.json"
        recorded.write_text(json.dumps(backbone_params))
        info = mlflow.pyfunc.log_model(
            name="plugen",
            python_model=__file__,  # "model from code": loading runs this file (its last line) instead of unpickling
            artifacts={"plugen": str(plugen_path), "backbone": str(backbone_path), "backbone_params": str(recorded)},
            code_paths=[str(Path(__file__).parent)],  # plugen_core itself
            signature=signature(schema, defaults, output_column),
            input_example=input_example(schema),
            pip_requirements=[f"{dist}=={version(dist)}" for dist in REQUIREMENTS + (MOLECULE_REQUIREMENTS if output_column == SMILES_COLUMN else ())],
        )
    return mlflow.register_model(info.model_uri, name, tags={key: str(value) for key, value in metrics.items()}).version


def promote_if_better(client, name: str, version: str, metrics: dict, metric: str, direction: str) -> str | None:
    """Point the `champion` alias at the best of all versions of `name` on `metric` (read from the versions' tags;
    a missing or NaN value ranks last, a tie goes to the older version). Recomputed from every version each time, and
    checked again after the write (a better version promoted meanwhile, whose alias this write may have replaced, is
    put back), so promotions running at once, in any order, end on the best one. `version` is the one just
    registered, which the search must see. Returns the champion's version (None while no version has a value)."""
    if metric not in metrics:
        raise PlugenInputError(f"tracking.primary_metric '{metric}' is not an evaluation metric; e.g. {sorted(metrics)[:5]}")
    sign = 1 if direction == "max" else -1

    def score(value) -> float:
        return -math.inf if value is None or math.isnan(float(value)) else sign * float(value)

    def best_version():
        versions = client.search_model_versions(f"name = '{name}'")
        if str(version) not in {str(v.version) for v in versions}:
            raise PlugenInputError(f"model registry: version {version} of '{name}' is not listed; cannot rank it")
        best = max(versions, key=lambda v: (score(v.tags.get(metric)), -int(v.version)))
        return None if score(best.tags.get(metric)) == -math.inf else str(best.version)

    failures = 0
    while (best := best_version()) is not None:
        try:
            client.set_registered_model_alias(name, CHAMPION, best)
        except MlflowException:  # a SQLite store refuses a second promoter creating the alias at the same moment
            failures += 1
            if failures == 3:
                raise
            continue
        if best_version() == best:  # a better version registered and promoted while this one wrote would be seen here
            return best
    return None


mlflow.models.set_model(PluGeNModel())  # the model this file defines when MLflow loads it as code
