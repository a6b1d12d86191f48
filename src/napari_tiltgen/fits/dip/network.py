"""The DIP network: (slice ``y``, normalised time ``s``) -> orthoslice ``(nz, nx)``."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["DIPNetwork"]

_SOFTPLUS_BETA = 10.0  # sharpness of the positivity at the output (in units of 1/scale)


def _fourier(s: torch.Tensor, n_freq: int) -> torch.Tensor:
    """``[sin(pi j s), cos(pi j s)]`` for ``j = 1..n_freq``: shape ``s.shape + (2 n_freq,)``."""
    j = torch.arange(1, n_freq + 1, dtype=s.dtype, device=s.device)
    a = math.pi * s[..., None] * j
    return torch.cat([torch.sin(a), torch.cos(a)], dim=-1)


class DIPNetwork(nn.Module):
    """Maps (slice ``y``, normalised time ``s``) to an orthoslice ``(nz, nx)``.

    Parameters
    ----------
    slice_shape
        ``(nz, nx)`` of the orthoslices, voxels.
    ny
        Number of slices along the tilt axis.
    n_components
        ``R``: number of time-varying basis images per slice (besides the static one).
    channels
        Width of the convolutional decoder.
    time_frequencies
        Fourier features of time: ``1 .. time_frequencies`` half-periods over the series (a
        bandwidth limit on how fast things can change).
    latent_stride
        Slices between latent knots along ``y``.
    hidden
        Width of the mixing MLP.
    """

    def __init__(
        self,
        slice_shape: tuple[int, int],
        ny: int,
        *,
        n_components: int = 8,
        channels: int = 32,
        time_frequencies: int = 8,
        latent_stride: int = 2,
        hidden: int = 64,
    ):
        super().__init__()
        nz, nx = (int(s) for s in slice_shape)
        self.slice_shape = (nz, nx)
        self.ny = int(ny)
        self.n_components = int(n_components)
        self.time_frequencies = int(time_frequencies)
        self.y_frequencies = 4
        self.latent_stride = max(1, int(latent_stride))
        n_knots = (self.ny - 1) // self.latent_stride + 2
        h0, w0 = max(2, math.ceil(nz / 4)), max(2, math.ceil(nx / 4))
        c = int(channels)
        self.latent = nn.Parameter(torch.randn(n_knots, c, h0, w0))
        self._sizes = [(2 * h0, 2 * w0), (nz, nx)]
        self.convs = nn.ModuleList(
            [nn.Conv2d(c, c, 3, padding=1), nn.Conv2d(c, c // 2, 3, padding=1)]
        )
        self.head = nn.Conv2d(c // 2, self.n_components + 1, 1)
        n_in = 2 * (self.time_frequencies + self.y_frequencies)
        self.mixer = nn.Sequential(
            nn.Linear(n_in, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, self.n_components),
        )
        with torch.no_grad():
            self.mixer[-1].weight.mul_(0.1)
            self.mixer[-1].bias.zero_()

    def _y_norm(self, y: torch.Tensor) -> torch.Tensor:
        return y.to(self.latent.dtype) / max(self.ny - 1, 1)

    def basis(self, y: torch.Tensor) -> torch.Tensor:
        """Basis images ``(n_slices, R + 1, nz, nx)`` of the slices ``y`` (integer indices)."""
        pos = y.to(self.latent.dtype) / self.latent_stride
        lo = pos.floor().long()
        frac = (pos - lo)[:, None, None, None]
        h = self.latent[lo] * (1 - frac) + self.latent[lo + 1] * frac
        for conv, size in zip(self.convs, self._sizes):
            h = F.interpolate(h, size=size, mode="bilinear", align_corners=False)
            h = F.leaky_relu(conv(h), 0.2)
        return self.head(h)

    def weights(self, y: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """Mixing weights ``(n_slices, n_times, R)`` of slices ``y`` at normalised times ``s``."""
        fy = _fourier(self._y_norm(y), self.y_frequencies)  # (B, 2Fy)
        ft = _fourier(s.to(self.latent.dtype), self.time_frequencies)  # (T, 2Ft)
        feats = torch.cat(
            [
                fy[:, None, :].expand(-1, ft.shape[0], -1),
                ft[None, :, :].expand(fy.shape[0], -1, -1),
            ],
            dim=-1,
        )
        return self.mixer(feats)

    @staticmethod
    def images(basis: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Slices ``(n_slices, n_times, nz, nx)`` from basis images and mixing weights."""
        mixed = basis[:, None, 0] + torch.einsum("btr,brzx->btzx", weights, basis[:, 1:])
        return F.softplus(mixed, beta=_SOFTPLUS_BETA)

    def forward(self, y: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """Slices ``(n_slices, n_times, nz, nx)`` of slices ``y`` at normalised times ``s``."""
        return self.images(self.basis(y), self.weights(y, s))
