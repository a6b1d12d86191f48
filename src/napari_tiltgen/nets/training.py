"""What the two network trainers share: the learning-rate schedule, per-item PSNR and the
resumable training state.

:mod:`~napari_tiltgen.nets.interpolation.train` and :mod:`~napari_tiltgen.nets.inpainting.train`
keep their own data, losses and loops; both resume from ``OUT/checkpoint.safetensors`` written by
:func:`save_training_state` (every module's state and every optimiser's full state, tensors in
safetensors, the rest as JSON in its metadata: no pickle), checked by a fingerprint of the
settings that must match.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import torch

from napari_tiltgen.core.errors import TiltgenError

__all__ = ["item_psnr", "load_training_state", "save_training_state", "warmup_cosine"]


def warmup_cosine(step: int, total: int, peak: float, floor: float, warmup: int = 0) -> float:
    """Linear warm-up over ``warmup`` steps to ``peak``, then cosine decay to ``floor`` at
    ``total`` (and ``floor`` after it)."""
    if step < warmup:
        return peak * (step + 1) / warmup
    frac = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + 0.5 * (peak - floor) * (1.0 + math.cos(math.pi * frac))


def item_psnr(reference: torch.Tensor, test: torch.Tensor | None = None, *,
              mse: torch.Tensor | None = None) -> torch.Tensor:
    """PSNR (dB) of each item of a batch, each against its own reference's range: of ``test``,
    or of a given per-item mean squared error ``mse`` (e.g. of part of the error)."""
    n = reference.shape[0]
    r = reference.reshape(n, -1)
    if mse is None:
        mse = ((test.reshape(n, -1) - r) ** 2).mean(dim=1)
    rng = (r.amax(dim=1) - r.amin(dim=1)).clamp(min=1e-12)
    return 10.0 * torch.log10(rng * rng / mse.clamp(min=1e-12))


def save_training_state(path: str | os.PathLike, modules: dict[str, torch.nn.Module],
                        optimizers: dict[str, torch.optim.Optimizer],
                        state: dict[str, Any]) -> None:
    """Write modules, optimisers and ``state`` (JSON-able: step, best score, fingerprint...)
    to one safetensors file through the package's output path (atomic: a run stopped while
    writing keeps its last state)."""
    from safetensors.torch import save_file

    from napari_tiltgen.io.output import write_file

    tensors: dict[str, torch.Tensor] = {}
    groups: dict[str, Any] = {}
    for name, module in modules.items():
        tensors.update({f"{name}.{k}": v.detach().cpu().contiguous()
                        for k, v in module.state_dict().items()})
    for name, opt in optimizers.items():
        sd = opt.state_dict()
        for idx, st in sd["state"].items():
            for key, v in st.items():
                tensors[f"{name}.{idx}.{key}"] = torch.as_tensor(v).detach().cpu().clone()
        groups[name] = sd["param_groups"]
    meta = {"state": json.dumps(state), "param_groups": json.dumps(groups)}
    write_file(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta), overwrite=True)


def load_training_state(path: str | os.PathLike, modules: dict[str, torch.nn.Module],
                        optimizers: dict[str, torch.optim.Optimizer],
                        device: torch.device) -> dict[str, Any]:
    """Restore what :func:`save_training_state` wrote into ``modules`` and ``optimizers`` (made
    as for the saved run); returns its ``state``."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt", device="cpu") as f:
        meta = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - a safe_open handle
    if "state" not in meta or "param_groups" not in meta:
        raise TiltgenError("this checkpoint was written by an earlier version of napari-tiltgen "
                           "and cannot be resumed; train into a new folder (or delete the "
                           "checkpoint to start this run again).", path)
    for name, module in modules.items():
        prefix = name + "."
        module.load_state_dict({k[len(prefix):]: v for k, v in tensors.items()
                                if k.startswith(prefix)})
        module.to(device)
    groups = json.loads(meta["param_groups"])
    for name, opt in optimizers.items():
        per_param: dict[int, dict[str, Any]] = {}
        for k, v in tensors.items():
            head, _, rest = k.partition(".")
            idx, _, key = rest.partition(".")
            if head == name and idx.isdigit():
                per_param.setdefault(int(idx), {})[key] = v if key == "step" else v.to(device)
        opt.load_state_dict({"state": per_param, "param_groups": groups[name]})
    return json.loads(meta["state"])
