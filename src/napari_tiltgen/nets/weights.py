"""Pretrained weights shipped with the package (in ``napari_tiltgen/models/``), and their
integrity checks.

``SHA256SUMS`` (in that folder, ``sha256sum`` format) records the sha256 of every shipped
``.safetensors`` file. :func:`check_weights_file` is called by the model loaders before a file
is used:

* a shipped file (one in this folder) must match its recorded sum: flipped bytes or a
  half-copied file give one clear error instead of NaN output;
* any weights file must hold only finite values (:func:`check_finite_tensors`).

After retraining and replacing a shipped file, record its new sum::

    python -m napari_tiltgen.nets.weights --update-checksums

(``tests/test_fault_injection.py`` fails while a recorded sum is stale).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from pathlib import Path
from typing import Any

from napari_tiltgen.core.errors import TiltgenError

#: the shipped weights, their model cards and SHA256SUMS (a data folder, no code)
MODELS_DIR = Path(__file__).resolve().parents[1] / "models"
SUMS_FILE = MODELS_DIR / "SHA256SUMS"
UPDATE_COMMAND = "python -m napari_tiltgen.nets.weights --update-checksums"

_cache: dict[tuple[str, int, int], str] = {}


def sha256_of(path: str | os.PathLike) -> str:
    """Hex sha256 of a file (cached by path, size and modification time)."""
    st = os.stat(path)
    key = (os.fspath(Path(path).resolve()), st.st_size, st.st_mtime_ns)
    if key not in _cache:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _cache[key] = h.hexdigest()
    return _cache[key]


def recorded_sums(sums_file: Path = SUMS_FILE) -> dict[str, str]:
    """``{file name: sha256}`` from ``SHA256SUMS``."""
    out: dict[str, str] = {}
    if not sums_file.is_file():
        return out
    for line in sums_file.read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if len(parts) == 2 and not line.startswith("#"):
            out[parts[1].lstrip("*")] = parts[0].lower()
    return out


def shipped_files() -> list[Path]:
    """The ``.safetensors`` files in this folder."""
    return sorted(MODELS_DIR.glob("*.safetensors"))


def update_checksums(sums_file: Path = SUMS_FILE) -> dict[str, str]:
    """Record the sha256 of every shipped weights file in ``SHA256SUMS`` (atomically)."""
    sums = {p.name: sha256_of(p) for p in shipped_files()}
    text = "".join(f"{h}  {name}\n" for name, h in sorted(sums.items()))
    tmp = sums_file.with_name(f".{sums_file.name}.part")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, sums_file)
    return sums


def is_shipped(path: str | os.PathLike) -> bool:
    try:
        return Path(path).resolve().parent == MODELS_DIR
    except (OSError, RuntimeError):
        return False


def check_weights_file(path: str | os.PathLike) -> None:
    """Refuse a shipped weights file whose sha256 differs from the recorded one."""
    path = Path(path)
    if not is_shipped(path):
        return
    sums = recorded_sums()
    name = path.resolve().name
    if name not in sums:
        raise TiltgenError(f"no sha256 is recorded for this packaged weights file in "
                           f"{SUMS_FILE.name}; if it was added on purpose, run {UPDATE_COMMAND}.",
                           path)
    try:
        actual = sha256_of(path)
    except OSError as exc:
        raise TiltgenError(f"cannot read the weights file ({exc.strerror or exc}).",
                           path) from None
    if actual != sums[name]:
        raise TiltgenError(
            f"the packaged weights file is damaged or was replaced: its sha256 {actual[:12]}... "
            f"is not the recorded {sums[name][:12]}... Reinstall napari-tiltgen; if you "
            f"retrained and replaced it on purpose, run {UPDATE_COMMAND}.", path)


def check_finite_tensors(tensors: dict[str, Any], path: str | os.PathLike) -> None:
    """Refuse weights holding NaN or infinite values, naming the first tensor that does."""
    import torch

    for name, t in tensors.items():
        if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(
                torch.isfinite(t).all()):
            raise TiltgenError(f"the weights hold NaN or infinite values (tensor {name!r}); the "
                               "file is damaged or came from a diverged training run.", path)


def _open(path: Path, tensors: bool) -> tuple[dict[str, str], dict[str, Any]]:
    """``(metadata, tensors)`` of a safetensors file (tensors only when asked), one error."""
    from safetensors import safe_open

    if not path.is_file():
        raise TiltgenError("no such weights file.", path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            out = {k: f.get_tensor(k) for k in f.keys()} if tensors else {}  # noqa: SIM118
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
        raise TiltgenError(f"not a readable safetensors weights file ({exc}).", path) from None
    return meta, out


def read_weights(path: str | os.PathLike, accept: Any, what: str) -> tuple[dict[str, str], dict[str, Any]]:
    """Read a safetensors weights file safely (no pickle): ``(metadata, tensors)`` on the CPU.

    The file must exist, match its recorded sha256 when it is a shipped one, be readable by
    safetensors, be accepted by ``accept(metadata)`` (else: "not a napari-tiltgen ``what``
    model") and hold only finite values. Every failure is one :class:`TiltgenError`.
    """
    path = Path(path)
    if not path.is_file():
        raise TiltgenError("no such weights file.", path)
    check_weights_file(path)
    meta, tensors = _open(path, tensors=True)
    if not accept(meta):
        raise TiltgenError(f"this safetensors file is not a napari-tiltgen {what} model "
                           f"(format {meta.get('format', 'unknown')!r}).", path)
    check_finite_tensors(tensors, path)
    return meta, tensors


def read_info(path: str | os.PathLike) -> dict[str, Any]:
    """The ``info`` metadata (JSON) of a weights file, reading only its header."""
    import json

    path = Path(path)
    meta, _ = _open(path, tensors=False)
    try:
        return json.loads(meta.get("info", "{}"))
    except ValueError as exc:
        raise TiltgenError(f"the weights file's info metadata is not JSON ({exc}).",
                           path) from None


def build_from_weights(path: str | os.PathLike, meta: dict[str, str], tensors: dict[str, Any],
                       make: Any, what: str) -> Any:
    """The network ``make(architecture dict)`` with ``tensors`` loaded (as float32)."""
    import json

    try:
        model = make(json.loads(meta["architecture"]))
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise TiltgenError(f"the architecture metadata is not a {what} network's ({exc}).",
                           path) from None
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in tensors.items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise TiltgenError(f"the weights do not match the architecture ({exc}).", path) from None
    return model


def write_weights(path: str | os.PathLike, model: Any, meta: dict[str, str],
                  half: bool = False) -> Path:
    """Write ``model``'s state (weights and buffers) as safetensors with ``meta``, atomically.

    The one writer of both networks: ``half`` stores floating tensors as float16 (loaded back
    as float32). Written through the package's output path (:func:`napari_tiltgen.io.output.
    write_file`: checked, a temporary file renamed into place, the permissions of a new file
    where safetensors alone creates 0600); an existing file is replaced (training rewrites its
    ``best``/``last`` weights), the folder is created.
    """
    from safetensors.torch import save_file

    from napari_tiltgen.io.output import write_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: (v.detach().half() if half and v.is_floating_point() else v.detach())
               .contiguous().cpu() for k, v in model.state_dict().items()}
    return write_file(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta),
                      overwrite=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m napari_tiltgen.nets.weights",
                                description="Check or record the sha256 of the shipped weights.")
    p.add_argument("--update-checksums", action="store_true",
                   help=f"write the current sums to {SUMS_FILE}")
    args = p.parse_args(argv)
    if args.update_checksums:
        for name, h in update_checksums().items():
            print(f"{h}  {name}")
        print(f"recorded in {SUMS_FILE}")
        return 0
    sums, bad = recorded_sums(), 0
    for f in shipped_files():
        ok = sums.get(f.name) == sha256_of(f)
        bad += not ok
        print(f"{'OK  ' if ok else 'BAD '} {f.name}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
