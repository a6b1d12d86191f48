"""Progress reporting shared by every long computation.

Long work is written as a *generator* that yields :class:`Progress` events and ``return``-s its
result. That one shape serves every front end:

* napari: the generator is run by ``napari.qt.threading.thread_worker``; ``worker.quit()`` stops it
  at the next ``yield`` (a real cancel, no thread killing), and yielded previews update a layer;
* CLI / API: :func:`run` drives it to completion with an optional tqdm bar or callback.

Example
-------
>>> def work(n):
...     total = 0
...     for i in range(n):
...         total += i
...         yield Progress((i + 1) / n, f"step {i + 1}/{n}")
...     return total
>>> run(work(4), show=False)
6
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")


@dataclass
class Progress:
    """One progress event.

    Attributes
    ----------
    fraction
        Work done, in [0, 1].
    message
        Short human-readable status ("SIRT iteration 12/100").
    preview
        Optional 2-D array to show live (e.g. the central slice of the current estimate).
    values
        Optional scalars to plot or log (e.g. ``{"loss": 0.12}``).
    """

    fraction: float
    message: str = ""
    preview: np.ndarray | None = None
    values: dict[str, float] = field(default_factory=dict)


ProgressGen = Generator[Progress, None, T]


def scaled(
    gen: Generator[Progress, None, T], lo: float, hi: float, prefix: str = ""
) -> Generator[Progress, None, T]:
    """Re-yield a sub-generator's progress mapped into ``[lo, hi]`` (message, with ``prefix``
    in front, preview and values kept); return its result. The sub-generator is closed when
    this one is (cancel)."""
    try:
        while True:
            ev = next(gen)
            yield Progress(lo + (hi - lo) * ev.fraction, prefix + ev.message, ev.preview, ev.values)
    except StopIteration as stop:
        return stop.value
    finally:
        gen.close()


def run(
    gen: Generator[Progress, None, T],
    *,
    show: bool = True,
    callback: Callable[[Progress], Any] | None = None,
    desc: str = "",
) -> T:
    """Drive a progress generator to completion and return its result.

    Parameters
    ----------
    gen
        A generator yielding :class:`Progress` and returning the result.
    show
        Show a tqdm progress bar on stderr (only when stderr is a terminal or ``show`` is forced).
    callback
        Called with every event; may raise :class:`~napari_tiltgen.core.errors.Cancelled` to stop.
    desc
        Label of the progress bar.
    """
    bar = None
    if show:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=1000,
            desc=desc,
            file=sys.stderr,
            leave=False,
            bar_format="{l_bar}{bar}| {elapsed}<{remaining} {postfix}",
        )
    try:
        while True:
            try:
                event = next(gen)
            except StopIteration as stop:
                return stop.value
            if callback is not None:
                callback(event)
            if bar is not None:
                bar.n = int(round(1000 * min(max(event.fraction, 0.0), 1.0)))
                bar.set_postfix_str(event.message, refresh=True)
    finally:
        if bar is not None:
            bar.close()
        gen.close()
