"""Batches of tilt series as tasks on Dask distributed: resumable, one report, failures isolated.

Each input series is one task, :func:`process_series`: read -> prepare (intensity, tilt axis) ->
the steps asked for, in order, each through the existing API:

``align``        :func:`napari_tiltgen.align.projection_matching.align_series`
``interpolate``  :func:`napari_tiltgen.nets.interpolation.interpolate_series`
``reconstruct``  :func:`napari_tiltgen.recon.api.reconstruct` (``method``, ``iterations``)
``inpaint``      :func:`napari_tiltgen.nets.inpainting.inpaint` (on the volume, or the series)
``fit``          :func:`napari_tiltgen.fits.inr.fit_inr` (INR volume, ``inr_steps``)

and writes ``OUT/<input stem>.mrc`` (a volume; or the tilt series when no step makes one) together
with a done-marker ``OUT/.<stem>.done.json`` (the parameters' hash and the row of the report), both
in one all-or-nothing commit of :mod:`napari_tiltgen.io.output`. A rerun skips every series whose
output and marker exist with the same hash (resume after a crash or a cancelled job); a changed
parameter set needs ``overwrite``.

The tasks run on a ``distributed.LocalCluster`` (processes, one thread each, ``workers`` of them)
by default, or on any running scheduler (``scheduler="tcp://host:8786"``, e.g. a dask-jobqueue
SLURM cluster, see docs/batch.md). A task catches its own errors and returns a failed row; a
worker that dies fails only its series. The report (``OUT/batch_report.csv`` and ``.json``) has
one row per input: status (done / skipped / failed), seconds, shape, output, reprojection error
or final SIRT residual where the steps compute one, the error message.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from napari_tiltgen.core.errors import TiltgenError

__all__ = ["REPORT_COLUMNS", "STEPS", "BatchReport", "make_client", "process_series",
           "run_batch"]

STEPS = ("align", "interpolate", "reconstruct", "inpaint", "fit")
REPORT_COLUMNS = ("input", "status", "output", "seconds", "shape", "steps",
                  "reprojection_error", "sirt_residual", "worker", "error")
REPORT_NAME = "batch_report"
_MARK_VERSION = 1


# ---------------------------------------------------------------------------- options
def _check_steps(steps: Sequence[str] | str) -> tuple[str, ...]:
    if isinstance(steps, str):
        steps = [s.strip() for s in steps.split(",") if s.strip()]
    steps = tuple(str(s).lower() for s in steps)
    bad = [s for s in steps if s not in STEPS]
    if bad or not steps:
        raise TiltgenError(f"unknown batch step(s) {', '.join(bad) or '(none given)'}; choose "
                           f"from {', '.join(STEPS)} (comma-separated, in order).")
    return steps


def output_paths(input_path: str | os.PathLike, out_dir: str | os.PathLike
                 ) -> tuple[Path, Path]:
    """``(OUT/<stem>.mrc, OUT/.<stem>.done.json)`` for one input."""
    name = Path(input_path).name
    stem = name.split(".")[0] if not name.startswith(".") else name
    out = Path(out_dir) / f"{stem}.mrc"
    return out, Path(out_dir) / f".{stem}.done.json"


def params_hash(input_path: str | os.PathLike, options: dict[str, Any]) -> str:
    """Hash of the input (path, size, modification time) and the options of its task."""
    p = Path(input_path)
    try:
        st = p.stat()
        ident = [os.path.abspath(p), st.st_size, int(st.st_mtime)]
    except OSError:
        ident = [os.path.abspath(p), None, None]
    blob = json.dumps({"v": _MARK_VERSION, "input": ident, "options": options}, sort_keys=True,
                      default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def is_done(input_path: str | os.PathLike, out_dir: str | os.PathLike,
            options: dict[str, Any]) -> dict[str, Any] | None:
    """The recorded row if this series' output and marker exist with the same parameters."""
    out, mark = output_paths(input_path, out_dir)
    if not (out.is_file() and mark.is_file()):
        return None
    try:
        rec = json.loads(mark.read_text())
    except (OSError, ValueError):
        return None
    if rec.get("hash") != params_hash(input_path, options):
        return None
    return rec.get("row")


# ---------------------------------------------------------------------------- one series
def process_series(input_path: str, out_dir: str, options: dict[str, Any]) -> dict[str, Any]:
    """Run one series' steps and write its output; never raises (a failed row instead).

    ``options``: ``steps`` (list), ``method``, ``iterations``, ``thickness_px``, ``device``,
    ``n_threads``, ``interpolate`` (dict of :func:`interpolate_series` keywords),
    ``inpaint`` (dict), ``inr_steps``, ``overwrite``.
    """
    import socket

    t0 = time.perf_counter()
    row: dict[str, Any] = {c: None for c in REPORT_COLUMNS}
    row.update(input=str(input_path), steps=",".join(options["steps"]),
               worker=f"{socket.gethostname()}:{os.getpid()}")
    try:
        row.update(_run_steps(input_path, out_dir, options))
        row["status"] = "done"
    except Exception as exc:  # noqa: BLE001 - one series' failure must not stop the others
        row["status"] = "failed"
        row["error"] = (f"{type(exc).__name__}: {exc}" if not isinstance(exc, TiltgenError)
                        else str(exc)).splitlines()[0][:500]
        if not isinstance(exc, (TiltgenError, OSError, MemoryError)):
            row["error"] += " | " + traceback.format_exc().strip().splitlines()[-1][:200]
    row["seconds"] = round(time.perf_counter() - t0, 3)
    return row


def _run_steps(input_path: str, out_dir: str, o: dict[str, Any]) -> dict[str, Any]:
    from napari_tiltgen.align.prepare import prepare
    from napari_tiltgen.core.devices import num_threads
    from napari_tiltgen.core.progress import run
    from napari_tiltgen.io import read_tilt_series
    from napari_tiltgen.io.writers import file_contents, plan_write

    out, mark = output_paths(input_path, out_dir)
    plan = plan_write(out, "volume" if _makes_volume(o["steps"]) else "tilt_series",
                      overwrite=bool(o.get("overwrite")), inputs=[input_path], extra=[mark])
    found: dict[str, Any] = {}
    with num_threads(o.get("n_threads")):
        ts = read_tilt_series(input_path)
        # frames turned band-limited when the output is the tilt series (as tiltgen
        # interpolate does), by cubic spline when a volume is made (docs/alignment.md)
        order = 3 if _makes_volume(o["steps"]) else None
        ts, _notes = prepare(ts, intensity=o.get("intensity", "auto"), rotation_order=order)
        vol = None
        for step in o["steps"]:
            if step == "align":
                from napari_tiltgen.align.projection_matching import align_series

                ts, rep = align_series(ts, prepare_first=False, thickness_px=o.get("thickness_px"))
                found["reprojection_error"] = round(float(rep.reprojection_error_after), 5)
            elif step == "interpolate":
                from napari_tiltgen.nets.interpolation import interpolate_series

                kw = {"target_step_deg": 1.0, "method": "linear", **(o.get("interpolate") or {})}
                ts = run(interpolate_series(ts, **kw), show=False).tilt_series
            elif step == "reconstruct":
                from napari_tiltgen.recon.api import reconstruct, with_vertical_axis

                ts, _ = with_vertical_axis(ts)
                last: dict[str, float] = {}

                def keep(ev: Any, last: dict[str, float] = last) -> None:
                    if ev.values and "residual" in ev.values:
                        last["r"] = float(ev.values["residual"])

                vol = reconstruct(ts, o.get("method", "sirt"), int(o.get("iterations", 100)),
                                  device=o.get("device", "cpu"), thickness_px=o.get("thickness_px"),
                                  preview_every=0, show=False, callback=keep)
                if "r" in last:
                    found["sirt_residual"] = round(last["r"], 5)
            elif step == "inpaint":
                from napari_tiltgen.nets.inpainting import inpaint

                vol, _ = inpaint(vol if vol is not None else ts, **(o.get("inpaint") or {}))
            elif step == "fit":
                from napari_tiltgen.fits.inr import fit_inr

                res = fit_inr(ts, steps=int(o.get("inr_steps", 500)), show=False,
                              device=o.get("device", "cpu"), thickness_px=o.get("thickness_px"))
                vol = res.volume
    obj = vol if vol is not None else ts
    row = {"output": str(out), "shape": "x".join(str(int(s)) for s in obj.shape), **found}
    marker = {"hash": params_hash(input_path, _hashed(o)), "input": str(input_path),
              "options": _hashed(o), "row": {**row, "status": "done"}}
    contents = file_contents(obj, out)
    contents = {p: c for p, c in contents.items()
                if os.path.abspath(p) in {os.path.abspath(q) for q in plan.paths}}
    contents[mark] = json.dumps(marker, indent=1, default=str)
    plan.commit(contents)
    return row


def _makes_volume(steps: Sequence[str]) -> bool:
    return any(s in ("reconstruct", "inpaint", "fit") for s in steps)


def _hashed(o: dict[str, Any]) -> dict[str, Any]:
    """The options that change a result (not overwrite, threads)."""
    return {k: v for k, v in o.items() if k not in ("overwrite", "n_threads")}


# ---------------------------------------------------------------------------- the cluster
def make_client(workers: int | None = None, scheduler: str | None = None) -> Any:
    """A ``distributed.Client``: on the scheduler at ``scheduler``, else a new LocalCluster.

    The LocalCluster runs ``workers`` processes (default: the free cores, at least 1) of one
    thread each; its dashboard listens on a free port (``client.dashboard_link``).
    """
    try:
        from distributed import Client, LocalCluster
    except ImportError:  # pragma: no cover - dask[distributed] is a dependency
        raise TiltgenError("batch mode needs Dask distributed: pip install 'dask[distributed]'."
                           ) from None
    if scheduler:
        try:
            return Client(scheduler, timeout="20s")
        except (OSError, TimeoutError) as exc:
            raise TiltgenError(f"cannot reach the Dask scheduler at {scheduler} ({exc}); is it "
                               "running, and is the address (tcp://host:port) right?") from None
    if not workers:
        from napari_tiltgen.core.devices import free_cpu_cores

        workers = free_cpu_cores()
    cluster = LocalCluster(n_workers=int(workers), threads_per_worker=1, processes=True,
                           dashboard_address=":0", silence_logs=40)
    return Client(cluster)


# ---------------------------------------------------------------------------- the batch
@dataclass
class BatchReport:
    """Rows of :func:`run_batch` (one per input, in input order) and where they were written."""

    rows: list[dict[str, Any]]
    csv_path: Path | None = None
    json_path: Path | None = None
    dashboard: str | None = None
    seconds: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)

    def table(self) -> str:
        """The report as CSV text."""
        import csv
        import io

        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(REPORT_COLUMNS), lineterminator="\n")
        w.writeheader()
        for r in self.rows:
            w.writerow({c: "" if r.get(c) is None else r.get(c) for c in REPORT_COLUMNS})
        return buf.getvalue()


def run_batch(
    inputs: Iterable[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    steps: Sequence[str] | str = ("reconstruct",),
    method: str = "sirt",
    iterations: int = 100,
    thickness_px: int | None = None,
    device: str = "cpu",
    intensity: str = "auto",
    interpolate: dict[str, Any] | None = None,
    inpaint: dict[str, Any] | None = None,
    inr_steps: int = 500,
    workers: int | None = None,
    scheduler: str | None = None,
    client: Any = None,
    overwrite: bool = False,
    on_start: Callable[[Any, int], None] | None = None,
    on_result: Callable[[dict[str, Any]], None] | None = None,
) -> BatchReport:
    """Process many tilt series as Dask tasks; write ``OUT/batch_report.{csv,json}``.

    Parameters
    ----------
    inputs
        Tilt-series files. Two inputs with the same file stem are refused (same output name).
    out_dir
        Output folder (created if missing; its parent must exist).
    steps
        Steps per series, in order (see module docstring), e.g. ``("align", "reconstruct")``.
    method, iterations, thickness_px, device, intensity, interpolate, inpaint, inr_steps
        Options of the steps (``interpolate``/``inpaint``: keyword dicts of their API calls).
    workers, scheduler, client
        Where the tasks run: an existing ``client``; else the scheduler at ``scheduler``; else
        a LocalCluster of ``workers`` single-threaded processes (closed at the end).
    overwrite
        Recompute series whose output exists with other parameters (finished ones with the same
        parameters are always skipped).
    on_start, on_result
        Called with ``(client, n_to_run)`` once the cluster is up, and with each row as it
        completes (the CLI's progress bar).

    Returns
    -------
    BatchReport
    """
    from napari_tiltgen.io.output import planned_outputs

    t0 = time.perf_counter()
    steps = _check_steps(steps)
    inputs = [str(p) for p in inputs]
    if not inputs:
        raise TiltgenError("no input tilt series given.")
    out_dir = Path(out_dir)
    report_csv, report_json = out_dir / f"{REPORT_NAME}.csv", out_dir / f"{REPORT_NAME}.json"
    # validates the folder (created if missing) and that no input is overwritten, before work
    planned_outputs(report_csv, [report_json], overwrite=True, inputs=inputs,
                    create_folder=True, what="batch report")
    seen: dict[Path, str] = {}
    for p in inputs:
        out, _ = output_paths(p, out_dir)
        if out in seen:
            raise TiltgenError(f"{seen[out]} and {p} would both be written to {out}; give "
                               "inputs with different file names (or run two batches).", p)
        seen[out] = p
    options = {"steps": list(steps), "method": method, "iterations": int(iterations),
               "thickness_px": thickness_px, "device": device, "intensity": intensity,
               "interpolate": interpolate or {}, "inpaint": inpaint or {},
               "inr_steps": int(inr_steps), "overwrite": bool(overwrite), "n_threads": 1}
    rows: dict[str, dict[str, Any]] = {}
    todo = []
    for p in inputs:
        rec = is_done(p, out_dir, _hashed(options))
        if rec is not None:
            rows[p] = {**{c: None for c in REPORT_COLUMNS}, **rec, "status": "skipped",
                       "input": p, "seconds": 0.0, "worker": None, "steps": ",".join(steps)}
            if on_result:
                on_result(rows[p])
        else:
            todo.append(p)
    own = client is None
    dashboard = None
    if todo:
        if own:
            client = make_client(workers, scheduler)
        try:
            dashboard = getattr(client, "dashboard_link", None)
            if on_start:
                on_start(client, len(todo))
            from distributed import as_completed

            futures = {client.submit(process_series, p, str(out_dir), options, pure=False,
                                     key=f"tiltgen-series-{i}-{os.getpid()}-{time.time_ns()}"): p
                       for i, p in enumerate(todo)}
            for fut in as_completed(futures):
                p = futures[fut]
                try:
                    row = fut.result()
                except Exception as exc:  # noqa: BLE001 - a worker died, a task was lost
                    row = {**{c: None for c in REPORT_COLUMNS}, "input": p, "status": "failed",
                           "steps": ",".join(steps),
                           "error": f"task lost: {type(exc).__name__}: {exc}"[:500]}
                rows[p] = row
                if on_result:
                    on_result(row)
        finally:
            if own:
                cluster = getattr(client, "cluster", None)
                client.close()
                if cluster is not None:
                    cluster.close()
    ordered = [rows[p] for p in inputs]
    counts = {s: sum(r["status"] == s for r in ordered) for s in ("done", "skipped", "failed")}
    report = BatchReport(ordered, report_csv, report_json, dashboard,
                         round(time.perf_counter() - t0, 3), counts)
    meta = {"steps": list(steps), "options": _hashed(options), "seconds": report.seconds,
            "counts": counts, "rows": ordered}
    plan = planned_outputs(report_csv, [report_json], overwrite=True, inputs=inputs,
                           what="batch report")
    plan.commit({report_csv: report.table(),
                 report_json: json.dumps(meta, indent=1, default=str)})
    return report
