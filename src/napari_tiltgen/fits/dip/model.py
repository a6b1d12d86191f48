"""A fitted DIP model (volumes at any time), the fit's result and its checkpoint files."""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_tiltgen.core.devices import resolve_device
from napari_tiltgen.core.errors import TiltgenError
from napari_tiltgen.fits.dip.network import DIPNetwork
from napari_tiltgen.fits.dip.times import nearest_frame
from napari_tiltgen.io.model import Volume
from napari_tiltgen.io.volume_series import VolumeSeries

__all__ = [
    "CHECKPOINT_FORMAT",
    "DEFAULT_MAX_OUTPUT_BYTES",
    "DIPModel",
    "DIPResult",
    "load_dip_model",
]

#: Tag stored in every checkpoint file (``torch.save`` of tensors and plain types only, read back
#: with ``weights_only=True``).
CHECKPOINT_FORMAT = "napari-tiltgen DIP checkpoint v1"

#: Default bound on the memory of the returned volumes, bytes.
DEFAULT_MAX_OUTPUT_BYTES = 4 << 30


@dataclass
class DIPModel:
    """A fitted network with what is needed to evaluate volumes at any time.

    Attributes
    ----------
    network
        The :class:`DIPNetwork`.
    scale
        Density that the network's output 1.0 stands for (from the static SIRT).
    t_first_s, t_last_s
        Times of the first and last frame, seconds (they map to ``s = 0`` and ``s = 1``).
    frame_times_s, frame_angles_deg
        Time (s) and tilt angle (degrees) of every frame, sorted by time.
    volume_shape
        ``(nz, ny, nx)``.
    voxel_size_A
        Voxel size, Å (or ``None``).
    """

    network: DIPNetwork
    scale: float
    t_first_s: float
    t_last_s: float
    frame_times_s: np.ndarray
    frame_angles_deg: np.ndarray
    volume_shape: tuple[int, int, int]
    voxel_size_A: float | None = None

    @property
    def device(self) -> torch.device:
        return self.network.latent.device

    def normalized_time(self, times_s: Any) -> np.ndarray:
        """``s = (t - t_first) / (t_last - t_first)`` of times in seconds."""
        t = np.asarray(times_s, dtype=np.float64).reshape(-1)
        return (t - self.t_first_s) / max(self.t_last_s - self.t_first_s, 1e-12)

    def angles_at(self, times_s: Any) -> np.ndarray:
        """Tilt angle (degrees) of the frame recorded nearest in time to each of ``times_s``."""
        t = np.asarray(times_s, dtype=np.float64).reshape(-1)
        return self.frame_angles_deg[nearest_frame(t, self.frame_times_s)]

    def _check_times(self, times_s: Any) -> np.ndarray:
        t = np.asarray(times_s, dtype=np.float64).reshape(-1)
        if t.size == 0:
            raise TiltgenError("no output times were given.")
        if not np.all(np.isfinite(t)):
            raise TiltgenError("the output times contain NaN or infinite values.")
        span = self.t_last_s - self.t_first_s
        tol = 1e-6 * max(span, 1.0)
        if t.min() < self.t_first_s - tol or t.max() > self.t_last_s + tol:
            raise TiltgenError(
                f"output times must lie within the acquisition, {self.t_first_s:g} to "
                f"{self.t_last_s:g} s; got {t.min():g} to {t.max():g} s (the fit cannot "
                "extrapolate)."
            )
        return t

    def iter_volumes(
        self, times_s: Any, slices_per_chunk: int = 16
    ) -> Iterator[tuple[slice, np.ndarray]]:
        """Evaluate in chunks of slices: yields ``(y_slice, array (T, nz, chunk, nx))``.

        Memory per chunk: ``T * nz * chunk * nx`` floats; the caller assembles what it needs.
        """
        t = self._check_times(times_s)
        ny = self.volume_shape[1]
        dev = self.device
        s = torch.as_tensor(self.normalized_time(t), dtype=torch.float32, device=dev)
        self.network.eval()
        with torch.no_grad():
            for y0 in range(0, ny, slices_per_chunk):
                y1 = min(ny, y0 + slices_per_chunk)
                y = torch.arange(y0, y1, device=dev)
                img = self.network(y, s) * self.scale  # (B, T, nz, nx)
                yield slice(y0, y1), img.permute(1, 2, 0, 3).float().cpu().numpy()

    def volumes_at(
        self, times_s: Any, *, max_bytes: int = DEFAULT_MAX_OUTPUT_BYTES, slices_per_chunk: int = 16
    ) -> np.ndarray:
        """Volumes ``(T, nz, ny, nx)`` float32 at times ``times_s`` (seconds).

        Raises :class:`TiltgenError` when the result would exceed ``max_bytes``; ask for fewer
        times per call then (the network can be evaluated at any time).
        """
        t = self._check_times(times_s)
        nz, ny, nx = self.volume_shape
        need = t.size * nz * ny * nx * 4
        if need > max_bytes:
            raise TiltgenError(
                f"{t.size} volumes of {nz}x{ny}x{nx} need {need / 2**30:.2f} GiB, more than the "
                f"limit of {max_bytes / 2**30:.2f} GiB; ask for fewer output times (e.g. every "
                "n-th frame) or evaluate them in batches with DIPModel.volumes_at()."
            )
        out = np.empty((t.size, nz, ny, nx), dtype=np.float32)
        for ys, part in self.iter_volumes(t, slices_per_chunk):
            out[:, :, ys, :] = part
        return out

    def preview(self, times: np.ndarray) -> np.ndarray:
        """Central z-plane ``(ny, nx)`` at the first, middle and last time, side by side."""
        nz, ny, nx = self.volume_shape
        picks = times[[0, times.size // 2, -1]]
        vols = np.zeros((3, ny, nx), dtype=np.float32)
        net = self.network
        with torch.no_grad():
            s = torch.as_tensor(
                self.normalized_time(picks), dtype=torch.float32, device=self.device
            )
            for y0 in range(0, ny, 16):
                y = torch.arange(y0, min(ny, y0 + 16), device=self.device)
                basis = net.basis(y)[..., nz // 2 : nz // 2 + 1, :]
                img = net.images(basis, net.weights(y, s))[:, :, 0, :]  # (B, 3, nx)
                vols[:, y0 : y0 + y.numel(), :] = img.permute(1, 0, 2).cpu().numpy() * self.scale
        return np.concatenate(list(vols), axis=1)

    def volume_at(self, time_s: float) -> Volume:
        """The volume at one time (seconds) as a :class:`Volume`."""
        data = self.volumes_at([time_s])[0]
        return Volume(
            data,
            self.voxel_size_A,
            provenance={"method": "dip", "parameters": {"time_s": float(time_s)}},
        )


@dataclass
class DIPResult:
    """Result of :func:`fit_dip_iter`.

    Attributes
    ----------
    volumes
        ``(n_times, nz, ny, nx)`` float32, density units (as SIRT).
    times_s
        Time of each volume, seconds from the start of the series (increasing).
    tilt_angles
        Tilt angle (degrees) recorded at (or nearest to) each time.
    loss_history
        Total loss after each self-supervised step (warm start not included).
    loss_terms
        ``{"data": ..., "smoothness": ...}`` per step (the two parts of the loss).
    model
        The fitted :class:`DIPModel`; ``model.volumes_at(times)`` evaluates any other times.
    static_sirt
        The static SIRT of all tilts ``(nz, ny, nx)`` (warm start; ``None`` after a resume).
    voxel_size_A
        Voxel size, Å.
    provenance
        Method, parameters, device, seconds, input history.
    """

    volumes: np.ndarray
    times_s: np.ndarray
    tilt_angles: np.ndarray
    loss_history: np.ndarray
    loss_terms: dict[str, np.ndarray] = field(default_factory=dict)
    model: DIPModel | None = None
    static_sirt: np.ndarray | None = None
    voxel_size_A: float | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def n_times(self) -> int:
        return int(self.volumes.shape[0])

    def label(self, i: int) -> str:
        """``"t = 812 s, tilt = +12.0 deg"`` for volume ``i``."""
        return f"t = {self.times_s[i]:.0f} s, tilt = {self.tilt_angles[i]:+.1f} deg"

    def volume_series(self) -> VolumeSeries:
        """The volumes as the data model's :class:`~napari_tiltgen.io.model.VolumeSeries`."""
        return VolumeSeries(
            self.volumes,
            self.times_s,
            self.tilt_angles,
            self.voxel_size_A,
            provenance=copy.deepcopy(self.provenance),
        )

    def volume(self, i: int) -> Volume:
        """Volume ``i`` as a :class:`Volume` with its time and angle in the provenance."""
        prov = copy.deepcopy(self.provenance)
        prov["parameters"] = {
            **prov.get("parameters", {}),
            "time_s": float(self.times_s[i]),
            "tilt_angle_deg": float(self.tilt_angles[i]),
        }
        return Volume(self.volumes[i], self.voxel_size_A, provenance=prov)


# ============================================================================ checkpoints
def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` atomically (temporary file renamed into place)."""
    tmp = path.with_name(f".{path.name}.part")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a damaged or foreign file
        raise TiltgenError(
            f"cannot read this checkpoint ({type(exc).__name__}: {exc}); delete "
            "it or choose another file.",
            path,
        ) from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise TiltgenError("this file is not a napari-tiltgen DIP checkpoint.", path)
    return state


def load_dip_model(path: str | os.PathLike, device: str = "cpu") -> DIPModel:
    """The fitted model stored in a checkpoint of :func:`fit_dip_iter`, to evaluate any time.

    Parameters
    ----------
    path
        Checkpoint file (read with ``torch.load(weights_only=True)``: tensors and plain values
        only, no code).
    device
        Torch device to evaluate on.
    """
    path = Path(path)
    st = _load_checkpoint(path)
    arch = st["architecture"]
    net = DIPNetwork(**arch)
    net.load_state_dict(st["network"])
    net.to(resolve_device(device))
    m = st["model"]
    return DIPModel(
        network=net,
        scale=float(m["scale"]),
        t_first_s=float(m["t_first_s"]),
        t_last_s=float(m["t_last_s"]),
        frame_times_s=np.asarray(m["frame_times_s"]),
        frame_angles_deg=np.asarray(m["frame_angles_deg"]),
        volume_shape=tuple(m["volume_shape"]),
        voxel_size_A=m["voxel_size_A"],
    )


def to_cpu(obj: Any) -> Any:
    """``obj`` with every tensor in it (nested dicts, lists, tuples) moved to the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v) for v in obj)
    return obj
