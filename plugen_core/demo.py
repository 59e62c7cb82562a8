"""`plugen demo`: a page to try a trained plugin. Pick a model; every attribute has one control (a dropdown for a
categorical one, a checkbox for a binary one, a slider over the trained range for a continuous one) and a "set" box:
what is not set is drawn from its marginal (Generate) or kept (Edit). Generate shows a grid; Edit takes an uploaded
image or a SMILES and redraws the edit as each control moves; molecules are drawn by RDKit with their properties.

A small FastAPI app (FastAPI and uvicorn are installed with the pipeline already) serving one static page
(demo.html, plain JavaScript) and a JSON API the page calls:

    GET  /api/models                   the models offered
    GET  /api/models/{name}            its attributes (kind, classes, range) and what it generates
    POST /api/generate                 {model, settings: {attribute: value}, n, seed, temperature} -> samples
    POST /api/edit                     {model, input: PNG data URL or SMILES, settings} -> input, reconstruction, edit
Bad input answers 400 with the one-line message the command line prints."""
from __future__ import annotations

import base64
import threading
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, Field

from plugen_core import config, usage
from plugen_core.io import PlugenInputError, load_params
from plugen_core.layout import Layout
from plugen_core.samples import encode_png

PAGE = Path(__file__).with_name("demo.html")
MAX_SAMPLES = 64


class Models:
    """The models the page offers, each loaded on first use and kept (a lock: requests run in a thread pool)."""

    def __init__(self, loaders: dict[str, Callable[[], usage.Trained]]):
        self.loaders, self.loaded, self.lock = loaders, {}, threading.Lock()

    def __getitem__(self, name: str) -> usage.Trained:
        if name not in self.loaders:
            raise PlugenInputError(f"unknown model '{name}' (offered: {', '.join(self.loaders)})")
        with self.lock:
            if name not in self.loaded:
                self.loaded[name] = self.loaders[name]()
            return self.loaded[name]


class GenerateRequest(BaseModel):
    model: str
    settings: dict[str, Any] = {}
    n: int = Field(16, ge=1, le=MAX_SAMPLES)
    seed: int | None = None
    temperature: float | None = Field(None, ge=0)
    extrapolate: bool = False


class EditRequest(BaseModel):
    model: str
    input: str  # an image as a data URL, or a SMILES
    settings: dict[str, Any] = {}
    extrapolate: bool = False


def settings_of(trained: usage.Trained, settings: dict, extrapolate: bool) -> dict:
    return {name: usage.attribute_value(trained.schema, name, value, extrapolate) for name, value in settings.items()}


def molecule_png(smiles: str) -> str | None:
    """An RDKit drawing of a molecule as a PNG data URL (None for an invalid one)."""
    from rdkit.Chem import Draw

    from plugen_core.chemistry import molecule

    mol = molecule(smiles)
    if mol is None:
        return None
    buffer = Draw.MolToImage(mol, size=(240, 180))
    return "data:image/png;base64," + encode_png(np.asarray(buffer.convert("RGB")))


def plain(row: pd.Series) -> dict:
    """A table row as JSON can hold it (numpy numbers as Python ones)."""
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}


def shown(trained: usage.Trained, samples: np.ndarray, requested: pd.DataFrame | None = None) -> list[dict]:
    """Samples as the page draws them: images as PNG data URLs; molecules as SMILES, a drawing and RDKit's properties,
    after the values they were requested with (if any); anything else as numbers."""
    if trained.modality == "images":
        rows = [{"image": "data:image/png;base64," + encode_png(s)} for s in samples]
    elif trained.modality == "molecules":
        measured = usage.measured(usage.molecule_table(samples))
        rows = [{"smiles": smiles, "image": molecule_png(smiles), "properties": row.dropna().to_dict()}
                for smiles, (_, row) in zip(samples, measured.iterrows())]
    else:
        rows = [{"vector": [round(float(x), 4) for x in s]} for s in samples]
    if requested is not None:
        for row, (_, values) in zip(rows, requested.iterrows()):
            row["drawn"] = plain(values)
    return rows


def describe(trained: usage.Trained) -> dict:
    return {
        "name": trained.name,
        "modality": trained.modality,
        "attributes": trained.schema.to_dict()["attributes"],  # name, kind, classes, low, high, unit
        "temperature": trained.temperature,
    }


def create_app(models: Models) -> FastAPI:
    app = FastAPI(title="PluGeN demo", docs_url=None, redoc_url=None)
    page = PAGE.read_text()

    @app.exception_handler(PlugenInputError)
    def bad_input(request: Request, error: PlugenInputError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=400)

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return page

    @app.get("/api/models")
    def offered() -> list[str]:
        return list(models.loaders)

    @app.get("/api/models/{name}")
    def model(name: str) -> dict:
        return describe(models[name])

    @app.post("/api/generate")
    def generate(request: GenerateRequest) -> dict:
        trained = models[request.model]
        settings = settings_of(trained, request.settings, request.extrapolate)
        samples, drawn, _ = usage.generate(trained, settings, request.n, request.temperature, request.seed)
        return {"samples": shown(trained, samples, drawn)}

    @app.post("/api/edit")
    def edit(request: EditRequest) -> dict:
        trained = models[request.model]
        settings = settings_of(trained, request.settings, request.extrapolate)
        if trained.modality == "images":
            try:
                data = base64.b64decode(request.input.split(",")[-1], validate=True)
            except ValueError:
                raise PlugenInputError("the uploaded image is not base64 data") from None
            raw = usage.read_image(trained, data, "the uploaded image")
        else:
            raw = usage.read_molecule(trained, request.input.strip())
        w = usage.encode(trained, raw)
        reconstruction = trained.backbone.decode_data(w)
        edited = usage.edit(trained, w, settings) if settings else reconstruction
        readout = usage.classify(trained, w).iloc[0]
        return {
            "input": shown(trained, raw)[0],
            "reconstruction": shown(trained, reconstruction)[0],
            "edited": shown(trained, edited)[0],
            "readout": plain(readout),
        }

    return app


def available(params_path: str | Path) -> list[str]:
    """The experiments of the params whose plugin and backbone the pipeline has written here."""
    params = load_params(params_path)
    return [name for name in params.get("experiments") or {}
            if (layout := Layout(config.experiment(params, name))).plugen.is_file() and layout.backbone.is_file()]


def serve(experiments: list[str] | None, model_uris: list[str] | None, params_path: str | Path, host: str, port: int) -> None:
    """Load the first model (so that the first Generate is quick), then serve the page until interrupted."""
    import uvicorn

    names = experiments if experiments is not None else ([] if model_uris else available(params_path))
    loaders = {name: (lambda name=name: usage.from_pipeline(name, params_path)) for name in names}
    loaders |= {uri: (lambda uri=uri: usage.from_registry(uri, params_path)) for uri in model_uris or []}
    if not loaders:
        raise PlugenInputError(f"no trained plugin to offer: no experiment of {params_path} has models/<experiment>/plugen.pt here "
                               "(run the pipeline, or pass --experiment or --model)")
    models = Models(loaders)
    first = models[next(iter(loaders))]  # a missing or broken model fails here, before the page is up
    print(f"plugen demo: http://{host}:{port}/ offers {', '.join(loaders)} ({first.name} loaded)", flush=True)
    uvicorn.run(create_app(models), host=host, port=port, log_level="warning")
