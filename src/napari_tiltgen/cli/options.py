"""Options shared by the ``tiltgen`` commands, declared once: the device/threads/quiet group,
the training group, the tilt-angle group; argparse types that refuse NaN, infinities and
out-of-range numbers; and the checks every command runs before any work.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import inspect
import math
import shlex
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from napari_tiltgen.core.errors import TiltgenError

#: Range checks applied to every command's options of these names (argparse ``dest``):
#: ``(low, high, low_inclusive, high_inclusive)``; ``None`` means unbounded on that side.
OPTION_LIMITS: dict[str, tuple[float | None, float | None, bool, bool]] = {
    **dict.fromkeys((
        "iterations", "sirt_iterations", "tv_iterations", "recon_iterations",
        "reprojection_iterations", "reference_iterations", "samples_per_ray", "slices_per_step",
        "frames_per_step", "window"
    ), (1, 100_000, True, True)),
    **dict.fromkeys(("refine_iterations", "max_refine_iterations"), (0, 100_000, True, True)),
    **dict.fromkeys(("steps", "inr_steps", "dip_steps", "batch_size"), (1, 10_000_000, True, True)),
    **dict.fromkeys(("warm_start_steps", "pose_warmup"), (0, 10_000_000, True, True)),
    "components": (1, 1024, True, True),
    **dict.fromkeys(("checkpoint_every", "val_every", "every"), (1, None, True, True)),
    "subsets": (1, 10_000, True, True),
    **dict.fromkeys(("threads", "workers"), (1, 4096, True, True)),
    **dict.fromkeys(("thickness", "size"), (1, 16_384, True, True)),
    "frames_per_gap": (1, 64, True, True),
    "target_step": (0.01, 90, True, True),
    **dict.fromkeys(("lr", "lr_min", "pose_lr"), (0, 10, True, True)),
    "lr_half_life": (0, None, True, True),
    "tv_weight": (0, 1e4, True, True),
    "relaxation": (0, 2, False, False),
    "axis_offset": (-1e5, 1e5, True, True),
    **dict.fromkeys(("pixel_size", "memory_budget"), (0, 1e6, False, True)),
    **dict.fromkeys(("tilt_start", "tilt_step"), (-180, 180, True, True)),
    "wedge": (0, 180, True, False),
    "smoothness": (0, 1e6, True, True),
    **dict.fromkeys(("frame_time", "max_minutes", "dose"), (0, None, False, True)),
    "noise": (0, 100, True, True),
    "seed": (0, 2**32 - 1, True, True),
    "fourier_size": (0, 4096, True, True),
}


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
    from napari_tiltgen.core.devices import resolve_device

    try:
        resolve_device(device)
    except TiltgenError as exc:
        raise TiltgenError(f"--device {device}: {exc}") from None


def add_command(sub: Any, name: str, func: Any, *, help: str | None = None,
                description: str | None = None, raw: bool = False, series: bool = False,
                out: Sequence[str] | None = None, out_required: bool = True,
                overwrite: str | None = None, sections: Sequence[str] = (),
                training: dict[str, Any] | None = None, compute: dict[str, Any] | None = None,
                angles: bool = False) -> argparse.ArgumentParser:
    """Register the sub-command ``name`` that runs ``func(args) -> exit code``.

    The first line of ``func``'s docstring is the command's one-line help (``tiltgen -h``), the
    rest its ``--help`` description, unless ``help`` or ``description`` are given (``raw``:
    printed as written, not re-wrapped): what a command does is written once, next to the code
    that does it. Its options: ``series``, the input tilt series ``IN`` and the angle options;
    ``out = (METAVAR, help)``, ``--out``; the ``[[name]]`` entries of ``options.toml`` and
    those of the further ``sections``; ``training`` and ``compute``, the keywords of
    :func:`add_training_options` and :func:`add_compute_options` (``None``: not taken);
    ``overwrite`` (its help), ``--overwrite``; ``angles``, the angle options without a series.
    """
    summary, _, rest = (inspect.getdoc(func) or "").partition("\n\n")
    p = sub.add_parser(name, help=help or summary.strip().rstrip(".") or None,
                       description=description if description is not None else rest or None,
                       formatter_class=(argparse.RawDescriptionHelpFormatter if raw
                                        else argparse.HelpFormatter))
    if series:
        p.add_argument("input", metavar="IN", help="tilt series file (.mrc .st .ali .tif ...)")
    if out is not None:
        p.add_argument("--out", required=out_required, metavar=out[0], help=out[1])
    for section in ((name,) if name in option_table() else ()) + tuple(sections):
        add_options(p, section)
    if training is not None:
        add_training_options(p, **training)
    if compute is not None:
        add_compute_options(p, **compute)
    if overwrite is not None:
        p.add_argument("--overwrite", action="store_true", help=overwrite)
    if series or angles:
        add_angle_options(p)
    p.set_defaults(func=func)
    return p


@functools.cache
def _named_lists() -> dict[str, list[str]]:
    """The lists ``options.toml`` names (``@name`` choices, ``{name}`` in defaults and help)."""
    from napari_tiltgen.recon.names import BACKENDS, FILTER_NAMES, METHODS
    from napari_tiltgen.simulate.clusters import ELEMENTS, STRUCTURES, VARIANTS
    from napari_tiltgen.simulate.haadf import PRESETS

    return {"methods": [*METHODS, "fbp"], "backends": list(BACKENDS),
            "filters": list(FILTER_NAMES), "structures": list(STRUCTURES),
            "variants": list(VARIANTS), "presets": list(PRESETS), "elements": list(ELEMENTS)}


@functools.cache
def option_table() -> dict[str, list[dict[str, Any]]]:
    """``options.toml``: the options of every command, one list of entries per section."""
    with open(Path(__file__).with_name("options.toml"), "rb") as f:
        return tomllib.load(f)


def _option_type(entry: dict[str, Any]) -> Any:
    kind = entry.get("type")
    if kind is None:
        return None
    lo, hi = entry.get("min"), entry.get("max")
    if kind == "int":
        return int if lo is None and hi is None else bounded_int(lo, hi)
    if kind == "float":
        if lo is None and hi is None:
            return float
        return finite_float(lo, hi, lo_inclusive=not entry.get("min_open", False),
                            hi_inclusive=not entry.get("max_open", False))
    if kind == "str":
        return str
    raise ValueError(f"options.toml: unknown type {kind!r}")


def _with_lists(text: str, sep: str) -> str:
    """``text`` with each ``{name}`` replaced by that named list joined by ``sep``."""
    if "{" not in text:  # most entries: no list needed, none imported
        return text
    return text.format(**{k: sep.join(v) for k, v in _named_lists().items()})


def add_options(p: argparse.ArgumentParser, section: str) -> None:
    """Add the options ``options.toml`` declares in ``[[section]]`` to ``p``, in file order.

    The table holds what is particular to each command (names, types, ranges, defaults, help);
    the options shared by many commands are declared by the ``add_*_options`` functions here.
    """
    entries = option_table()[section]
    groups = {g.title: g for g in p._action_groups}  # reuse a titled group another call made
    exclusive: dict[str, Any] = {}
    for e in entries:
        flags = e["flags"] if isinstance(e["flags"], list) else [e["flags"]]
        kw: dict[str, Any] = {k: e[k] for k in ("action", "nargs", "metavar", "dest", "required")
                              if k in e}
        if isinstance(kw.get("metavar"), list):
            kw["metavar"] = tuple(kw["metavar"])
        if (t := _option_type(e)) is not None:
            kw["type"] = t
        if "default" in e:
            d = e["default"]
            kw["default"] = (_with_lists(d, ",") if isinstance(d, str)
                             else tuple(d) if isinstance(d, list) else d)
        if "choices" in e:
            c = e["choices"]
            kw["choices"] = _named_lists()[c[1:]] if isinstance(c, str) else c
        if "help" in e:
            kw["help"] = _with_lists(e["help"], ", ")
        target: Any = p
        if "group" in e:
            if e["group"] not in groups:
                groups[e["group"]] = p.add_argument_group(e["group"])
            target = groups[e["group"]]
        if "exclusive" in e:
            if e["exclusive"] not in exclusive:
                exclusive[e["exclusive"]] = target.add_mutually_exclusive_group()
            target = exclusive[e["exclusive"]]
        target.add_argument(*flags, **kw)


def command_line() -> str:
    """The command as typed (recorded in configs, model cards and reports)."""
    return "tiltgen " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def config_from_args(cls: Any, args: argparse.Namespace, **values: Any) -> Any:
    """The dataclass ``cls`` from parsed options: every field takes the option of the same
    ``dest``; ``values`` (converted or renamed options) override; ``command`` is the command
    line."""
    names = {f.name for f in dataclasses.fields(cls)}
    kw = {k: v for k, v in vars(args).items() if k in names}
    if "command" in names:
        kw["command"] = command_line()
    kw.update(values)
    return cls(**kw)


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


def read_series_from_args(args: argparse.Namespace, *, keep_recorded: bool = False,
                          rotation_order: int | None = 3):
    """Read ``args.input`` as a tilt series, applying the angle options of :func:`add_angle_options`.

    Then prepares it (:func:`napari_tiltgen.align.prepare.prepare`: vacuum offset or
    bright-field ``-log``, optional normalisation, tilt axis from ``--tilt-axis``, the file, or
    estimated, and the frames turned so that it runs along y), saying each step on stderr.

    Then checks the options that depend on the data (``--axis-offset`` within the frame,
    ``--thickness``) and the job's estimated peak memory against what this machine has
    (:mod:`napari_tiltgen.core.resources`), so a job that cannot fit is refused before it starts.

    ``keep_recorded``: return ``(recorded, prepared)``, the series as read and as prepared.
    ``rotation_order``: how the frames are turned (see :func:`~napari_tiltgen.align.prepare.prepare`).
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
        return (ts, ts) if keep_recorded else ts
    from napari_tiltgen.align.prepare import prepare

    prepared, notes = prepare(ts, tilt_axis=getattr(args, "tilt_axis", None),
                              intensity=args.intensity,
                              normalise=bool(getattr(args, "normalise", False)),
                              rotation_order=rotation_order)
    for note in notes:
        print(f"tiltgen: note: {note}", file=sys.stderr)
    return (ts, prepared) if keep_recorded else prepared


def check_job(args: argparse.Namespace, ts: Any) -> None:
    """Data-dependent option checks and the memory estimate of the job in ``args.command``."""
    from napari_tiltgen.core.resources import check_memory, job_peak_bytes

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
        from napari_tiltgen.recon import outofcore
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



# ---------------------------------------------------------------------------- option groups
def add_compute_options(p: argparse.ArgumentParser, *, device: str = "auto",
                        threads: bool = True, quiet: bool = True) -> None:
    """``--device`` and (optionally) ``--threads`` and ``--quiet``, with one help text each."""
    p.add_argument("--device", default=device,
                   help=f"torch device: auto (CUDA when present), cpu, cuda or cuda:N "
                   f"(default {device})")
    if threads:
        p.add_argument("--threads", type=bounded_int(1, 4096), metavar="N",
                       help="CPU threads for torch (default: the cores other work leaves free)")
    if quiet:
        p.add_argument("--quiet", action="store_true", help="no progress bar")


def add_training_options(p: argparse.ArgumentParser, *, lr: float, weight_decay: float,
                         val_every: int, lr_min: float | None = None,
                         warmup: int | None = None) -> None:
    """The optimiser and run-control options of the training commands (one help text each)."""
    p.add_argument("--lr", type=float, default=lr, help=f"peak learning rate (default {lr:g})")
    if lr_min is not None:
        p.add_argument("--lr-min", type=float, default=lr_min,
                       help=f"final learning rate (default {lr_min:g})")
    if warmup is not None:
        p.add_argument("--warmup", type=int, default=warmup,
                       help=f"warm-up steps (default {warmup})")
    p.add_argument("--weight-decay", type=float, default=weight_decay,
                   help="AdamW decoupled weight decay on convolution and linear weights (none "
                   f"on norms and biases; default {weight_decay:g})")
    p.add_argument("--val-every", type=int, default=val_every,
                   help=f"validate every N steps (default {val_every})")
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    p.add_argument("--max-minutes", type=float, metavar="MIN",
                   help="stop after this much wall time (checkpoint and weights are written)")
    p.add_argument("--init", metavar="FILE.safetensors",
                   help="start from these weights (fine-tuning, e.g. the packaged model in "
                   "napari_tiltgen/models/) instead of a fresh network; their architecture "
                   "replaces the width and channel options")
    p.add_argument("--export", metavar="FILE.safetensors",
                   help="copy the best weights here when training stops")

