"""``ConvVAE``: a convolutional VAE over log-mel spectrograms, and its registry.

Encoder: one stride-2 3x3 convolution per width (GroupNorm, SiLU), flattened
into a linear layer giving ``mu`` and ``logvar``. Decoder: a linear layer back
to the encoder's last feature map, one stride-2 transposed convolution per
width in reverse (doubling height and width), a 3x3 convolution to one
channel, cropped to the exact input shape, and a sigmoid: the targets are
``LogMel``'s [0, 1] normalised log-mel. Since each stride-2 step gives
``ceil(n / 2)``, doubling back always covers the input and the crop is
exact for any ``n_mels`` and ``frames``.

GroupNorm rather than BatchNorm: no batch statistics, so the output of one
sample never depends on its batch, a resumed run matches exactly, DDP needs
no synchronised norm, and the exported decoder is the trained function.

``logvar`` is clamped to [-20, 10] so ``exp`` stays finite under any input.
``forward`` samples ``z = mu + sigma * eps`` in training mode and uses
``mu`` in eval mode (deterministic validation and previews).

Exports: ``decoder_module()`` maps ``z [B, latent]`` to ``x_hat [B, 1, n_mels,
frames]``; ``encoder_module()`` maps ``x`` to ``[B, 2 * latent]``, ``mu`` in
the first ``latent`` columns and ``logvar`` in the rest (one output tensor:
simpler for ONNX runtimes and parity checks). Both share the model's
parameters and export with ``torch.onnx.export`` and ``torch.export``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

VAE_MODELS: dict[str, tuple[int, ...]] = {
    # encoder channel widths, one stride-2 convolution each
    "vae-small": (16, 32, 64),
    "vae-medium": (32, 64, 128, 256),
    "vae-large": (32, 64, 128, 256, 512),
}

LOGVAR_RANGE = (-20.0, 10.0)


def _groups(channels: int) -> int:
    return math.gcd(channels, 8)


def _down(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel_size=3, stride=2, padding=1),
        nn.GroupNorm(_groups(cout), cout),
        nn.SiLU(),
    )


def _up(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.ConvTranspose2d(cin, cout, kernel_size=4, stride=2, padding=1),
        nn.GroupNorm(_groups(cout), cout),
        nn.SiLU(),
    )


class ConvVAE(nn.Module):
    """Input and output ``[B, 1, n_mels, frames]``; latent ``[B, latent_dim]``."""

    def __init__(self, n_mels: int, frames: int, latent_dim: int, widths: Sequence[int]) -> None:
        super().__init__()
        if not widths:
            raise ValueError("ConvVAE needs at least one encoder width")
        self.n_mels, self.frames, self.latent_dim = int(n_mels), int(frames), int(latent_dim)
        self.widths = tuple(int(w) for w in widths)
        height, width = self.n_mels, self.frames
        for _ in self.widths:
            height, width = math.ceil(height / 2), math.ceil(width / 2)
        self.feature_shape = (self.widths[-1], height, width)
        flat = self.widths[-1] * height * width

        channels = [1, *self.widths]
        self.encoder = nn.Sequential(*(_down(channels[i], channels[i + 1]) for i in range(len(self.widths))))
        self.to_latent = nn.Linear(flat, 2 * self.latent_dim)
        self.from_latent = nn.Linear(self.latent_dim, flat)
        reverse = list(reversed(self.widths))
        self.decoder = nn.Sequential(
            *(_up(reverse[i], reverse[i + 1]) for i in range(len(reverse) - 1)),
            _up(reverse[-1], reverse[-1]),
        )
        self.to_mel = nn.Conv2d(reverse[-1], 1, kernel_size=3, padding=1)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        stats = self.to_latent(self.encoder(x).flatten(1))
        mu, logvar = stats.chunk(2, dim=1)
        return mu, logvar.clamp(*LOGVAR_RANGE)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        features = self.from_latent(z).view(-1, *self.feature_shape)
        out = self.to_mel(self.decoder(features))
        return torch.sigmoid(out[:, :, : self.n_mels, : self.frames])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(x)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu) if self.training else mu
        return self.decode(z), mu, logvar

    def decoder_module(self) -> nn.Module:
        """``z [B, latent] -> x_hat [B, 1, n_mels, frames]`` (shares this model's parameters)."""
        return _Decoder(self)

    def encoder_module(self) -> nn.Module:
        """``x -> [B, 2 * latent]``: ``mu`` then ``logvar`` (shares this model's parameters)."""
        return _Encoder(self)


class _Decoder(nn.Module):
    def __init__(self, vae: ConvVAE) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(z)


class _Encoder(nn.Module):
    def __init__(self, vae: ConvVAE) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu, logvar = self.vae.encode(x)
        return torch.cat([mu, logvar], dim=1)


def build_vae(name: str, n_mels: int, frames: int, latent_dim: int) -> ConvVAE:
    """The registered VAE ``name`` for spectrograms of ``n_mels`` x ``frames``."""
    if name not in VAE_MODELS:
        raise ValueError(
            f"model.name: unknown VAE model {name!r} for task vae; allowed: {', '.join(VAE_MODELS)}"
        )
    return ConvVAE(n_mels, frames, latent_dim, VAE_MODELS[name])
