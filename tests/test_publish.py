"""The pretraining pipeline's model card (plugen_core/stages/publish.py): its latent probe reads an attribute off a
latent that carries it, and not off one that does not."""
import numpy as np
import torch

from plugen_core.datasets import shapes
from plugen_core.stages.publish import latent_probe
from tests.trained_plugin import shapes_judge


class RenderingBackbone:
    """Latents of 4 dims decoded by the shapes renderer: the first coordinate's tercile sets the shape, or (the
    negative control) the shape is drawn at random; every other attribute is random either way."""

    def __init__(self, carries_shape: bool):
        self.carries_shape, self.rng = carries_shape, np.random.default_rng(0)

    def sample_prior(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randn(n, 4, generator=generator)

    def decode_data(self, w: torch.Tensor) -> np.ndarray:
        attrs = shapes.sample_attributes(len(w), self.rng, (6.0, 9.0), (12.0, 20.0), 2.0, 32)
        if self.carries_shape:
            attrs["shape"] = np.array(shapes.SHAPES)[np.digitize(w[:, 0].numpy(), [-0.43, 0.43])]
        return shapes.render(attrs, 32)


def test_the_latent_probe_reads_an_attribute_only_where_the_latent_carries_it():
    judge = shapes_judge()
    carried, control = (latent_probe(RenderingBackbone(c), judge, torch.Generator().manual_seed(0), n_fit=1500, n_test=500) for c in (True, False))
    assert carried["latent_probe.shape.accuracy"] > 0.9
    assert control["latent_probe.shape.accuracy"] < 0.5  # chance: 1/3
    assert control["latent_probe.colour.accuracy"] < 0.5 and set(control) == set(carried)
