"""The GAN's options for long runs (plugen_core/backbones/gan.py): each changes what it claims, trains, and survives
a save and load; with every option off it is the architecture of the shipped checkpoint."""
import numpy as np
import torch

from plugen_core.backbones import load_backbone
from plugen_core.backbones.gan import DCGAN

IMAGES = np.random.default_rng(0).integers(0, 256, (32, 16, 16, 3), dtype=np.uint8)


def test_options_train_and_round_trip(tmp_path):
    torch.manual_seed(0)
    gan = DCGAN(latent_dim=8, image_size=16, width=8, ema_decay=0.9, convs_per_scale=2, mapping_layers=2, r1_gamma=1.0)
    history = gan.fit(IMAGES, 1, 16, 1e-3, torch.device("cpu"), torch.Generator().manual_seed(0))
    assert history[0]["r1"] > 0  # the penalty is in the discriminator's loss
    gan.save(tmp_path / "gan.pt")
    loaded = load_backbone(tmp_path / "gan.pt", {"kind": "gan", "width": 8})
    assert loaded.config() == gan.config()
    w = loaded.sample_prior(4, torch.Generator().manual_seed(1))
    assert not torch.allclose(w, torch.randn(4, 8, generator=torch.Generator().manual_seed(1)))  # mapped into W
    assert torch.equal(w, gan.eval().sample_prior(4, torch.Generator().manual_seed(1)))
    assert loaded.decode(w).shape == (4, 3, 16, 16)


def test_more_convolutions_reach_full_resolution():
    def finest_conv_side(gan: DCGAN) -> int:
        x, side = torch.zeros(1, 8), 0
        for layer in gan.generator_logits:
            x = layer(x)
            if isinstance(layer, torch.nn.Conv2d) and layer.out_channels != 3:
                side = x.shape[-1]
        return side

    assert finest_conv_side(DCGAN(latent_dim=8, image_size=16, width=8).eval()) == 8  # the shipped architecture
    assert finest_conv_side(DCGAN(latent_dim=8, image_size=16, width=8, convs_per_scale=2).eval()) == 16
