"""Fetch the public example files that the format tests read (no library writes these formats).

Gatan DM3/DM4, FEI SER/EMI, Velox and NCEM EMD examples ship inside the HyperSpy 1.7.6 wheel on
PyPI (``hyperspy/tests/io/...``, GPL-3.0 like HyperSpy). They are fetched from PyPI with pip into
a cache outside the repository (``$TILTGEN_TEST_DATA`` or ``~/.cache/napari-tiltgen/test-data``),
never copied into this repository. ``.ci/run`` calls this script before the tests; the tests'
fixture calls :func:`fetch` too, and FAILS with the reason when the files cannot be had (a test
must not skip silently).

Run: ``python tests/fetch_test_data.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL_SPEC = "hyperspy==1.7.6"
PREFIX = "hyperspy/tests/io/"
MEMBERS = (
    "dm3_3D_data/test-1.dm3",
    "dm4_3D_data/test-1.dm4",
    "dm_stackbuilder_plugin/test_stackbuilder_imagestack.dm3",
    "dm3_2D_data/test_STEM_image.dm3",
    "emd_files/fei_example_tem_stack.emd",
    "emd_files/example_signal.emd",
    "FEI_old/64x64x5_TEM_preview.emi",
    "FEI_old/64x64x5_TEM_preview_1.ser",
)


def data_dir() -> Path:
    root = os.environ.get("TILTGEN_TEST_DATA") or Path.home() / ".cache" / "napari-tiltgen" / \
        "test-data"
    return Path(root) / "hyperspy-1.7.6"


def fetch() -> Path:
    """The folder holding :data:`MEMBERS` (downloaded with pip once, then cached)."""
    out = data_dir()
    if all((out / m).is_file() for m in MEMBERS):
        return out
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
               "--platform", "manylinux2014_x86_64", "--python-version", "3.11",
               "--implementation", "cp", "--abi", "cp311", "-d", tmp, WHEEL_SPEC]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
        wheels = list(Path(tmp).glob("hyperspy-*.whl"))
        if res.returncode != 0 or not wheels:
            raise RuntimeError(f"'{' '.join(cmd)}' failed:\n{res.stderr[-2000:]}")
        with zipfile.ZipFile(wheels[0]) as z:
            for m in MEMBERS:
                target = out / m
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(z.read(PREFIX + m))
    return out


if __name__ == "__main__":
    print(fetch())
