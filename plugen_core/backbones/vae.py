"""A convolutional VAE for small RGB images (side a power of two, >= 16)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from plugen_core import resume
from plugen_core.backbones.base import ImageBackbone


class ConvVAE(ImageBackbone):
    kind = "vae"
    has_encoder = True

    def __init__(self, latent_dim: int = 32, image_size: int = 32, channels: int = 3, width: int = 32, beta: float = 1.0):
        super().__init__(latent_dim, image_size, channels, width)
        self.beta = beta
        widths = [width * 2**i for i in range(self.n_scales)]  # down to the 4x4 feature map
        enc: list[nn.Module] = []
        for c_in, c_out in zip([channels] + widths[:-1], widths):
            enc += [nn.Conv2d(c_in, c_out, 4, 2, 1), nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2)]
        self.encoder = nn.Sequential(*enc, nn.Flatten(), nn.Linear(widths[-1] * 16, 256), nn.LeakyReLU(0.2), nn.Linear(256, 2 * latent_dim))
        dec: list[nn.Module] = [nn.Linear(latent_dim, 256), nn.LeakyReLU(0.2), nn.Linear(256, widths[-1] * 16), nn.LeakyReLU(0.2), nn.Unflatten(1, (widths[-1], 4, 4))]
        rev = widths[::-1]
        for c_in, c_out in zip(rev[:-1], rev[1:]):
            dec += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1), nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2)]
        dec.append(nn.ConvTranspose2d(rev[-1], channels, 4, 2, 1))
        self.decoder_logits = nn.Sequential(*dec)

    def config(self) -> dict:
        return {"latent_dim": self.latent_dim, "image_size": self.image_size, "channels": self.channels, "width": self.width, "beta": self.beta}

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, logvar = self.encoder(x).chunk(2, dim=1)
        return mean, logvar.clamp(-12, 8)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.posterior(x)[0]

    def decode(self, w: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decoder_logits(w))

    def loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Negative ELBO per image: Bernoulli reconstruction (sharper than MSE on flat colours) + beta KL."""
        mean, logvar = self.posterior(x)
        w = mean + torch.randn_like(mean) * torch.exp(0.5 * logvar)
        recon = F.binary_cross_entropy_with_logits(self.decoder_logits(w), x, reduction="none").sum(dim=(1, 2, 3)).mean()
        kl = 0.5 * (mean**2 + logvar.exp() - 1 - logvar).sum(dim=1).mean()
        return {"loss": recon + self.beta * kl, "recon": recon, "kl": kl}

    def fit(self, data, epochs, batch_size, lr, device, generator, state=None) -> list[dict]:
        self.to(device).train()
        opt = torch.optim.Adam(self.parameters(), lr=lr)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * math.ceil(len(data) / batch_size))
        history: list[dict] = []
        for epoch in resume.epochs(state, epochs, history, generator, model=self, optimiser=opt, schedule=sched):
            perm = torch.randperm(len(data), generator=generator).numpy()
            sums: dict[str, float] = {}
            for start in tqdm(range(0, len(data), batch_size), desc=f"vae epoch {epoch + 1}/{epochs}", leave=False):
                x = self.preprocess(data[perm[start : start + batch_size]]).to(device)
                terms = self.loss(x)
                opt.zero_grad()
                terms["loss"].backward()
                opt.step()
                sched.step()
                for k, v in terms.items():
                    sums[k] = sums.get(k, 0.0) + v.item() * len(x)
            row = {"epoch": epoch + 1, **{k: v / len(data) for k, v in sums.items()}, "lr": sched.get_last_lr()[0]}
            history.append(row)
            print(f"[backbone] epoch {row['epoch']}/{epochs} loss {row['loss']:.2f} recon {row['recon']:.2f} kl {row['kl']:.2f}", flush=True)
        return history
