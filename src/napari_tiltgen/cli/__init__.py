"""``tiltgen`` command line. Never imports Qt or napari.

Each sub-command is a function of a module of this package taking the parsed arguments and
returning an exit code; its docstring is its help. ``options.toml`` lists the commands
(``[commands.NAME]``: the function and the option groups it takes) and their own options
(``[[NAME]]``), read by :mod:`napari_tiltgen.cli.options`. A new command: a function here and
its entries there.

Errors (see docs/cli.md, "Errors and outputs"):

* Errors the user can cause (:class:`~napari_tiltgen.core.errors.TiltgenError`, and operating-system
  errors such as a permission denied, a full disk, a file name too long, a symbolic-link loop,
  running out of memory) are printed as one line ``tiltgen: error: <file>: <problem>`` and exit
  with status 2, without a traceback.
* Anything unexpected (a bug) is printed as one line with a pointer to a log file holding the
  traceback (``$TILTGEN_LOG_DIR``, default ``<temp dir>/tiltgen-logs/``), exit status 1.
* A closed pipe (``tiltgen info x.mrc | head``) ends quietly; Ctrl-C prints ``cancelled`` (130).
* Options are checked before any work (:mod:`napari_tiltgen.cli.options`): every number must be
  finite and the options of its ``OPTION_LIMITS`` table in their range.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from napari_tiltgen.cli.options import add_command, check_options, option_table
from napari_tiltgen.core.devices import is_oom
from napari_tiltgen.core.errors import Cancelled, TiltgenError


def build_parser() -> argparse.ArgumentParser:
    from napari_tiltgen import __version__

    parser = argparse.ArgumentParser(
        prog="tiltgen",
        description="Electron tomography of nanomaterials: tilt-series I/O, reconstruction, "
        "enhancement and simulation (the napari-tiltgen plugin's headless front end).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, spec in option_table()["commands"].items():
        module, func = spec["run"].split(":")
        run = getattr(importlib.import_module(f"napari_tiltgen.cli.{module}"), func)
        kw = {k: v for k, v in spec.items() if k not in ("run", "module_doc")}
        if spec.get("module_doc"):  # the module docstring's body, printed as written
            doc = sys.modules[run.__module__].__doc__ or ""
            kw.update(description=doc.split("\n\n", 1)[-1], raw=True)
        add_command(sub, name, run, **kw)
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
        if is_oom(text):
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
