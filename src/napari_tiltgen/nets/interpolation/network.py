"""The tilt-frame interpolation network, its losses, and safetensors I/O.

Architecture (IFRNet family, written for 1-channel tilt frames)
-----------------------------------------------------------------
* A **shared pyramid encoder** turns each input frame into features at 1/2, 1/4, 1/8 and 1/16
  of the frame size (two 3x3 convolutions per level, the first with stride 2).
* Four **coarse-to-fine decoders**. The coarsest sees both frames' 1/16 features; each finer
  one sees the intermediate feature of the level above, both frames' features *warped* towards
  the intermediate frame with the current flows, and the flows themselves. Every decoder
  predicts a residual update of the two **bidirectional flows** (intermediate -> frame 0 and
  intermediate -> frame 1, pixels) at twice its input resolution, and the intermediate feature
  of the next level; the last one predicts the flows at full resolution, a **mask** and an
  intensity **residual**. The frame is ``m * warp(I0, F0) + (1 - m) * warp(I1, F1) + r`` with
  ``m = sigmoid(logit(1 - t) + mask logit)``. The flow outputs and the last decoder start at zero,
  so the untrained network *is* linear interpolation and training learns the corrections.
* Every decoder is **conditioned** on the intermediate position ``t`` in (0, 1) and on the
  angular gap between the two input frames (degrees) by four constant input planes
  ``(t, g, t g, (1 - t) g)`` with ``g = gap / gap_scale_deg``: the expected motion of a point at
  distance ``z`` from the tilt axis is about ``z * t * gap`` towards one frame and
  ``z * (1 - t) * gap`` towards the other, so one model serves every gap and inserts any number of
  frames per gap.

Frames enter the network normalised to about [0, 1] (:func:`normalise_pair`); sizes are padded
to a multiple of 16 internally.

Losses (TSGNet, after IFRNet)
-----------------------------
``L = charbonnier(I_hat - I) + census_7x7(I_hat, I) + 0.01 * sum_k census_3x3(F_hat_k, F_k)``
where ``F_hat_k`` are the decoders' intermediate features at 1/8, 1/4 and 1/2 and ``F_k`` the
encoder's features of the true intermediate frame (the "feature geometry" term; targets
detached).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "NETWORKS",
    "NetConfig",
    "TiltInterpNet",
    "census_loss",
    "charbonnier",
    "grow_into",
    "interpolation_loss",
    "load_model",
    "noise_level",
    "normalise_pair",
    "save_model",
    "warp",
]

N_COND = 4
"""Number of conditioning planes ``(t, g, t g, (1 - t) g)`` (plus ``NetConfig.noise_planes``)."""


@dataclass(frozen=True)
class NetConfig:
    """Size of the network.

    Parameters
    ----------
    channels
        Encoder channels at 1/2, 1/4, 1/8 and 1/16 of the frame size.
    decoder_channels
        Hidden channels of the decoders, finest (1/2 -> 1) to coarsest (1/16 -> 1/8).
    gap_scale_deg
        Gap (degrees) that maps to ``g = 1`` in the conditioning planes.
    noise_planes
        0: conditioned on ``t`` and the gap only. 2: also on the noise level of the two input
        frames (:func:`noise_level`, two robust estimates), so that one network can denoise
        noisy pairs and pass the detail of clean ones through.
    noise_scale
        Noise sigma (in units of the pair's normalised range) that maps to 1 in the noise
        planes.
    context
        0: a pair network (:class:`TiltInterpNet`). 2: a four-frame network that also sees the
        next recorded frame on each side
        (:class:`~napari_tiltgen.nets.interpolation.context.ContextInterpNet`).
    """

    channels: tuple[int, int, int, int] = (12, 24, 32, 48)
    decoder_channels: tuple[int, int, int, int] = (16, 32, 48, 64)
    gap_scale_deg: float = 12.0
    noise_planes: int = 0
    noise_scale: float = 20.0
    context: int = 0

    def __post_init__(self) -> None:
        if self.noise_planes not in (0, 2):
            raise ValueError(f"noise_planes must be 0 or 2; got {self.noise_planes}")
        if self.context not in (0, 2):
            raise ValueError(f"context must be 0 or 2; got {self.context}")

    @property
    def n_cond(self) -> int:
        """Conditioning planes given to every decoder."""
        return N_COND + self.noise_planes

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NetConfig:
        d = dict(d)
        for k in ("channels", "decoder_channels"):
            if k in d:
                d[k] = tuple(int(c) for c in d[k])
        return cls(**d)


# ---------------------------------------------------------------------------- building blocks
def _conv(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1), nn.PReLU(c_out))


class _ResBlock(nn.Module):
    """``prelu(x + conv(prelu(conv(x))))``."""

    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c, c, 3, 1, 1), nn.PReLU(c), nn.Conv2d(c, c, 3, 1, 1))
        self.act = nn.PReLU(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.body(x))


class _Decoder(nn.Module):
    """Fuse inputs, refine, upsample x2 (transposed convolution) to ``c_out`` channels."""

    def __init__(self, c_in: int, c_mid: int, c_out: int):
        super().__init__()
        self.body = nn.Sequential(_conv(c_in, c_mid), _ResBlock(c_mid),
                                  nn.ConvTranspose2d(c_mid, c_out, 4, 2, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


_GRIDS: dict[tuple, torch.Tensor] = {}


def warp(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Backward warp: ``out(p) = image(p + flow(p))`` (bilinear, border values outside).

    Parameters
    ----------
    image
        ``(N, C, H, W)``.
    flow
        ``(N, 2, H, W)`` displacement ``(dx, dy)`` in pixels.
    """
    h, w = image.shape[-2:]
    key = (h, w, image.device, image.dtype)
    base = _GRIDS.get(key)
    if base is None:
        ys = torch.linspace(-1.0, 1.0, h, device=image.device, dtype=image.dtype)
        xs = torch.linspace(-1.0, 1.0, w, device=image.device, dtype=image.dtype)
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        base = torch.stack([gx, gy], dim=-1)[None]
        if len(_GRIDS) > 64:
            _GRIDS.clear()
        _GRIDS[key] = base
    scale = torch.tensor([2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)], device=image.device,
                         dtype=image.dtype)
    grid = base + flow.permute(0, 2, 3, 1) * scale
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=True)


def _up2(flow: torch.Tensor) -> torch.Tensor:
    """Flow at twice the resolution (bilinear), in pixels of the finer grid."""
    return 2.0 * F.interpolate(flow, scale_factor=2.0, mode="bilinear", align_corners=False)


# ---------------------------------------------------------------------------- the network
class TiltInterpNet(nn.Module):
    """Conditioned IFRNet-style interpolation of 1-channel tilt frames.

    Parameters
    ----------
    config
        Channel counts and gap scale (:class:`NetConfig`).

    Examples
    --------
    >>> net = TiltInterpNet()
    >>> i0 = torch.rand(2, 1, 32, 32); i1 = torch.rand(2, 1, 32, 32)
    >>> out = net(i0, i1, t=torch.tensor([0.25, 0.5]), gap_deg=torch.tensor([4.0, 8.0]))
    >>> tuple(out["image"].shape)
    (2, 1, 32, 32)
    """

    def __init__(self, config: NetConfig | None = None):
        super().__init__()
        self.config = cfg = config or NetConfig()
        c1, c2, c3, c4 = cfg.channels
        d1, d2, d3, d4 = cfg.decoder_channels
        self.encoder = nn.ModuleList([
            nn.Sequential(_conv(c_in, c, stride=2), _conv(c, c))
            for c_in, c in zip((1, c1, c2, c3), (c1, c2, c3, c4))
        ])
        k = cfg.n_cond
        self.decoders = nn.ModuleList([
            _Decoder(2 * c4 + k, d4, 4 + c3),          # 1/16 -> 1/8
            _Decoder(3 * c3 + 4 + k, d3, 4 + c2),      # 1/8  -> 1/4
            _Decoder(3 * c2 + 4 + k, d2, 4 + c1),      # 1/4  -> 1/2
            _Decoder(3 * c1 + 4 + k, d1, 4 + 1 + 1),   # 1/2  -> 1: flows, mask, residual
        ])
        # Start as linear interpolation: zero flows, zero residual, mask = 1 - t. The flow
        # outputs (and every output of the last decoder) begin at exactly zero and learn from there.
        with torch.no_grad():
            for i, dec in enumerate(self.decoders):
                last = dec.body[-1]
                n_zero = last.out_channels if i == len(self.decoders) - 1 else 4
                last.weight[:, :n_zero].zero_()
                last.bias[:n_zero].zero_()

    # ------------------------------------------------------------------ parts
    def encode(self, image: torch.Tensor) -> list[torch.Tensor]:
        """Pyramid features ``[1/2, 1/4, 1/8, 1/16]`` of a normalised frame ``(N, 1, H, W)``;
        ``H`` and ``W`` must be multiples of 16."""
        feats = []
        x = image
        for level in self.encoder:
            x = level(x)
            feats.append(x)
        return feats

    def _cond(self, t: torch.Tensor, gap_deg: torch.Tensor, like: torch.Tensor,
              noise: torch.Tensor | None = None) -> torch.Tensor:
        n, _, h, w = like.shape
        t = t.to(like).reshape(n)
        g = gap_deg.to(like).reshape(n) / self.config.gap_scale_deg
        planes = [t, g, t * g, (1.0 - t) * g]
        if noise is not None:
            planes.extend(noise.to(like).reshape(n, -1).unbind(dim=1))
        c = torch.stack(planes, dim=1)
        return c[:, :, None, None].expand(n, len(planes), h, w)

    def noise_planes(self, img0: torch.Tensor, img1: torch.Tensor) -> torch.Tensor | None:
        """The noise conditioning ``(N, 2)`` of a normalised pair, or None (``noise_planes=0``)."""
        if not self.config.noise_planes:
            return None
        return (noise_level(img0, img1) * self.config.noise_scale).clamp(max=4.0)

    def decode(self, img0: torch.Tensor, img1: torch.Tensor, f0: Sequence[torch.Tensor],
               f1: Sequence[torch.Tensor], t: torch.Tensor, gap_deg: torch.Tensor
               ) -> dict[str, Any]:
        """Intermediate frame from two frames and their features (see :meth:`forward`).

        A noise-conditioned network (``config.noise_planes``) measures the noise of ``img0``
        and ``img1`` as given here (binned frames when the flow is estimated on a binned copy).
        """
        nz = self.noise_planes(img0, img1)
        x = torch.cat([f0[3], f1[3], self._cond(t, gap_deg, f0[3], nz)], dim=1)
        out = self.decoders[0](x)
        flow0, flow1, ft = out[:, 0:2], out[:, 2:4], out[:, 4:]
        features = [ft]
        for level, dec in zip((2, 1, 0), self.decoders[1:]):
            x = torch.cat([ft, warp(f0[level], flow0), warp(f1[level], flow1), flow0, flow1,
                           self._cond(t, gap_deg, ft, nz)], dim=1)
            out = dec(x)
            flow0 = out[:, 0:2] + _up2(flow0)
            flow1 = out[:, 2:4] + _up2(flow1)
            ft = out[:, 4:]
            if level > 0:
                features.append(ft)
        tc = t.to(ft).clamp(1e-3, 1.0 - 1e-3).view(-1, 1, 1, 1)
        mask = torch.sigmoid(ft[:, 0:1] + torch.log((1.0 - tc) / tc))
        residual = ft[:, 1:2]
        merged = mask * warp(img0, flow0) + (1.0 - mask) * warp(img1, flow1)
        return {"image": merged + residual, "flow0": flow0, "flow1": flow1, "mask": mask,
                "residual": residual, "features": features}

    def forward(self, img0: torch.Tensor, img1: torch.Tensor, t: torch.Tensor | float,
                gap_deg: torch.Tensor | float) -> dict[str, Any]:
        """Predict the frame at fraction ``t`` between ``img0`` and ``img1``.

        Parameters
        ----------
        img0, img1
            Normalised frames ``(N, 1, H, W)``, ``H`` and ``W`` multiples of 16.
        t
            Position of the new frame, 0 at ``img0`` and 1 at ``img1``; scalar or ``(N,)``.
        gap_deg
            Angular gap between ``img0`` and ``img1``, degrees; scalar or ``(N,)``.

        Returns
        -------
        dict
            ``image`` ``(N, 1, H, W)``, ``flow0``/``flow1`` (pixels), ``mask``, ``residual``,
            ``features`` (intermediate features at 1/8, 1/4, 1/2 for the geometry loss).
        """
        n, _, h, w = img0.shape
        if h % 16 or w % 16:
            raise ValueError(f"frame sizes must be multiples of 16 (pad_to_multiple); got {h}x{w}")
        t = torch.as_tensor(t, dtype=img0.dtype, device=img0.device).expand(n)
        gap = torch.as_tensor(gap_deg, dtype=img0.dtype, device=img0.device).expand(n)
        return self.decode(img0, img1, self.encode(img0), self.encode(img1), t, gap)

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def with_noise_planes(self) -> TiltInterpNet:
        """A noise-conditioned copy (``noise_planes=2``) that predicts exactly what this network
        predicts: the new planes enter every decoder through zero-initialised weights, so
        fine-tuning starts from this network's behaviour."""
        if self.config.noise_planes:
            return self
        cfg = NetConfig(**{**asdict(self.config), "noise_planes": 2})
        new = TiltInterpNet(cfg).to(next(self.parameters()).device)
        # only the first conv of each decoder grows: the conditioning planes are its last inputs
        grow_into(new, self.state_dict())
        return new.train(self.training)


def grow_into(new: nn.Module, old_state: dict[str, torch.Tensor]) -> None:
    """Load ``old_state`` into ``new``, whose tensors may be larger: each old tensor fills the
    leading slice of the new one (the old input channels of a conv, the old outputs of a
    transposed conv, the old entries of a bias) and the rest is zero, so new inputs are ignored
    and new outputs are zero until trained. Raises for tensors that cannot hold the old one."""
    with torch.no_grad():
        for name, p in new.state_dict().items():
            o = old_state[name]
            if p.shape == o.shape:
                p.copy_(o)
                continue
            if p.dim() != o.dim() or any(a < b for a, b in zip(p.shape, o.shape)):
                raise RuntimeError(f"cannot transfer {name}: {tuple(o.shape)} -> "
                                   f"{tuple(p.shape)}")
            p.zero_()
            p[tuple(slice(0, n) for n in o.shape)] = o


#: Network class by ``NetConfig.context``: the pair network here; the four-frame class registers
#: itself in :mod:`.context`, which the package imports (so :func:`load_model` finds it without
#: this module importing that one).
NETWORKS: dict[int, type[TiltInterpNet]] = {0: TiltInterpNet}


# ---------------------------------------------------------------------------- noise level
_LAPLACE = torch.tensor([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]]) / 6.0


def noise_level(img0: torch.Tensor, img1: torch.Tensor, max_samples: int = 262144
                ) -> torch.Tensor:
    """Robust noise sigma of a pair of frames ``(N, 1, H, W)``, two estimates ``(N, 2)``.

    Both frames are filtered with Immerkaer's difference-of-Laplacians kernel (divided by 6, so
    pixel-independent noise of sigma ``s`` gives a response of standard deviation ``s``, while
    planes and linear ramps give zero). Column 0 is the median absolute response / 0.6745
    (robust to edges; low where most of the frame is dark, noise-poor vacuum), column 1 the
    mean absolute response times sqrt(pi / 2) (Immerkaer's estimate; raised by edges).
    (J. Immerkaer, Fast noise variance estimation, CVIU 64, 300-302, 1996.)
    """
    x = torch.cat([img0, img1], dim=1).float()
    n, _, h, w = x.shape
    if h < 3 or w < 3:
        return torch.zeros(n, 2, dtype=img0.dtype, device=img0.device)
    r = F.conv2d(x.reshape(2 * n, 1, h, w), _LAPLACE.to(x)[None, None]).abs().reshape(n, -1)
    step = max(1, r.shape[1] // max_samples)
    r = r[:, ::step]
    med = r.median(dim=1).values / 0.6745
    mean = r.mean(dim=1) * math.sqrt(math.pi / 2.0)
    return torch.stack([med, mean], dim=1).to(img0.dtype)


# ---------------------------------------------------------------------------- normalisation
def normalise_pair(img0: torch.Tensor, img1: torch.Tensor, low_q: float = 0.005,
                   high_q: float = 0.999) -> tuple[torch.Tensor, torch.Tensor]:
    """Offset and scale that bring a pair of frames to about [0, 1].

    ``lo`` is the lower of the two frames' ``low_q`` quantiles, ``hi`` the higher of their
    ``high_q`` quantiles (per batch item); use ``(x - lo) / scale`` and invert with
    ``y * scale + lo``.

    Parameters
    ----------
    img0, img1
        ``(N, 1, H, W)`` frames in any units.

    Returns
    -------
    (lo, scale)
        ``(N, 1, 1, 1)`` each; ``scale > 0``.
    """
    n = img0.shape[0]
    both = torch.stack([img0.reshape(n, -1), img1.reshape(n, -1)], dim=1).float()
    step = max(1, both.shape[-1] // 65536)
    sample = both[..., ::step]
    lo = torch.quantile(sample, low_q, dim=-1).amin(dim=1)
    hi = torch.quantile(sample, high_q, dim=-1).amax(dim=1)
    scale = torch.clamp(hi - lo, min=1e-12)
    scale = torch.where(hi - lo > 1e-12 * hi.abs().clamp(min=1.0), scale,
                        torch.ones_like(scale))
    return lo.view(n, 1, 1, 1).to(img0.dtype), scale.view(n, 1, 1, 1).to(img0.dtype)


# ---------------------------------------------------------------------------- losses
def charbonnier(x: torch.Tensor, eps: float = 1e-3, alpha: float = 0.5) -> torch.Tensor:
    """Charbonnier penalty ``mean((x^2 + eps^2)^alpha)`` (TSGNet: alpha 0.5, eps 1e-3)."""
    return torch.mean((x * x + eps * eps) ** alpha)


def census_loss(pred: torch.Tensor, target: torch.Tensor, patch: int = 7) -> torch.Tensor:
    """Census loss (UnFlow/IFRNet): robust distance of the soft ternary transforms.

    The soft ternary transform of ``x`` at pixel ``p`` and neighbour ``q`` in a ``patch x patch``
    window is ``T = d / sqrt(0.81 + d^2)`` with ``d = x(q) - x(p)``. Per pixel and neighbour the
    loss is ``delta^2 / (0.1 + delta^2)`` with ``delta = T_pred - T_target``, averaged over the
    neighbours, the channels and the pixels at least ``patch // 2`` from the border. Zero for
    identical inputs; insensitive to a common offset.

    Parameters
    ----------
    pred, target
        ``(N, C, H, W)``; images use a 7x7 patch, feature maps 3x3.
    """
    r = patch // 2
    h, w = pred.shape[-2:]
    if h <= 2 * r or w <= 2 * r:
        raise ValueError(f"census loss needs images larger than {patch} x {patch}")
    core = (slice(None), slice(None), slice(r, h - r), slice(r, w - r))
    p0, t0 = pred[core], target[core]
    total = pred.new_zeros(())
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            if dy == 0 and dx == 0:
                continue
            sl = (slice(None), slice(None), slice(r + dy, h - r + dy), slice(r + dx, w - r + dx))
            dp = pred[sl] - p0
            dt = target[sl] - t0
            delta = dp * torch.rsqrt(0.81 + dp * dp) - dt * torch.rsqrt(0.81 + dt * dt)
            delta = delta * delta
            total = total + (delta / (0.1 + delta)).mean()
    return total / (patch * patch)


def interpolation_loss(out: dict[str, Any], target: torch.Tensor,
                       target_features: Sequence[torch.Tensor] | None = None,
                       geometry_weight: float = 0.01) -> dict[str, torch.Tensor]:
    """TSGNet objective ``charbonnier + census_7x7 + 0.01 * feature geometry``.

    Parameters
    ----------
    out
        Output of :meth:`TiltInterpNet.forward`.
    target
        True intermediate frame, normalised like the inputs, ``(N, 1, H, W)``.
    target_features
        Encoder features ``[1/2, 1/4, 1/8, ...]`` of the target (detached); ``None`` skips the
        geometry term.

    Returns
    -------
    dict
        ``total``, ``charbonnier``, ``census``, ``geometry`` (scalar tensors).
    """
    pred = out["image"]
    l_char = charbonnier(pred - target)
    l_cen = census_loss(pred, target, 7)
    if target_features is not None:
        # decoder features at 1/8, 1/4, 1/2 <-> encoder levels 2, 1, 0
        l_geo = sum(census_loss(f, tf.detach(), 3)
                    for f, tf in zip(out["features"], (target_features[2], target_features[1],
                                                       target_features[0])))
    else:
        l_geo = torch.zeros((), device=pred.device)
    total = l_char + l_cen + geometry_weight * l_geo
    return {"total": total, "charbonnier": l_char, "census": l_cen, "geometry": l_geo}


# ---------------------------------------------------------------------------- safetensors I/O
def save_model(path: str | Path, model: TiltInterpNet, metadata: dict[str, Any] | None = None,
               half: bool = False) -> Path:
    """Write the weights as safetensors, with the architecture and ``metadata`` as JSON strings.

    Parameters
    ----------
    path
        Output ``.safetensors`` file.
    model
        The network.
    metadata
        JSON-serialisable facts to carry along (training ranges, metrics, command...).
    half
        Store float16 weights (half the size; loaded back as float32).
    """
    from napari_tiltgen.nets.weights import write_weights

    meta = {"format": "napari-tiltgen interpolation v1",
            "architecture": json.dumps(model.config.to_dict()),
            "info": json.dumps(metadata or {})}
    return write_weights(path, model, meta, half=half)


def load_model(path: str | Path, device: str | torch.device = "cpu"
               ) -> tuple[TiltInterpNet, dict[str, Any]]:
    """Load a network written by :func:`save_model` (safetensors only; no pickle is read).

    Returns
    -------
    (model, info)
        The network in eval mode on ``device`` (float32), and its metadata dict.
    """
    from napari_tiltgen.nets.weights import build_from_weights, read_weights

    def accept(meta: dict[str, str]) -> bool:
        return "architecture" in meta and not meta.get("format", "").startswith(
            "napari-tiltgen inpainting")

    meta, tensors = read_weights(path, accept, "interpolation")
    def build(a: dict[str, Any]) -> TiltInterpNet:
        cfg = NetConfig.from_dict(a)
        if cfg.context not in NETWORKS:
            raise ValueError(f"no network class for context={cfg.context}")
        return NETWORKS[cfg.context](cfg)

    model = build_from_weights(path, meta, tensors, build, "interpolation")
    model.eval().to(device)
    info = json.loads(meta.get("info", "{}"))
    return model, info


def pad_to_multiple(x: torch.Tensor, multiple: int = 16) -> tuple[torch.Tensor, tuple[int, int]]:
    """Replicate-pad ``(N, C, H, W)`` on the bottom/right to multiples of ``multiple``."""
    h, w = x.shape[-2:]
    ph = (-h) % multiple
    pw = (-w) % multiple
    if ph == 0 and pw == 0:
        return x, (h, w)
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode), (h, w)

