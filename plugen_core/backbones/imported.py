"""`kind: import`: a user's pre-trained backbone, built by a factory named by import path, with its weights loaded
safely (`torch.load(weights_only=True)` or safetensors: plain tensors, never arbitrary pickled objects).

    backbone:
      kind: import
      factory: my_package.my_module:make   # make(**config) returns an nn.Module with the backbone interface
      config: {latent_dim: 64}
      weights: weights/my_backbone.safetensors   # or a .pt state_dict

The module must have `latent_dim`, `decode(w)`, `preprocess(raw)` and `postprocess(x)` (see Backbone); an `encode(x)`
makes latent extraction encode the dataset, otherwise latents are sampled from `sample_prior` (default N(0, I)) and
the samples labelled by a classifier, as for a GAN. docs/bring-your-own.md has a worked example.
"""
from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import torch
from torch import nn

from plugen_core.backbones.base import Backbone
from plugen_core.io import PlugenInputError, load_checkpoint

REQUIRED = ("latent_dim", "decode", "preprocess", "postprocess")


def resolve_factory(path: str):
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise PlugenInputError(f"backbone.factory must look like 'package.module:factory', got {path!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise PlugenInputError(f"backbone.factory {path!r}: cannot import module '{module_name}' ({e})") from e
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise PlugenInputError(f"backbone.factory {path!r}: module '{module_name}' has no callable '{attr}'")
    return factory


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        if not path.is_file():
            raise PlugenInputError(f"{path}: weights file not found")
        try:
            return load_file(path)
        except (SafetensorError, OSError) as e:
            raise PlugenInputError(f"{path}: unreadable safetensors file ({e})") from e
    state = load_checkpoint(path)
    state = state.get("state_dict", state)
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PlugenInputError(f"{path}: expected a state_dict of tensors")
    return state


class Imported(Backbone):
    kind = "import"

    def __init__(self, factory: str, config: dict | None = None, weights: str | None = None):
        model = resolve_factory(factory)(**(config or {}))
        missing = [name for name in REQUIRED if not hasattr(model, name)]
        if not isinstance(model, nn.Module) or missing:
            raise PlugenInputError(f"backbone.factory {factory!r} must return an nn.Module with {list(REQUIRED)}; missing {missing}")
        super().__init__(int(model.latent_dim))
        self.factory, self.factory_config, self.model = factory, dict(config or {}), model
        self.has_encoder = callable(getattr(model, "encode", None)) and getattr(model, "has_encoder", True)
        self.decodes = getattr(model, "decodes", True)
        if weights is not None:
            try:
                model.load_state_dict(load_weights(weights))
            except RuntimeError as e:
                raise PlugenInputError(f"{weights}: weights do not fit the module {factory!r} builds ({e})") from e

    def config(self) -> dict:
        return {"factory": self.factory, "config": self.factory_config}

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        if not self.has_encoder:
            return super().encode(x)
        return self.model.encode(x)

    def decode(self, w: torch.Tensor) -> torch.Tensor:
        return self.model.decode(w)

    def sample_prior(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        sample = getattr(self.model, "sample_prior", None)
        return sample(n, generator) if callable(sample) else super().sample_prior(n, generator)

    def preprocess(self, raw: np.ndarray) -> torch.Tensor:
        return self.model.preprocess(raw)

    def postprocess(self, x: torch.Tensor) -> np.ndarray:
        return self.model.postprocess(x)

    def fit(self, data, epochs, batch_size, lr, device, generator, state=None) -> list[dict]:
        return []  # supplied pre-trained
