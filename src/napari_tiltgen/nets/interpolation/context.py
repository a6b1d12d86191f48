"""The four-frame (context) interpolation network: the two frames around the new one and the
next recorded frame on each side.

A new frame between recorded tilts ``i`` and ``i + 1`` is predicted from ``(i - 1, i, i + 1,
i + 2)``. On noisy stacks the outer frames carry independent noise of nearly the same object,
so a network that may use them can average more dose than a pair; on clean stacks it can
ignore them. Architecture: :class:`~napari_tiltgen.nets.interpolation.network.TiltInterpNet`
with, in every decoder, the outer frames' features warped towards the new frame and their two
flows as extra inputs. The outer flows are parametrised as the constant-velocity
extrapolation of the inner ones plus a learned correction (``flow_a = 2 flow0 - flow1 +
d_a``, ``flow_b = 2 flow1 - flow0 + d_b``: frame ``i - 1`` lies one gap before frame ``i``),
and the final blend is a softmax over the four warped frames (inner logits as the pair
network's, outer logits learned from an offset of -5) plus a residual. Two condition planes
say whether each outer frame is present (at the ends of a stack it is not: the caller passes
the inner frame in its place and ``present = 0``).

:meth:`ContextInterpNet.from_pair_network` builds one that predicts what a trained pair
network predicts, up to the small initial weight of the outer frames (every new input and
output channel starts at zero), so training starts from the pair network's behaviour.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import torch
from torch import nn

from napari_tiltgen.nets.interpolation.network import (
    NETWORKS,
    NetConfig,
    TiltInterpNet,
    _Decoder,
    _up2,
    grow_into,
    warp,
)

__all__ = ["OUTER_LOGIT", "ContextInterpNet", "forward_batch", "is_context"]

#: Offset of the outer frames' blend logits (initial weight of each about e^-5 / (1 + 2 e^-5)).
OUTER_LOGIT = -5.0


def is_context(model: nn.Module) -> bool:
    """True for a four-frame network."""
    return isinstance(model, ContextInterpNet)


class ContextInterpNet(TiltInterpNet):
    """Four-frame tilt interpolation (see the module docstring).

    ``config.context`` must be 2 (two outer frames); the other fields as for
    :class:`~napari_tiltgen.nets.interpolation.network.TiltInterpNet`.
    """

    def __init__(self, config: NetConfig | None = None):
        super().__init__(config)
        cfg = self.config
        c1, c2, c3, c4 = cfg.channels
        d1, d2, d3, d4 = cfg.decoder_channels
        k = cfg.n_cond + 2  # + presence of each outer frame
        # inputs: the pair network's, then (outer features [warped], outer flows) ; outputs: the
        # pair network's, then the outer flow corrections (and, last decoder, the outer logits)
        self.decoders = nn.ModuleList([
            _Decoder(2 * c4 + k + 2 * c4, d4, 4 + c3 + 4),
            _Decoder(3 * c3 + 4 + k + 2 * c3 + 4, d3, 4 + c2 + 4),
            _Decoder(3 * c2 + 4 + k + 2 * c2 + 4, d2, 4 + c1 + 4),
            _Decoder(3 * c1 + 4 + k + 2 * c1 + 4, d1, 4 + 1 + 1 + 4 + 2),
        ])
        with torch.no_grad():
            for i, dec in enumerate(self.decoders):
                last = dec.body[-1]
                if i == len(self.decoders) - 1:
                    last.weight.zero_()
                    last.bias.zero_()
                else:
                    last.weight[:, :4].zero_()
                    last.bias[:4].zero_()
                    last.weight[:, -4:].zero_()
                    last.bias[-4:].zero_()

    @staticmethod
    def _out_split(out: torch.Tensor, last: bool) -> tuple[torch.Tensor, ...]:
        if last:
            return out[:, 0:2], out[:, 2:4], out[:, 4:6], out[:, 6:8], out[:, 8:10], out[:, 10:12]
        return out[:, 0:2], out[:, 2:4], out[:, 4:-4], out[:, -4:-2], out[:, -2:]

    def decode4(self, imgs: Sequence[torch.Tensor], feats: Sequence[Sequence[torch.Tensor]],
                present: torch.Tensor, t: torch.Tensor, gap_deg: torch.Tensor
                ) -> dict[str, Any]:
        """The new frame from ``imgs = (outer_a, img0, img1, outer_b)`` and their features.

        ``present`` ``(N, 2)``: 1 where the outer frame before / after is a real frame.
        """
        ia, i0, i1, ib = imgs
        fa, f0, f1, fb = feats
        nz = self.noise_planes(i0, i1)
        extra = present.to(i0).reshape(-1, 2)
        nz = extra if nz is None else torch.cat([nz, extra], dim=1)
        x = torch.cat([f0[3], f1[3], self._cond(t, gap_deg, f0[3], nz), fa[3], fb[3]], dim=1)
        flow0, flow1, ft, da, db = self._out_split(self.decoders[0](x), False)
        features = [ft]
        n_dec = len(self.decoders)
        for j, (level, dec) in enumerate(zip((2, 1, 0), self.decoders[1:]), start=1):
            flow_a = 2.0 * flow0 - flow1 + da
            flow_b = 2.0 * flow1 - flow0 + db
            x = torch.cat([ft, warp(f0[level], flow0), warp(f1[level], flow1), flow0, flow1,
                           self._cond(t, gap_deg, ft, nz),
                           warp(fa[level], flow_a), warp(fb[level], flow_b), flow_a, flow_b],
                          dim=1)
            last = j == n_dec - 1
            parts = self._out_split(dec(x), last)
            flow0 = parts[0] + _up2(flow0)
            flow1 = parts[1] + _up2(flow1)
            ft = parts[2]
            da = parts[3] + _up2(da)
            db = parts[4] + _up2(db)
            if last:
                outer_logits = parts[5]
            else:
                features.append(ft)
        flow_a = 2.0 * flow0 - flow1 + da
        flow_b = 2.0 * flow1 - flow0 + db
        tc = t.to(ft).clamp(1e-3, 1.0 - 1e-3).view(-1, 1, 1, 1)
        pres = extra.view(-1, 2, 1, 1)
        # absent outer frames get -inf (weight 0)
        la = torch.where(pres[:, 0:1] > 0.5, outer_logits[:, 0:1] + OUTER_LOGIT,
                         torch.full_like(outer_logits[:, 0:1], -1e4))
        lb = torch.where(pres[:, 1:2] > 0.5, outer_logits[:, 1:2] + OUTER_LOGIT,
                         torch.full_like(outer_logits[:, 1:2], -1e4))
        logits = torch.cat([ft[:, 0:1] + torch.log(1.0 - tc), torch.log(tc).expand_as(la),
                            la, lb], dim=1)
        w = torch.softmax(logits, dim=1)
        residual = ft[:, 1:2]
        merged = (w[:, 0:1] * warp(i0, flow0) + w[:, 1:2] * warp(i1, flow1)
                  + w[:, 2:3] * warp(ia, flow_a) + w[:, 3:4] * warp(ib, flow_b))
        return {"image": merged + residual, "flow0": flow0, "flow1": flow1, "flow_a": flow_a,
                "flow_b": flow_b, "weights": w, "mask": w[:, 0:1] / (w[:, 0:1] + w[:, 1:2]),
                "residual": residual, "features": features}

    def forward4(self, outer_a: torch.Tensor, img0: torch.Tensor, img1: torch.Tensor,
                 outer_b: torch.Tensor, t: torch.Tensor | float, gap_deg: torch.Tensor | float,
                 present: torch.Tensor | None = None) -> dict[str, Any]:
        """Predict the frame at ``t`` between ``img0`` and ``img1`` (``(N, 1, H, W)``, sizes
        multiples of 16, normalised like the pair network's inputs), with ``outer_a`` one gap
        before ``img0`` and ``outer_b`` one gap after ``img1``."""
        n, _, h, w = img0.shape
        if h % 16 or w % 16:
            raise ValueError(f"frame sizes must be multiples of 16 (pad_to_multiple); got {h}x{w}")
        t = torch.as_tensor(t, dtype=img0.dtype, device=img0.device).expand(n)
        gap = torch.as_tensor(gap_deg, dtype=img0.dtype, device=img0.device).expand(n)
        if present is None:
            present = torch.ones(n, 2, dtype=img0.dtype, device=img0.device)
        imgs = (outer_a, img0, img1, outer_b)
        return self.decode4(imgs, [self.encode(x) for x in imgs], present, t, gap)

    def forward(self, img0: torch.Tensor, img1: torch.Tensor, t: torch.Tensor | float,
                gap_deg: torch.Tensor | float) -> dict[str, Any]:
        """Pair prediction (no outer frames: both marked absent)."""
        n = img0.shape[0]
        present = torch.zeros(n, 2, dtype=img0.dtype, device=img0.device)
        return self.forward4(img0, img0, img1, img1, t, gap_deg, present)

    @classmethod
    def from_pair_network(cls, pair: TiltInterpNet) -> ContextInterpNet:
        """A context network that starts from a trained pair network's weights."""
        cfg = NetConfig(**{**asdict(pair.config), "context": 2})
        new = cls(cfg).to(next(pair.parameters()).device)
        # grown tensors: the first conv of each decoder (old inputs first, then the outer ones)
        # and its transposed conv and bias (old outputs first, then the outer ones)
        grow_into(new, pair.state_dict())
        return new.train(pair.training)


def forward_batch(model: TiltInterpNet, batch: dict[str, torch.Tensor], t: torch.Tensor,
                  gap_deg: torch.Tensor) -> dict[str, Any]:
    """The network's output on a batch (``img0``, ``img1``): with the outer frames
    (``outer_a``, ``outer_b``, ``present``) for a four-frame network given them, the pair
    otherwise. Used by training and by the adaptation to the user's stack."""
    if "outer_a" in batch and is_context(model):
        return model.forward4(batch["outer_a"], batch["img0"], batch["img1"], batch["outer_b"],
                              t, gap_deg, batch["present"])
    return model(batch["img0"], batch["img1"], t, gap_deg)

NETWORKS[2] = ContextInterpNet
