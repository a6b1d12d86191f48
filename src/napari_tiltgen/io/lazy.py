"""A read-only float32 view of a stack stored in another form, converted frame by frame.

Microscope stacks are often int8/int16/uint16 (FEI Inspect3D writes int16 with a vacuum level near
-31900) or arrive as several frames per tilt. Converting a multi-GB int16 file to float32 on
opening doubles its size in memory and takes seconds; :class:`LazyFrames` keeps the file's own
array (a ``numpy.memmap`` or a dask array) and converts only what is indexed:

>>> lazy = LazyFrames(np.arange(24, dtype=np.int16).reshape(4, 2, 3))
>>> lazy.shape, lazy.dtype
((4, 2, 3), dtype('float32'))
>>> lazy[1]                       # one frame, float32
array([[ 6.,  7.,  8.],
       [ 9., 10., 11.]], dtype=float32)
>>> np.asarray(lazy).dtype        # the whole stack, converted in chunks
dtype('float32')

With ``groups`` (lists of source frame indices), frame ``i`` of the view is the mean (or sum) of
the source frames ``groups[i]``: several frames recorded at one tilt become one tilt.

Downstream code uses ``ts.data`` either per frame (``ts.data[i]``, ``ts.data[i0:i1]``) or whole
(``np.asarray(ts.data, np.float32)``); both work on this object, and napari displays it like any
array-like (``shape``, ``dtype``, ``ndim``, ``__getitem__``).
"""

from __future__ import annotations

import mmap
from typing import Any

import numpy as np

__all__ = ["LazyFrames", "release_pages"]


def release_pages(array: Any) -> bool:
    """Drop the pages a read-only memory map has brought into this process's resident memory.

    Reading slab after slab of a memory-mapped stack leaves every page read resident (counted in
    the process's RSS, though the kernel could reclaim them). ``madvise(MADV_DONTNEED)`` unmaps
    them from the process; the file and the page cache are untouched and a later read faults
    them back in. ``array``: a ``numpy.memmap``, a view of one or a :class:`LazyFrames` over
    one; anything else (an in-memory array, a dask array) is left alone. Returns whether pages
    were released.
    """
    if isinstance(array, LazyFrames):
        array = array.source
    base = array
    for _ in range(8):  # views of a memmap chain back to the mmap.mmap object
        if isinstance(base, mmap.mmap):
            break
        base = getattr(base, "_mmap", None) or getattr(base, "base", None)
        if base is None:
            return False
    if not isinstance(base, mmap.mmap) or not hasattr(base, "madvise"):
        return False
    if getattr(array, "flags", None) is not None and array.flags.writeable:
        return False  # a writable map may hold data not yet on disk: leave it
    base.madvise(mmap.MADV_DONTNEED)
    return True


class LazyFrames:
    """Float32 frames of ``source`` (``(n, ny, nx)``, any real dtype), converted on access.

    Parameters
    ----------
    source
        Array-like with ``shape``, ``dtype`` and numpy-style ``__getitem__`` (a memory map or a
        dask array); never written to.
    groups
        Optional list of integer index arrays into ``source``'s first axis: frame ``i`` of the
        view combines the source frames ``groups[i]``.
    reduce
        ``"mean"`` or ``"sum"``: how the frames of a group are combined.
    """

    def __init__(self, source: Any, groups: list[np.ndarray] | None = None,
                 reduce: str = "mean") -> None:
        if len(source.shape) != 3:
            raise ValueError(f"LazyFrames needs a 3-D source, got shape {tuple(source.shape)}")
        if reduce not in ("mean", "sum"):
            raise ValueError(f"reduce must be 'mean' or 'sum', not {reduce!r}")
        self._src = source
        self._groups = None if groups is None else [np.asarray(g, dtype=np.intp).reshape(-1)
                                                    for g in groups]
        self._reduce = reduce
        n = source.shape[0] if self._groups is None else len(self._groups)
        self._shape = (int(n), int(source.shape[1]), int(source.shape[2]))

    # ---------------------------------------------------------------- array-like protocol
    @property
    def shape(self) -> tuple[int, int, int]:
        return self._shape

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.float32)

    @property
    def ndim(self) -> int:
        return 3

    @property
    def size(self) -> int:
        return int(np.prod(self._shape))

    @property
    def nbytes(self) -> int:
        return self.size * 4

    @property
    def source_dtype(self) -> np.dtype:
        """dtype of the stored frames (e.g. int16)."""
        return np.dtype(self._src.dtype)

    @property
    def source(self) -> Any:
        """The stored array (read-only memory map or dask array)."""
        return self._src

    def __len__(self) -> int:
        return self._shape[0]

    def __repr__(self) -> str:
        g = "" if self._groups is None else f", {self._reduce} of frame groups"
        return (f"LazyFrames(shape={self._shape}, dtype=float32, stored as "
                f"{self.source_dtype}{g})")

    def __getitem__(self, key: Any) -> np.ndarray:
        key = self._normalise_key(key)
        if self._groups is None:
            return np.asarray(self._src[key], dtype=np.float32)
        first, rest = key[0], key[1:]
        idx = np.arange(self._shape[0])[first]
        if np.ndim(idx) == 0:
            return self._group(int(idx), rest)
        out = [self._group(int(i), rest) for i in np.asarray(idx).reshape(-1)]
        if not out:
            probe = np.zeros(self._shape[1:], np.float32)[rest]
            return np.zeros((0,) + probe.shape, np.float32)
        return np.stack(out)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = np.empty(self._shape, dtype=np.float32)
        frame_bytes = max(1, self._shape[1] * self._shape[2] * 4)
        step = max(1, (64 << 20) // frame_bytes)
        for start in range(0, self._shape[0], step):
            out[start:start + step] = self[start:start + step]
        return out if dtype is None else out.astype(dtype, copy=False)

    # ---------------------------------------------------------------- helpers
    def _normalise_key(self, key: Any) -> tuple:
        if not isinstance(key, tuple):
            key = (key,)
        if any(k is Ellipsis for k in key):
            i = next(j for j, k in enumerate(key) if k is Ellipsis)
            fill = 3 - (len(key) - 1)
            key = key[:i] + (slice(None),) * fill + key[i + 1:]
        return key + (slice(None),) * (3 - len(key))

    def _group(self, i: int, rest: tuple) -> np.ndarray:
        members = self._groups[i]  # type: ignore[index]
        acc = None
        for m in members:
            f = np.asarray(self._src[(int(m),) + rest], dtype=np.float64)
            acc = f if acc is None else acc + f
        assert acc is not None
        if self._reduce == "mean":
            acc = acc / len(members)
        return acc.astype(np.float32)
