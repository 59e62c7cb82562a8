"""Conditional generation puts attribute coordinates where the targets say; manipulation changes only
the edited coordinates of z."""
import re

import numpy as np
import pandas as pd
import pytest
import torch

from plugen_core.flow import PluGeN
from plugen_core.io import PlugenInputError
from plugen_core.schema import Attribute, Schema


@pytest.fixture
def model():
    torch.manual_seed(0)
    schema = Schema(
        [
            Attribute("shape", "categorical", classes=["circle", "square", "triangle"]),
            Attribute("size", "continuous", low=5.0, high=10.0),
            Attribute("hollow", "binary"),
        ]
    )
    labelled = schema.encode(pd.DataFrame({"shape": ["circle", "square", "triangle", "square"], "size": [5.0, 6.0, 9.0, 10.0], "hollow": [0, 1, 1, 0]}))
    m = PluGeN.create(schema, dim=8, labelled_context=labelled, sigma=0.3, couplings=2, hidden=16, layers=2)
    for p in m.transform.parameters():  # a non-identity flow, so z and w differ
        p.data += 0.2 * torch.randn_like(p)
    m.transform.train()
    m.transform(torch.randn(32, 8))
    return m.eval()


def test_generation_at_zero_temperature_hits_target_means(model):
    w, labels = model.sample_latents({"shape": "triangle", "size": 7.5}, n_per_target=50, temperature=0.0, generator=torch.Generator().manual_seed(1))
    z = model.to_z(w)
    assert torch.allclose(z[:, 0:3], torch.tensor([-1.0, -1.0, 1.0]).expand(50, 3), atol=1e-4)  # one-hot triangle
    assert torch.allclose(z[:, 3], torch.zeros(50), atol=1e-4)  # 7.5 is the middle of [5, 10]
    assert set(z[:, 4].round().tolist()) <= {-1.0, 1.0}  # hollow unspecified: drawn from its marginal, at a mode
    assert not torch.isnan(labels).any()


def test_generation_temperature_spreads_around_target(model):
    w, _ = model.sample_latents({"hollow": 1}, n_per_target=4000, temperature=1.0, generator=torch.Generator().manual_seed(2))
    hollow = model.to_z(w)[:, 4]
    s_pos = model.prior.widths()[0][4].item()
    assert abs(hollow.mean().item() - 1.0) < 0.05 and abs(hollow.std().item() - s_pos) < 0.05


def test_manipulation_changes_only_edited_coordinates(model):
    w = torch.randn(10, 8)
    z = model.to_z(w)
    edited = model.to_z(model.manipulate(w, {"shape": "square"}))
    assert torch.allclose(edited[:, 0:3], torch.tensor([-1.0, 1.0, -1.0]).expand(10, 3), atol=1e-4)
    assert torch.allclose(edited[:, 3:], z[:, 3:], atol=1e-4)
    per_row = model.to_z(model.manipulate(w, pd.DataFrame({"size": np.linspace(5, 10, 10)})))
    assert torch.allclose(per_row[:, 3], torch.linspace(-1, 1, 10), atol=1e-4)
    assert torch.allclose(torch.cat([per_row[:, :3], per_row[:, 4:]], 1), torch.cat([z[:, :3], z[:, 4:]], 1), atol=1e-4)


def test_save_and_load_round_trip(model, tmp_path):
    model.save(tmp_path / "plugen.pt")
    loaded = PluGeN.load(tmp_path / "plugen.pt")
    w = torch.randn(5, 8)
    assert torch.allclose(loaded.to_z(w), model.to_z(w), atol=1e-6)
    assert loaded.schema.names == model.schema.names


def test_a_value_outside_the_training_range_is_refused_unless_extrapolating(model):
    requests = pd.DataFrame({"shape": ["circle", "square"], "size": [7.0, 100.0]})
    for ask in (lambda **kw: model.sample_latents(requests, **kw), lambda **kw: model.manipulate(torch.randn(2, 8), requests, **kw)):
        with pytest.raises(PlugenInputError, match=re.escape("'size' = 100 (row 1) is outside the data's range [5, 10]")):
            ask()
        assert ask(extrapolate=True) is not None
