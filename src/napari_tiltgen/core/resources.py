"""Memory available to a job, and a check of a job's estimated peak against it.

Before a long job (reconstruction, inpainting, INR/DIP fits) the CLI estimates its peak memory
from the data's shape and refuses it with a clear message when it would not fit, instead of
letting the operating system kill it (or swap for hours) part-way through.

The memory counted is the smallest of: the machine's available memory (``MemAvailable`` of
``/proc/meminfo``), the cgroup limit minus current use (containers, Slurm jobs), and the
``TILTGEN_MEMORY_LIMIT`` environment variable (bytes, or with a unit: ``8G``, ``512M``), which
users and tests set to model a smaller machine.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from napari_tiltgen.core.errors import TiltgenError

GiB = float(1 << 30)
_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """``"8G"`` -> bytes (units K, M, G, T, powers of 1024; a plain number is bytes)."""
    m = re.fullmatch(r"\s*([0-9.]+)\s*([KMGT]?)i?B?\s*", str(text), re.IGNORECASE)
    if not m:
        raise TiltgenError(f"TILTGEN_MEMORY_LIMIT: cannot read {text!r}; use e.g. 8G or 512M.")
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


def _meminfo_available() -> int | None:
    try:
        text = Path("/proc/meminfo").read_text()
    except OSError:
        return None
    m = re.search(r"^MemAvailable:\s+(\d+)\s*kB", text, re.MULTILINE)
    return int(m.group(1)) * 1024 if m else None


def _cgroup_available() -> int | None:
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        (
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "/sys/fs/cgroup/memory/memory.usage_in_bytes",
        ),
    ):
        try:
            limit = Path(limit_file).read_text().strip()
            usage = int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit == "max" or not limit.isdigit() or int(limit) >= 1 << 60:
            return None
        return max(0, int(limit) - usage)
    return None


def available_memory() -> int:
    """Bytes a new job can use (see module docstring)."""
    cands = [v for v in (_meminfo_available(), _cgroup_available()) if v is not None]
    env = os.environ.get("TILTGEN_MEMORY_LIMIT")
    if env:
        cands.append(parse_size(env))
    if not cands:
        try:
            cands.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            return 1 << 62
    return int(min(cands))


def check_memory(needed_bytes: float, what: str, advice: str, path: str | None = None) -> None:
    """Refuse a job whose estimated peak ``needed_bytes`` exceeds the available memory."""
    avail = available_memory()
    if needed_bytes > avail:
        raise TiltgenError(
            f"{what} needs about {needed_bytes / GiB:.1f} GiB of memory but only "
            f"{avail / GiB:.1f} GiB is available; {advice}",
            path,
        )


def job_peak_bytes(
    command: str,
    n_tilts: int,
    ny: int,
    nx: int,
    *,
    thickness: int | None = None,
    n_out_frames: int | None = None,
    n_times: int = 1,
    device_is_cuda: bool = False,
    method: str | None = None,
) -> float:
    """Estimated peak host memory (bytes) of a CLI job on a ``(n_tilts, ny, nx)`` series.

    Linear in the float32 volume and projections, with factors above the growth measured by
    ``benchmarks/memory_estimate.py`` (61 tilts, 128^3 and 224^3, real CLI processes):
    WBP 3.7x and SIRT 2.2x of volume + data; fit-inr 54x the volume (the field decoded on the
    voxel grid with its MLP activations) plus ~130 MiB; inpaint 18x the volume (WBP, SIRT and
    network channels, slice batches). fit-dip and interpolate are not measured: one volume per
    output time, and the output frames, with the same margin. On CUDA the volume lives on the
    GPU, so the host keeps about one copy.
    """
    nz = int(thickness or nx)
    vol = 4.0 * nz * ny * nx
    data = 4.0 * n_tilts * ny * nx
    if device_is_cuda:
        return vol + 2 * data
    if command == "reconstruct":
        # measured (benchmarks/memory_estimate.py, 61 x 256^2 -> 256^3): WBP 3.7x, SIRT 2.3x
        return (4.5 if (method or "").lower() in ("wbp", "fbp") else 3.0) * (vol + data)
    if command == "inpaint":
        return 20.0 * vol + 3 * data
    if command == "fit-inr":
        return 60.0 * vol + 3 * data + (256 << 20)
    if command == "fit-dip":
        return (n_times + 4.0) * vol + 3 * data
    if command == "interpolate":
        return 4.0 * (n_out_frames or n_tilts) * ny * nx + 3 * data
    return 2.0 * data
