"""``tiltgen align IN --out aligned.mrc``: prepare and align a tilt series, write IMOD .xf/.tlt.

Steps (:func:`napari_tiltgen.align.projection_matching.align_series`): intensities (vacuum
offset / bright-field -log), tilt axis (``--tilt-axis``, the file's, or estimated over 0-180
degrees) with the frames turned so that it runs along y, coarse shifts (centre of mass or
cross-correlation with stretching), tilt-axis angle refinement, tilt-axis offset, projection
matching. The reprojection error before and after is printed.

Output: the prepared frames (turned, intensities corrected; not shifted) as ``OUT`` with the
shifts in ``OUT.xf`` (IMOD: ``A11 A12 A21 A22 DX DY`` per frame, identity rotation, the shift
that aligns each frame of ``OUT``) and the angles in ``OUT.tlt`` (and ``OUT.rawtlt``). Reading
``OUT`` back (this package, or IMOD's ``newstack -xform OUT.xf OUT OUT.ali``) applies the shifts.
For an ``.ali`` output the frames are written already shifted (IMOD's aligned-stack convention;
``.ali`` stacks are read without their ``.xf``). The input and its sidecars are never written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from napari_tiltgen.cli.options import (
    read_series_from_args,
)


def run(args: argparse.Namespace) -> int:
    """Align a tilt series (tilt axis, shifts, projection matching); writes .xf/.tlt."""
    from napari_tiltgen.align.alignment import aligned_stack
    from napari_tiltgen.align.projection_matching import align_series, xf_lines
    from napari_tiltgen.io import metadata as md
    from napari_tiltgen.io.writers import plan_write, write

    out = Path(args.out)
    xf, tlt = out.with_suffix(".xf"), out.with_suffix(".tlt")
    plan = plan_write(out, "tilt_series", overwrite=args.overwrite,
                      inputs=[args.input, getattr(args, "tilt_file", None)], extra=[xf, tlt],
                      what="aligned tilt series")
    ts = read_series_from_args(args)  # prepared: intensities, tilt axis along y (notes on stderr)
    aligned, report = align_series(
        ts, coarse=args.coarse, refine_axis=args.refine_axis, rounds=args.rounds,
        iterations=args.recon_iterations, max_size=args.max_size,
        center_object=args.center_object, prepare_first=False)
    for step in report.steps:
        print(f"tiltgen: note: alignment: {step}", file=sys.stderr)
    from dataclasses import replace

    import numpy as np

    written = aligned
    if out.suffix.lower() == ".ali":
        written = replace(aligned, data=aligned_stack(aligned, order=3),
                          shifts_px=np.zeros_like(aligned.shifts_px))
    angles = aligned.require_angles()

    def write_tlt(tmp: Path) -> None:
        md.write_angle_file(tmp, angles)

    write(written, out, plan=plan, extra={xf: xf_lines(aligned), tlt: write_tlt})
    sh = np.asarray(aligned.shifts_px)
    print(f"wrote {out} ({aligned.n_tilts} frames), {xf.name} (shifts), {tlt.name} (angles)")
    print(f"reprojection error: {report.reprojection_error_before:.4f} before, "
          f"{report.reprojection_error_after:.4f} after alignment")
    print(f"shifts: |dy| up to {np.abs(sh[:, 0]).max():.2f} px, |dx| up to "
          f"{np.abs(sh[:, 1]).max():.2f} px; frames turned by {-report.tilt_axis_angle_deg:.2f} "
          "deg in total (tilt axis onto y)")
    return 0
