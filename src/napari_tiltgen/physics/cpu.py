"""How many CPU cores other processes leave free (the default thread count under load)."""

from __future__ import annotations

import os

__all__ = ["free_cpu_cores"]


def free_cpu_cores() -> int:
    """Cores of this process's CPU set that other processes leave free, at least 1.

    From the 1-minute load average, this process counted as one runnable task: on an idle
    machine all cores; with two cores and another busy process, 1. OpenMP threads that spin on
    a core another process needs made SIRT 4.6x slower with 2 threads than with 1 there.
    ``TILTGEN_THREADS`` (an integer) overrides it.
    """
    env = os.environ.get("TILTGEN_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        others = max(0.0, os.getloadavg()[0] - 1.0)
    except (OSError, AttributeError):
        return n
    return max(1, min(n, int(n - others + 0.5)))
