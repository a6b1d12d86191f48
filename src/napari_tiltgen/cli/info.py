"""``tiltgen info FILE``: what a tilt series or volume file holds and where each number came from."""

from __future__ import annotations

import argparse
import json


def run(args: argparse.Namespace) -> int:
    """Print shape, dtype, tilt angles, pixel size and tilt axis of a file.

    Print shape, dtype, tilt-angle range/step/count, pixel size (Å) and tilt axis of a tilt
    series or volume (MRC, TIFF, DM3/DM4, Velox/NCEM EMD, SER/EMI, HSPY, or a folder/glob of
    one image per tilt), where each came from (.rawtlt/.tlt, .xf, .mdoc, SerialEM/FEI/old-FEI
    extended header, MRC header, file metadata) and the notes on conventions recognised
    (0..180, radians, x100, several frames per tilt). Reads only headers: a large integer stack
    is not converted.
    """
    from napari_tiltgen.io.model import TiltSeries
    from napari_tiltgen.io.readers import read

    obj = read(args.input, args.kind, tilt_start=args.tilt_start, tilt_step=args.tilt_step,
               tilt_file=args.tilt_file, pixel_size_A=args.pixel_size,
               tilt_axis_deg=getattr(args, "tilt_axis", None))
    if args.json:
        meta = obj.to_metadata()
        meta["shape"] = list(obj.shape)
        if isinstance(obj, TiltSeries) and obj.tilt_angles is not None:
            meta["angle_stats"] = obj.angle_stats()
        print(json.dumps(meta, indent=2))
        return 0
    print(f"file:        {args.input}")
    if obj.provenance.get("format"):
        print(f"format:      {obj.provenance['format']}")
    print(obj.summary())
    if args.angles and isinstance(obj, TiltSeries) and obj.tilt_angles is not None:
        print("angles (deg): " + " ".join(f"{a:g}" for a in obj.tilt_angles))
    return 0
