"""Devices and threads: one place that turns a user's ``device`` into a torch device, says
which devices exist, recognises GPU out-of-memory errors, and sets CPU thread state.

Every method (reconstruction, networks, fits, the CLI and the widgets) resolves its device
with :func:`resolve_device` so that ``auto``/``cpu``/``cuda``/``cuda:N`` mean the same
everywhere and a bad or absent device gives the same one-line error.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

from napari_tiltgen.core.errors import TiltgenError

if TYPE_CHECKING:
    import torch

__all__ = [
    "available_devices",
    "flush_denormals",
    "free_cpu_cores",
    "is_oom",
    "num_threads",
    "resolve_device",
]


def resolve_device(
    device: str | torch.device | None = "auto", *, distributed: bool = False
) -> torch.device:
    """``"auto"`` (or ``None``) -> CUDA when available, else CPU; ``cpu``, ``cuda``, ``cuda:N``.

    Raises :class:`TiltgenError` for a name torch does not read, a CUDA device on a machine
    without one (or past the last one), and device types other than CPU and CUDA. With
    ``distributed``, ``auto`` picks this process's current CUDA device (one per rank).
    """
    import torch

    if device is None or (isinstance(device, str) and device.strip().lower() == "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device() if distributed else 0)
        return torch.device("cpu")
    try:
        dev = torch.device(device.strip().lower() if isinstance(device, str) else device)
    except (RuntimeError, TypeError) as exc:
        raise TiltgenError(
            f"unknown device {device!r} ({exc}); use auto, cpu, cuda or cuda:N."
        ) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise TiltgenError(
                f"device {device!r} was asked for but no CUDA GPU is available "
                "on this machine; use 'auto' or 'cpu'."
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise TiltgenError(
                f"device {device!r}: this machine has "
                f"{torch.cuda.device_count()} CUDA GPU(s), numbered from 0."
            )
    elif dev.type != "cpu":
        raise TiltgenError(f"device {device!r} is not supported; use auto, cpu, cuda or cuda:N.")
    return dev


def available_devices() -> list[str]:
    """The choices a device menu offers: ``auto``, ``cpu`` and each CUDA GPU."""
    import torch

    out = ["auto", "cpu"]
    if torch.cuda.is_available():
        out += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return out


def is_oom(exc: BaseException | str) -> bool:
    """Whether an exception (or its text) is a GPU or CPU out-of-memory error from torch."""
    if isinstance(exc, str):
        text = exc.lower()
    else:
        import torch

        if isinstance(exc, torch.cuda.OutOfMemoryError):
            return True
        if not isinstance(exc, RuntimeError):
            return False
        text = str(exc).lower()
    return any(
        m in text
        for m in (
            "out of memory",
            "outofmemoryerror",
            "can't allocate memory",
            "defaultcpuallocator",
            "not enough memory",
        )
    )


def _cpu_jiffies() -> tuple[int, int] | None:
    """(busy, total) CPU time of the whole machine from ``/proc/stat`` (Linux), else None."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError, IndexError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


_OTHERS: dict[str, float] = {"t": -1e9, "value": 0.0}


def _others_busy(window_s: float = 0.1) -> float | None:
    """Cores other processes keep busy now: the machine's busy CPU time over a short window
    minus this process's own, in cores (cached for 2 s). ``None`` where ``/proc/stat`` is not
    available. Unlike the load average it does not count this process's own recent work (a
    reconstruction that just ran on 2 threads made the load average say "2 busy" for a minute
    and the next one ran on 1 thread: 9.0 s against 6.3 s, 128^3 SIRT)."""
    import time

    now = time.monotonic()
    if now - _OTHERS["t"] < 2.0:
        return _OTHERS["value"]
    a = _cpu_jiffies()
    if a is None:
        return None
    own0, t0 = sum(os.times()[:2]), time.monotonic()
    time.sleep(window_s)
    b = _cpu_jiffies()
    own1, t1 = sum(os.times()[:2]), time.monotonic()
    if b is None or b[1] <= a[1]:
        return None
    n = os.cpu_count() or 1
    busy_cores = n * (b[0] - a[0]) / (b[1] - a[1])  # machine-wide busy cores in the window
    own_cores = (own1 - own0) / max(t1 - t0, 1e-6)
    _OTHERS.update(t=now, value=max(0.0, busy_cores - own_cores))
    return _OTHERS["value"]


def free_cpu_cores() -> int:
    """Cores of this process's CPU set that other processes leave free, at least 1.

    Other processes' use is sampled from ``/proc/stat`` over 0.1 s (:func:`_others_busy`),
    this process's own CPU time taken out; where that is not available, from the 1-minute load
    average (this process counted as one runnable task). On an idle machine all cores; with
    two cores and another busy process, 1. OpenMP threads that spin on a core another process
    needs made SIRT 4.6x slower with 2 threads than with 1 there. ``TILTGEN_THREADS`` (an
    integer) overrides it.
    """
    env = os.environ.get("TILTGEN_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    others = _others_busy()
    if others is None:
        try:
            others = max(0.0, os.getloadavg()[0] - 1.0)
        except (OSError, AttributeError):
            return n
    return max(1, min(n, int(n - others + 0.5)))


@contextlib.contextmanager
def num_threads(n: int | None) -> Iterator[None]:
    """Temporarily set torch's CPU thread count (``None`` or 0: leave it as it is)."""
    import torch

    if not n:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(max(1, int(n)))
    try:
        yield
    finally:
        torch.set_num_threads(old)


@contextlib.contextmanager
def flush_denormals() -> Iterator[None]:
    """Treat denormal floats as zero on this thread's CPU inside the block.

    Fitted fields decay to softplus values below 1e-38 in empty space; denormal arithmetic on
    them made CPU fits slow: a 64^3 INR fit 3x (200 steps 97 s -> 32 s), a 64^3 x 100 DIP fit
    1.3x (0.19 -> 0.15 s per step). torch has no getter for the flag; its default (off) is
    restored afterwards.
    """
    import torch

    enabled = torch.set_flush_denormal(True)
    try:
        yield
    finally:
        if enabled:
            torch.set_flush_denormal(False)
