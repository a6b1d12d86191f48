"""Running the inpainting network over the slices of a volume, with test-time flips.

The network sees one slice ``vol[:, y, :]`` (rows = z, the beam; columns = x) at a time. A
tilt range symmetric about 0 is unchanged by mirroring the slice in z, in x or in both (the
missing wedge is a double cone around ``k_z``; mirroring either axis maps it onto itself,
and mirroring both is a rotation by 180 degrees, which keeps any tilt range). The network is
not exactly equivariant to these mirrors, so each mirrored input gives a different, equally
valid estimate: :func:`inpaint_slices` with ``symmetric=True`` (the default of every caller
since 4 Dec 2026) runs all four (:data:`FLIPS`), mirrors each output back and returns their
mean. It costs four times the network's time; measured gain in ``models/inpainting.md``
("Test-time flips").
"""

from __future__ import annotations

import copy
from collections.abc import Generator, Sequence

import torch

from napari_tiltgen.core.devices import flush_denormals, is_oom
from napari_tiltgen.core.progress import Progress
from napari_tiltgen.nets.inpainting.data import normalise_inputs
from napari_tiltgen.nets.inpainting.network import UNetPP, crop_back, pad_to_multiple

__all__ = ["FLIPS", "SYMMETRIC_DEFAULT", "inpaint_slices", "network_volume"]

#: Test-time mirrors of a ``(B, C, z, x)`` batch: none, z, x, both (dimensions to flip).
FLIPS: tuple[tuple[int, ...], ...] = ((), (2,), (3,), (2, 3))

#: Average the network over :data:`FLIPS` unless a caller says otherwise.
SYMMETRIC_DEFAULT = True


def on_device(model: UNetPP, dev: torch.device) -> UNetPP:
    """``model`` when it is already on ``dev``, else a copy there: the cached model (shared by
    every caller of :func:`~napari_tiltgen.nets.inpainting.api.load_pretrained`) is never
    moved in place."""
    current = next(model.parameters()).device
    if current == dev or (current.type == dev.type and dev.index is None):
        return model
    return copy.deepcopy(model).to(dev)


def _flipped_mean(net: UNetPP, x: torch.Tensor, wedge: torch.Tensor,
                  flips: Sequence[tuple[int, ...]]) -> torch.Tensor:
    """The mean over ``flips`` of the network on the mirrored batch, each mirrored back."""
    acc = None
    for dims in flips:
        y = net(x.flip(dims) if dims else x, wedge)
        y = y.flip(dims) if dims else y
        acc = y if acc is None else acc + y
    assert acc is not None
    return acc / len(flips)


def inpaint_slices(model: UNetPP, inputs: torch.Tensor, missing_wedge_deg: float | torch.Tensor,
                   batch_size: int = 8, device: str | torch.device = "cpu",
                   symmetric: bool | None = None) -> Generator[Progress, None, torch.Tensor]:
    """Run the network over normalised slices ``(B, C, h, w)``; returns ``(B, h, w)`` on the CPU.

    Any ``h, w`` work (slices are zero-padded to multiples of 16). ``symmetric`` (``None``:
    :data:`SYMMETRIC_DEFAULT`): the mean over the four mirrors :data:`FLIPS`; ``False``: one
    pass. On a CUDA out-of-memory error the batch is halved, then the CPU is used, with a
    progress message saying so. Denormal floats are flushed to zero on the CPU during the
    forward pass: the shipped weights' deep activations reach that range, which made a
    256 x 256 slice 4x slower (0.82 -> 0.21 s on one thread).
    """
    dev = torch.device(device)
    flips = FLIPS if (SYMMETRIC_DEFAULT if symmetric is None else symmetric) else ((),)
    b = inputs.shape[0]
    wedge = torch.as_tensor(missing_wedge_deg, dtype=torch.float32).reshape(-1)
    wedge = wedge.expand(b) if wedge.numel() == 1 else wedge
    out = torch.empty((b,) + tuple(inputs.shape[-2:]))
    bs = max(1, int(batch_size))
    i = 0
    net = on_device(model, dev)
    while i < b:
        j = min(b, i + bs)
        try:
            x, hw = pad_to_multiple(inputs[i:j].to(dev))
            with torch.no_grad(), flush_denormals():
                y = _flipped_mean(net, x, wedge[i:j].to(dev), flips)
            out[i:j] = crop_back(y, hw)[:, 0].float().cpu()
        except Exception as exc:
            if not is_oom(exc) or dev.type != "cuda":
                raise
            torch.cuda.empty_cache()
            if bs > 1:
                bs = max(1, bs // 2)
                yield Progress(i / b, f"GPU out of memory; retrying {bs} slices at a time")
            else:
                dev = torch.device("cpu")
                net = on_device(model, dev)
                yield Progress(i / b, "GPU out of memory; continuing on the CPU")
            continue
        i = j
        yield Progress(j / b, f"inpainting slice {j}/{b}", preview=out[j - 1].numpy().copy())
    return out


def network_volume(model: UNetPP, recs: dict[str, torch.Tensor], channels: Sequence[str],
                   missing_wedge_deg: float, batch_size: int = 8,
                   device: str | torch.device = "cpu", symmetric: bool | None = None
                   ) -> Generator[Progress, None, torch.Tensor]:
    """The network's volume ``(nz, ny, nx)`` (CPU) from the input reconstructions ``recs``
    (``{channel: (nz, ny, nx)}``): slices ``vol[:, y, :]`` divided by their scale (at least 5 %
    of the volume's), the network (averaged over :data:`FLIPS` unless ``symmetric`` is
    ``False``), the scale multiplied back."""
    slices = {c: recs[c].permute(1, 0, 2).contiguous().cpu() for c in channels}
    first = slices[channels[0]]
    floor = 0.05 * float(torch.quantile(first.flatten()[:: max(1, first.numel() // 2_000_000)],
                                        0.999))
    x, scale = normalise_inputs(slices, channels, floor)
    del slices
    out = yield from inpaint_slices(model, x, missing_wedge_deg, batch_size, device, symmetric)
    return (out * scale[:, None, None]).permute(1, 0, 2).contiguous()
