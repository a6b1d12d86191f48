"""The inpainting GAN: a wedge-conditioned U-Net++ generator, a VGG-like discriminator, the
relativistic least-squares GAN losses, and safetensors I/O.

Generator (:class:`UNetPP`)
    U-Net++ (Zhou et al. 2018) with four poolings: nodes ``X[i][j]`` at depth ``i`` (``width *
    2**i`` channels) and nesting level ``j``; ``X[i][0]`` is the encoder, ``X[i][j]`` takes all
    ``X[i][0..j-1]`` of its row (dense skips) and the upsampled ``X[i+1][j-1]``. Every node is two
    conv3x3-BatchNorm-SELU layers (as in the IRDM paper), followed by a FiLM modulation
    ``h * (1 + gamma) + beta`` whose ``gamma, beta`` come from an embedding of the missing-wedge
    size, so one network serves every wedge in its trained range. The output is the input
    channel ``residual_channel`` (SIRT for the shipped model) plus a learnt correction
    (residual learning), read from the last node ``X[0][4]``
    only (no deep supervision, as in the paper).
Discriminator (:class:`PatchDiscriminator`)
    Five VGG-like stages (conv-BN-LeakyReLU, max pooling in the first four, average pooling in
    the fifth) and one output convolution without activation. It sees the candidate image
    together with the generator's inputs (a conditional GAN).
Losses
    :func:`ralsgan_d_loss` and :func:`ralsgan_g_loss` are the paper's eqs. (1) and (2);
    :func:`generator_loss` adds the pixel loss.

Units: images are dimensionless (divided by the per-slice scale of
:func:`~napari_tiltgen.nets.inpainting.data.normalise_inputs`), wedges in degrees.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "GeneratorConfig",
    "PatchDiscriminator",
    "UNetPP",
    "generator_loss",
    "load_generator",
    "pad_to_multiple",
    "ralsgan_d_loss",
    "ralsgan_g_loss",
    "save_generator",
    "wedge_mask",
    "wedge_mse",
]

DEPTH = 4  # poolings
WEDGE_SCALE_DEG = 90.0  # the condition is wedge / 90 degrees


@dataclass
class GeneratorConfig:
    """Size of the generator.

    Parameters
    ----------
    in_channels
        Names of the input reconstructions, in order (e.g. ``["wbp", "sirt"]``).
    width
        Channels at full resolution; depth ``i`` has ``width * 2**i`` (paper: 32; 12 here for CPU).
    cond_dim
        Size of the wedge embedding.
    residual_channel
        Index of the input channel the learnt correction is added to (the last one if there
        are fewer channels).
    """

    in_channels: list[str] = field(default_factory=lambda: ["wbp", "sirt"])
    width: int = 12
    cond_dim: int = 32
    residual_channel: int = 1

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GeneratorConfig:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


class FiLM(nn.Module):
    """Per-channel scale and shift from the condition embedding (starts as the identity)."""

    def __init__(self, cond_dim: int, channels: int):
        super().__init__()
        self.lin = nn.Linear(cond_dim, 2 * channels)
        nn.init.zeros_(self.lin.weight)
        nn.init.zeros_(self.lin.bias)

    def forward(self, h: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.lin(cond)[:, :, None, None].chunk(2, dim=1)
        return h * (1.0 + gamma) + beta


class ConvBlock(nn.Module):
    """Two conv3x3-BatchNorm-SELU layers, then FiLM by the wedge embedding."""

    def __init__(self, cin: int, cout: int, cond_dim: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.SELU(),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.SELU(),
        )
        self.film = FiLM(cond_dim, cout)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.film(self.body(x), cond)


class UNetPP(nn.Module):
    """Wedge-conditioned U-Net++ generator (see the module docstring).

    ``forward(x, wedge_deg)``: ``x`` is ``(B, C, H, W)`` with ``H`` and ``W`` multiples of 16
    (:func:`pad_to_multiple`), ``wedge_deg`` ``(B,)`` degrees; returns ``(B, 1, H, W)``.
    """

    def __init__(self, config: GeneratorConfig | None = None):
        super().__init__()
        self.config = cfg = config or GeneratorConfig()
        c = [cfg.width * 2**i for i in range(DEPTH + 1)]
        self.embed = nn.Sequential(nn.Linear(1, cfg.cond_dim), nn.SELU(),
                                   nn.Linear(cfg.cond_dim, cfg.cond_dim), nn.SELU())
        nodes: dict[str, ConvBlock] = {}
        for i in range(DEPTH + 1):
            nodes[f"{i}_0"] = ConvBlock(len(cfg.in_channels) if i == 0 else c[i - 1], c[i],
                                        cfg.cond_dim)
        for j in range(1, DEPTH + 1):
            for i in range(DEPTH + 1 - j):
                nodes[f"{i}_{j}"] = ConvBlock(c[i] * j + c[i + 1], c[i], cfg.cond_dim)
        self.nodes = nn.ModuleDict(nodes)
        self.head = nn.Conv2d(c[0], 1, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor, wedge_deg: torch.Tensor) -> torch.Tensor:
        cond = self.embed(wedge_deg.reshape(-1, 1).to(x.dtype) / WEDGE_SCALE_DEG)
        X: dict[tuple[int, int], torch.Tensor] = {}
        h = x
        for i in range(DEPTH + 1):
            X[i, 0] = self.nodes[f"{i}_0"](h if i == 0 else F.max_pool2d(X[i - 1, 0], 2), cond)
        for j in range(1, DEPTH + 1):
            for i in range(DEPTH + 1 - j):
                up = F.interpolate(X[i + 1, j - 1], scale_factor=2.0, mode="bilinear",
                                   align_corners=False)
                X[i, j] = self.nodes[f"{i}_{j}"](
                    torch.cat([X[i, k] for k in range(j)] + [up], dim=1), cond)
        r = min(self.config.residual_channel, x.shape[1] - 1)
        return x[:, r:r + 1] + self.head(X[0, DEPTH])


class PatchDiscriminator(nn.Module):
    """VGG-like discriminator: 4 x (conv-BN-LeakyReLU-maxpool), conv-BN-LeakyReLU-avgpool, conv.

    ``forward(image, inputs)`` returns one score per patch ``(B, 1, H/32, W/32)``.
    """

    def __init__(self, in_channels: int = 3, width: int = 8):
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for k in range(5):
            cout = width * 2 ** min(k, 3)
            layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout),
                       nn.LeakyReLU(0.2), nn.MaxPool2d(2) if k < 4 else nn.AvgPool2d(2)]
            cin = cout
        layers.append(nn.Conv2d(cin, 1, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, image: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([image, inputs], dim=1))


# ---------------------------------------------------------------------------- losses
def ralsgan_d_loss(d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    """Relativistic average least-squares discriminator loss (IRDM eq. 1)."""
    return (torch.mean((d_real - d_fake.mean() - 1.0) ** 2)
            + torch.mean((d_fake - d_real.mean() + 1.0) ** 2))


def ralsgan_g_loss(d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    """Relativistic average least-squares generator loss (IRDM eq. 2)."""
    return (torch.mean((d_real - d_fake.mean() + 1.0) ** 2)
            + torch.mean((d_fake - d_real.mean() - 1.0) ** 2))


def wedge_mask(h: int, w: int, missing_wedge_deg: torch.Tensor) -> torch.Tensor:
    """``(B, 1, h, w)`` float mask of the missing wedge in the unshifted 2-D FFT of slices
    ``(z, x)`` (beam along z at 0 degrees): the frequencies more than ``90 - wedge / 2``
    degrees from the ``k_x`` axis, i.e. within ``wedge / 2`` of the ``k_z`` axis, which no
    measured projection samples. (SIRT's error on training slices: 87 % of its energy inside
    it at a 70-degree wedge, on 35 % of the frequencies.)"""
    kz = torch.fft.fftfreq(h, device=missing_wedge_deg.device).abs()[:, None]
    kx = torch.fft.fftfreq(w, device=missing_wedge_deg.device).abs()[None, :]
    phi = torch.rad2deg(torch.atan2(kz * h, kx * w))  # angle from k_x, frequencies in cycles
    limit = 90.0 - 0.5 * missing_wedge_deg.float().reshape(-1, 1, 1, 1)
    return (phi[None, None] > limit).float()


def wedge_mse(fake: torch.Tensor, target: torch.Tensor, missing_wedge_deg: torch.Tensor
              ) -> torch.Tensor:
    """Per-slice mean squared error of the part of ``fake - target`` in the missing wedge
    (:func:`wedge_mask`; orthonormal FFT, so with the whole plane as mask it is the MSE)."""
    err = torch.fft.fft2((fake - target).float(), norm="ortho")
    m = wedge_mask(fake.shape[-2], fake.shape[-1], missing_wedge_deg)
    return (m * err.abs().pow(2)).flatten(1).mean(1)


def generator_loss(fake: torch.Tensor, target: torch.Tensor, d_real: torch.Tensor | None = None,
                   d_fake: torch.Tensor | None = None, adv_weight: float = 0.0,
                   missing_wedge_deg: torch.Tensor | None = None, wedge_weight: float = 0.0
                   ) -> tuple[torch.Tensor, dict[str, float]]:
    """Pixel loss (L1 + MSE), plus ``wedge_weight`` times the MSE of the error's part in the
    missing wedge (:func:`wedge_mse`; the part the data-consistency step cannot correct), plus
    ``adv_weight`` times the RaLSGAN generator loss.

    Returns the total and its parts as floats (for logging).
    """
    l1 = F.l1_loss(fake, target)
    l2 = F.mse_loss(fake, target)
    total = l1 + l2
    parts = {"l1": l1.item(), "mse": l2.item()}
    if wedge_weight > 0 and missing_wedge_deg is not None:
        wl = wedge_mse(fake, target, missing_wedge_deg).mean()
        total = total + wedge_weight * wl
        parts["wedge_mse"] = wl.item()
    if adv_weight > 0 and d_real is not None and d_fake is not None:
        adv = ralsgan_g_loss(d_real, d_fake)
        total = total + adv_weight * adv
        parts["adv"] = adv.item()
    return total, parts


# ---------------------------------------------------------------------------- helpers
def pad_to_multiple(x: torch.Tensor, multiple: int = 16) -> tuple[torch.Tensor, tuple[int, int]]:
    """Zero-pad ``(B, C, H, W)`` symmetrically to multiples of ``multiple``; returns the
    padded tensor and the original ``(H, W)``. Undo with :func:`crop_back`."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x, (h, w)
    return F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)), (h, w)


def crop_back(y: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """Inverse of :func:`pad_to_multiple`."""
    h, w = hw
    ph, pw = y.shape[-2] - h, y.shape[-1] - w
    return y[..., ph // 2:ph // 2 + h, pw // 2:pw // 2 + w]


def n_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ---------------------------------------------------------------------------- safetensors I/O
def save_generator(path: str | os.PathLike, model: UNetPP,
                   info: dict[str, Any] | None = None, half: bool = False) -> Path:
    """Write the generator (weights and BatchNorm statistics) as safetensors.

    The architecture and ``info`` (training range, data, metrics) go into the file's metadata as
    JSON strings. ``half`` stores float16 weights (half the size; loaded back as float32).
    """
    from napari_tiltgen.nets.weights import write_weights

    meta = {"format": "napari-tiltgen inpainting generator",
            "architecture": json.dumps(asdict(model.config)),
            "info": json.dumps(info or {})}
    return write_weights(path, model, meta, half=half)


def load_generator(path: str | os.PathLike, device: str | torch.device = "cpu"
                   ) -> tuple[UNetPP, dict[str, Any]]:
    """Load a generator written by :func:`save_generator` (safetensors only; no pickle).

    Returns
    -------
    (model, info)
        The generator in eval mode, float32, on ``device``, and its metadata dict.

    Raises
    ------
    TiltgenError
        The file is missing, unreadable, or not an inpainting generator.
    """
    from napari_tiltgen.nets.weights import build_from_weights, read_weights

    meta, tensors = read_weights(
        path, lambda m: m.get("format") == "napari-tiltgen inpainting generator", "inpainting")
    model = build_from_weights(path, meta, tensors,
                               lambda a: UNetPP(GeneratorConfig.from_dict(a)), "inpainting")
    model.eval().to(device)
    return model, json.loads(meta.get("info", "{}"))
