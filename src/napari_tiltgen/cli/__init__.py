"""``tiltgen`` command line. Never imports Qt or napari.

Each sub-command lives in its own module of this package, which defines
``register(subparsers)``: it adds its parser and sets ``func`` to a function taking the parsed
arguments and returning an exit code. Add new modules to :data:`COMMAND_MODULES`.

Errors (see docs/cli.md, "Errors and outputs"):

* Errors the user can cause (:class:`~napari_tiltgen.errors.TiltgenError`, and operating-system
  errors such as a permission denied, a full disk, a file name too long, a symbolic-link loop,
  running out of memory) are printed as one line ``tiltgen: error: <file>: <problem>`` and exit
  with status 2, without a traceback.
* Anything unexpected (a bug) is printed as one line with a pointer to a log file holding the
  traceback (``$TILTGEN_LOG_DIR``, default ``<temp dir>/tiltgen-logs/``), exit status 1.
* A closed pipe (``tiltgen info x.mrc | head``) ends quietly; Ctrl-C prints ``cancelled`` (130).
* Options are checked before any work: every number must be finite, and the options of
  :data:`OPTION_LIMITS` must lie in their range (:func:`finite_float` and :func:`bounded_int`
  are argparse types for new options; :func:`check_options` applies the table to every command).
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import sys
from collections.abc import Sequence
from typing import Any

from napari_tiltgen.errors import Cancelled, TiltgenError

COMMAND_MODULES: list[str] = [
    "info",
    "demo",
    "reconstruct",
    "align",
    "interpolation",
    "simulate",
    "fit_inr",
    "inpainting",
    "fit_dip",
    "batch",
]

#: Range checks applied to every command's options of these names (argparse ``dest``):
#: ``(low, high, low_inclusive, high_inclusive)``; ``None`` means unbounded on that side.
OPTION_LIMITS: dict[str, tuple[float | None, float | None, bool, bool]] = {
    "iterations": (1, 100_000, True, True),
    "sirt_iterations": (1, 100_000, True, True),
    "tv_iterations": (1, 100_000, True, True),
    "recon_iterations": (1, 100_000, True, True),
    "reprojection_iterations": (1, 100_000, True, True),
    "reference_iterations": (1, 100_000, True, True),
    "refine_iterations": (0, 100_000, True, True),
    "max_refine_iterations": (0, 100_000, True, True),
    "steps": (1, 10_000_000, True, True),
    "warm_start_steps": (0, 10_000_000, True, True),
    "pose_warmup": (0, 10_000_000, True, True),
    "inr_steps": (1, 10_000_000, True, True),
    "dip_steps": (1, 10_000_000, True, True),
    "batch_size": (1, 10_000_000, True, True),
    "samples_per_ray": (1, 100_000, True, True),
    "slices_per_step": (1, 100_000, True, True),
    "frames_per_step": (1, 100_000, True, True),
    "components": (1, 1024, True, True),
    "checkpoint_every": (1, None, True, True),
    "val_every": (1, None, True, True),
    "every": (1, None, True, True),
    "window": (1, 100_000, True, True),
    "subsets": (1, 10_000, True, True),
    "threads": (1, 4096, True, True),
    "workers": (1, 4096, True, True),
    "thickness": (1, 16_384, True, True),
    "frames_per_gap": (1, 64, True, True),
    "target_step": (0.01, 90, True, True),
    "lr": (0, 10, True, True),
    "lr_min": (0, 10, True, True),
    "pose_lr": (0, 10, True, True),
    "lr_half_life": (0, None, True, True),
    "tv_weight": (0, 1e4, True, True),
    "relaxation": (0, 2, False, False),
    "axis_offset": (-1e5, 1e5, True, True),
    "pixel_size": (0, 1e6, False, True),
    "tilt_start": (-180, 180, True, True),
    "tilt_step": (-180, 180, True, True),
    "wedge": (0, 180, True, False),
    "smoothness": (0, 1e6, True, True),
    "frame_time": (0, None, False, True),
    "max_minutes": (0, None, False, True),
    "noise": (0, 100, True, True),
    "dose": (0, None, False, True),
    "seed": (0, 2**32 - 1, True, True),
    "size": (1, 16_384, True, True),
    "fourier_size": (0, 4096, True, True),
    "memory_budget": (0, 1e6, False, True),
}


def build_parser() -> argparse.ArgumentParser:
    from napari_tiltgen import __version__

    parser = argparse.ArgumentParser(
        prog="tiltgen",
        description="Electron tomography of nanomaterials: tilt-series I/O, reconstruction, "
        "enhancement and simulation (the napari-tiltgen plugin's headless front end).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"napari_tiltgen.cli.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tiltgen`` script; returns the process exit status."""
    try:
        return _main(argv)
    except BrokenPipeError:
        return _quiet_broken_pipe()


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        check_options(args)
        code = int(args.func(args) or 0)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        return _quiet_broken_pipe()
    except TiltgenError as exc:
        return _error(str(exc))
    except (Cancelled, KeyboardInterrupt):
        print("tiltgen: cancelled", file=sys.stderr)
        return 130
    except MemoryError:
        return _error("out of memory: the job needs more memory than this machine has. Use "
                      "smaller data (bin the stack, a thinner --thickness), fewer frames, or a "
                      "larger machine.")
    except RecursionError:
        return _unexpected(sys.exc_info()[1], args)
    except OSError as exc:
        return _error(describe_os_error(exc))
    except RuntimeError as exc:
        text = str(exc)
        if _is_oom(text):
            return _error("out of memory in torch (" + text.splitlines()[0][:120] + "). Use "
                          "smaller data (bin the stack, a thinner --thickness), a smaller "
                          "--batch-size, or a larger machine.")
        return _unexpected(exc, args)
    except Exception as exc:  # noqa: BLE001 - the catch-all: one line and a log
        return _unexpected(exc, args)


def _error(message: str) -> int:
    message = " ".join(str(message).split("\n"))
    print(f"tiltgen: error: {message}", file=sys.stderr)
    return 2


def _is_oom(text: str) -> bool:
    low = text.lower()
    return ("out of memory" in low or "can't allocate memory" in low
            or "defaultcpuallocator" in low or "not enough memory" in low)


def describe_os_error(exc: OSError) -> str:
    """``<file>: <problem>`` for an operating-system error (permission, disk full, ...)."""
    from napari_tiltgen.io.output import os_problem

    name = exc.filename
    where = f"{os.fsdecode(name)}: " if name is not None else ""
    if exc.filename2 is not None:
        where = f"{os.fsdecode(name)} -> {os.fsdecode(exc.filename2)}: "
    return f"{where}{os_problem(exc)}."


def log_folder() -> str:
    """Where tracebacks of unexpected errors are written (``$TILTGEN_LOG_DIR`` or temp)."""
    import tempfile

    return os.environ.get("TILTGEN_LOG_DIR") or os.path.join(tempfile.gettempdir(),
                                                             "tiltgen-logs")


def _unexpected(exc: BaseException | None, args: argparse.Namespace | None = None) -> int:
    import datetime
    import traceback

    tb = "".join(traceback.format_exception(exc)) if exc is not None else ""
    log = None
    try:
        folder = log_folder()
        os.makedirs(folder, exist_ok=True)
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        log = os.path.join(folder, f"tiltgen-{stamp}-{os.getpid()}.log")
        with open(log, "w", encoding="utf-8") as f:
            f.write(f"tiltgen {' '.join(sys.argv[1:])}\n\n{tb}")
    except OSError:
        log = None
    first = f"{type(exc).__name__}: {exc}".splitlines()[0][:200] if exc is not None else "?"
    where = f"; the traceback is in {log}" if log else ""
    print(f"tiltgen: internal error ({first}){where}. Please report it with that file.",
          file=sys.stderr)
    return 1


def _quiet_broken_pipe() -> int:
    # The reader went away (``| head``): no traceback, and none at interpreter exit either.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass
    return 141  # like a program killed by SIGPIPE


# ---------------------------------------------------------------------------- option types
def _option(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _range_text(lo: float | None, hi: float | None, lo_inc: bool, hi_inc: bool) -> str:
    parts = []
    if lo is not None:
        parts.append(f"{'>=' if lo_inc else '>'} {lo:g}")
    if hi is not None:
        parts.append(f"{'<=' if hi_inc else '<'} {hi:g}")
    return " and ".join(parts)


def _in_range(v: float, lo: float | None, hi: float | None, lo_inc: bool, hi_inc: bool) -> bool:
    below = lo is not None and (v < lo or (v == lo and not lo_inc))
    above = hi is not None and (v > hi or (v == hi and not hi_inc))
    return not (below or above)


def finite_float(lo: float | None = None, hi: float | None = None, *, lo_inclusive: bool = True,
                 hi_inclusive: bool = True):
    """argparse ``type``: a finite float within ``[lo, hi]`` (NaN and inf refused)."""

    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"must be a finite number; got {text!r}")
        if not _in_range(v, lo, hi, lo_inclusive, hi_inclusive):
            raise argparse.ArgumentTypeError(
                f"must be {_range_text(lo, hi, lo_inclusive, hi_inclusive)}; got {text}")
        return v

    parse.__name__ = "number"
    return parse


def bounded_int(lo: int | None = None, hi: int | None = None):
    """argparse ``type``: an integer within ``[lo, hi]``."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if not _in_range(v, lo, hi, True, True):
            raise argparse.ArgumentTypeError(f"must be {_range_text(lo, hi, True, True)}; "
                                             f"got {text}")
        return v

    parse.__name__ = "integer"
    return parse


def check_options(args: argparse.Namespace) -> None:
    """Refuse, before any work, non-finite numbers, out-of-range options and bad devices."""
    for dest, value in vars(args).items():
        if dest in ("func",) or isinstance(value, bool):
            continue
        values = value if isinstance(value, (list, tuple)) else [value]
        for v in values:
            if isinstance(v, float) and not math.isfinite(v):
                raise TiltgenError(f"{_option(dest)} must be a finite number; got {v}.")
        if dest in OPTION_LIMITS and isinstance(value, (int, float)) and value is not None:
            lo, hi, lo_inc, hi_inc = OPTION_LIMITS[dest]
            if not _in_range(value, lo, hi, lo_inc, hi_inc):
                raise TiltgenError(f"{_option(dest)} must be "
                                   f"{_range_text(lo, hi, lo_inc, hi_inc)}; got {value:g}.")
    if isinstance(getattr(args, "device", None), str):
        check_device(args.device)


def check_device(device: str) -> None:
    """Refuse device names torch cannot compute on here (``meta``, a missing GPU, typos)."""
    import re

    d = device.strip().lower()
    if d in ("auto", "cpu"):
        return
    m = re.fullmatch(r"cuda(?::(\d+))?", d)
    if not m:
        raise TiltgenError(f"--device must be auto, cpu, cuda or cuda:N; got {device!r}.")
    import torch

    if not torch.cuda.is_available():
        raise TiltgenError(f"--device {device}: no CUDA GPU is available on this machine; use "
                           "--device cpu (or auto).")
    if m.group(1) is not None and int(m.group(1)) >= torch.cuda.device_count():
        raise TiltgenError(f"--device {device}: this machine has {torch.cuda.device_count()} "
                           "CUDA GPU(s), numbered from 0.")


def add_angle_options(p: argparse.ArgumentParser) -> None:
    """Options shared by commands that read a tilt series whose angles may be missing."""
    g = p.add_argument_group("tilt angles (when the file and its sidecars have none)")
    g.add_argument("--tilt-start", type=float, metavar="DEG", help="first tilt angle, degrees")
    g.add_argument("--tilt-step", type=float, metavar="DEG", help="tilt increment, degrees")
    g.add_argument("--tilt-file", metavar="FILE",
                   help="text file with one angle per line (.rawtlt/.tlt), overrides the file's")
    g.add_argument("--pixel-size", type=float, metavar="Å", help="pixel size in Å, overrides")
    g = p.add_argument_group("tilt axis and intensities (applied after reading)")
    g.add_argument("--tilt-axis", type=finite_float(-360.0, 360.0), metavar="DEG",
                   help="tilt-axis angle, degrees counter-clockwise from the image Y axis (IMOD "
                   "convention); overrides the file's. Default: the file's, else estimated from "
                   "the data over 0-180 degrees (said on stderr)")
    g.add_argument("--intensity", default="auto", choices=["auto", "none", "haadf", "bf"],
                   help="auto (default): detect; haadf: subtract the vacuum level; bf: "
                   "bright field, -log(I/I0); none: as recorded")
    g.add_argument("--normalise", action="store_true",
                   help="scale every frame to a common total signal (mass conservation)")


def read_series_from_args(args: argparse.Namespace):
    """Read ``args.input`` as a tilt series, applying the angle options of :func:`add_angle_options`.

    Then prepares it (:func:`napari_tiltgen.methods.prepare.prepare`: vacuum offset or
    bright-field ``-log``, optional normalisation, tilt axis from ``--tilt-axis``, the file, or
    estimated, and the frames turned so that it runs along y), saying each step on stderr.

    Then checks the options that depend on the data (``--axis-offset`` within the frame,
    ``--thickness``) and the job's estimated peak memory against what this machine has
    (:mod:`napari_tiltgen.resources`), so a job that cannot fit is refused before it starts.
    """
    from napari_tiltgen.io import read_tilt_series

    ts = read_tilt_series(
        args.input,
        tilt_start=getattr(args, "tilt_start", None),
        tilt_step=getattr(args, "tilt_step", None),
        tilt_file=getattr(args, "tilt_file", None),
        pixel_size_A=getattr(args, "pixel_size", None),
    )
    check_job(args, ts)
    if getattr(args, "intensity", None) is None:  # a parser without add_angle_options
        return ts
    from napari_tiltgen.methods.prepare import prepare

    ts, notes = prepare(ts, tilt_axis=getattr(args, "tilt_axis", None), intensity=args.intensity,
                        normalise=bool(getattr(args, "normalise", False)))
    for note in notes:
        print(f"tiltgen: note: {note}", file=sys.stderr)
    return ts


def check_job(args: argparse.Namespace, ts: Any) -> None:
    """Data-dependent option checks and the memory estimate of the job in ``args.command``."""
    from napari_tiltgen.resources import check_memory, job_peak_bytes

    n, ny, nx = (int(s) for s in ts.shape)
    offset = getattr(args, "axis_offset", None)
    if offset is not None and abs(offset) >= max(ny, nx) / 2:
        raise TiltgenError(f"--axis-offset {offset:g} px puts the tilt axis outside the "
                           f"{nx} x {ny} px frames; it must be within +-{max(ny, nx) / 2:g} px.")
    command = getattr(args, "command", "") or ""
    device = str(getattr(args, "device", "cpu") or "cpu")
    on_cuda = device.startswith("cuda")
    fpg = getattr(args, "frames_per_gap", None)
    n_out = n + (n - 1) * fpg if fpg else None
    n_times = 1
    if command == "fit-dip":
        every = getattr(args, "every", 1) or 1
        n_times = len(str(getattr(args, "times", "") or "").split(",")) if getattr(
            args, "times", None) else -(-n // every)
    need = job_peak_bytes(command, n, ny, nx, thickness=getattr(args, "thickness", None),
                          n_out_frames=n_out, n_times=n_times, device_is_cuda=on_cuda,
                          method=getattr(args, "method", None))
    if command == "reconstruct" and getattr(args, "out_of_core", "no") != "no":
        from napari_tiltgen.methods import outofcore

        nz = int(getattr(args, "thickness", None) or nx)
        stream, budget, _ = outofcore.choose(args.method, args.backend, n, ny, nx, nz,
                                             mode=args.out_of_core,
                                             memory_budget=getattr(args, "memory_budget_bytes",
                                                                   None))
        if stream:  # streamed: the prepared input + one slab's working set
            need = outofcore.streamed_job_bytes(args.method, n, ny, nx, nz, budget)
    check_memory(need, f"{command or 'this job'} on {n} x {ny} x {nx} px frames",
                 "bin the stack (e.g. IMOD newstack -bin 2), crop it, give a thinner "
                 "--thickness, or run on a machine with more memory.", args.input)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
