"""The one path by which napari-tiltgen writes files.

Every file the package writes (volumes, tilt series, sidecars ``.rawtlt``/``.tlt``/``.xf``/
``.json``, reports, poses, exports, CSV/JSON/PNG) goes through an :class:`OutputPlan`:

1. **Planned and validated before any compute** (:func:`planned_outputs`): the folder exists and
   is writable (a real probe file is created and removed), the extension matches the format, the
   name fits the file system (the temporary name too), the target is not a folder, not an input
   file and not an input's sidecar (symlinks resolved, same inode), and it does not exist unless
   ``overwrite`` is set.
2. **Written to temporary files in the same folder** (``.tg-XXXXXXXX.part.<ext>``, short whatever
   the final name's length) and **renamed into place only when every file of the plan is
   complete** (:meth:`OutputPlan.commit`): a file and its sidecars appear together or not at all;
   on any failure (full disk, Ctrl-C, an error in the writer) every temporary file is removed.
3. **Exclusive creation unless overwrite**: without ``overwrite`` a file is moved into place with
   ``os.link`` (fails if the name exists), so of two programs writing the same new name exactly
   one succeeds and the other gets a clear error, never a silent replacement.

Errors are :class:`~napari_tiltgen.core.errors.TiltgenError` naming the file.
"""

from __future__ import annotations

import errno
import os
import secrets
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from napari_tiltgen.core.errors import TiltgenError

#: Suffixes of the files written by the tilt-series / volume writers.
MRC_SUFFIXES = (".mrc", ".mrcs", ".st", ".ali", ".preali", ".rec", ".map")
TIFF_SUFFIXES = (".tif", ".tiff")
DATA_SUFFIXES = MRC_SUFFIXES + TIFF_SUFFIXES
#: Outputs that are folders (an OME-Zarr store): written to a temporary folder and renamed.
FOLDER_SUFFIXES = (".zarr",)
#: Files that belong to an input stack (tilt angles, alignment, SerialEM, metadata...).
INPUT_SIDECAR_SUFFIXES = (".rawtlt", ".tlt", ".xf", ".xtilt", ".mdoc", ".json", ".tltxf", ".prexf",
                          ".prexg", ".xg")
#: Longest file name assumed when the file system does not say (ext4, xfs, btrfs, ...).
DEFAULT_NAME_MAX = 255
_TMP_PREFIX = ".tg-"
_TMP_MARK = ".part"

Content = str | bytes | Callable[[Path], object]


def _name_max(folder: Path) -> int:
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):
        return DEFAULT_NAME_MAX


def os_problem(exc: OSError) -> str:
    """A short user-facing description of an OSError."""
    e = exc.errno
    if e in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if e == errno.EROFS:
        return "the file system is read-only"
    if e == errno.ENOSPC:
        return "no space left on the device"
    if e == getattr(errno, "EDQUOT", -1):
        return "disk quota exceeded"
    if e == errno.ENAMETOOLONG:
        return "the file name is too long for the file system"
    if e == errno.ELOOP:
        return "a symbolic link loops (too many levels of symbolic links)"
    if e == errno.EISDIR:
        return "is a folder"
    if e == errno.ENOTDIR:
        return "a part of the path is not a folder"
    if e == errno.ENOENT:
        return "no such file or folder"
    return exc.strerror or str(exc)


def input_family(path: str | os.PathLike) -> list[Path]:
    """The existing files that belong to input ``path``: itself and its sidecars."""
    p = Path(path)
    out = [p]
    cands = [p.with_suffix(s) for s in INPUT_SIDECAR_SUFFIXES]
    cands.append(p.with_name(p.name + ".mdoc"))
    out.extend(cands)
    found = []
    for c in out:
        try:
            if os.path.lexists(c):
                found.append(c)
        except (OSError, ValueError):
            continue
    return found


def _same_file(a: Path, b: Path) -> bool:
    try:
        if os.path.samefile(a, b):
            return True
    except (OSError, ValueError):
        pass
    try:
        return a.resolve() == b.resolve()
    except (OSError, RuntimeError, ValueError):
        return os.path.abspath(a) == os.path.abspath(b)


class OutputPlan:
    """A set of files to be written together (see module docstring).

    Build one with :func:`planned_outputs` before the work starts; after the work, call
    :meth:`commit` with the contents of every file.
    """

    def __init__(self, paths: list[Path], overwrite: bool, inputs: list[Path]):
        self.paths = paths
        self.overwrite = overwrite
        self.inputs = inputs

    @property
    def main(self) -> Path:
        return self.paths[0]

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"OutputPlan({[str(p) for p in self.paths]}, overwrite={self.overwrite})"

    # ---------------------------------------------------------------- validation
    def validate(self) -> OutputPlan:
        """Check every target now (see :func:`planned_outputs`); returns ``self``."""
        seen: set[str] = set()
        families = [f for i in self.inputs for f in input_family(i)]
        probed: set[Path] = set()
        for t in self.paths:
            key = os.path.abspath(t)
            if key in seen:
                raise TiltgenError("named twice among the outputs; choose distinct names.", t)
            seen.add(key)
            name = t.name
            if not name or name in (".", ".."):
                raise TiltgenError("not a file name.", t)
            folder = t.parent
            limit = _name_max(folder) if folder.is_dir() else DEFAULT_NAME_MAX
            if len(os.fsencode(name)) > limit:
                raise TiltgenError(f"the file name is {len(os.fsencode(name))} bytes long; this "
                                   f"file system allows {limit}. Choose a shorter name.", t)
            try:
                st = os.lstat(t)
            except FileNotFoundError:
                st = None
            except NotADirectoryError:
                raise TiltgenError("a part of the path is a file, not a folder.", t) from None
            except OSError as exc:
                raise TiltgenError(f"cannot check the output ({os_problem(exc)}).", t) from None
            for f in families:
                if _same_file(t, f):
                    what = ("an input file (data are read from it)" if f in self.inputs
                            else f"a sidecar of the input file ({f.name})")
                    raise TiltgenError(f"this output would replace {what}; inputs and their "
                                       "sidecars are never written over. Choose another name.",
                                       t)
            if st is not None:
                import stat

                if stat.S_ISLNK(st.st_mode):
                    try:
                        os.stat(t)
                    except OSError as exc:
                        if exc.errno == errno.ELOOP:
                            raise TiltgenError("the output name is a symbolic link that loops; "
                                               "choose another name.", t) from None
                    if os.path.isdir(t):
                        raise TiltgenError("is a folder; give a file name.", t)
                elif stat.S_ISDIR(st.st_mode) and not _is_folder_output(t):
                    raise TiltgenError("is a folder; give a file name.", t)
                elif stat.S_ISDIR(st.st_mode) and self.overwrite and not _is_zarr_store(t):
                    raise TiltgenError("exists and is not a Zarr store; it is never replaced, "
                                       "even with --overwrite. Choose another name.", t)
                elif _is_folder_output(t) and not stat.S_ISDIR(st.st_mode):
                    raise TiltgenError("exists and is a file, not a Zarr folder; choose "
                                       "another name.", t)
                if not self.overwrite:
                    raise TiltgenError("already exists; choose another name or allow "
                                       "overwriting (--overwrite).", t)
            self._check_folder(folder, t, probed)
        return self

    @staticmethod
    def _check_folder(folder: Path, target: Path, probed: set[Path]) -> None:
        if folder in probed:
            return
        try:
            is_dir = folder.is_dir()
        except OSError as exc:
            raise TiltgenError(f"cannot use the output folder ({os_problem(exc)}).",
                               folder) from None
        if not is_dir:
            if os.path.lexists(folder):
                raise TiltgenError("is not a folder, so the output cannot go there.", folder)
            raise TiltgenError(f"the output folder does not exist (for {target.name}); create it "
                               "first.", folder)
        # A real probe: catches read-only mounts, permissions, ACLs, root-squash...
        probe = folder / f"{_TMP_PREFIX}{secrets.token_hex(4)}.probe"
        try:
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            raise TiltgenError(f"cannot write in the output folder ({os_problem(exc)}).",
                               folder) from None
        os.close(fd)
        try:
            os.unlink(probe)
        except OSError:
            pass
        probed.add(folder)

    # ---------------------------------------------------------------- writing
    def commit(self, contents: Mapping[Path | str, Content]) -> list[Path]:
        """Write every planned file, all or nothing.

        ``contents`` maps each planned path to ``str`` (UTF-8 text), ``bytes`` or a callable
        writing the file at the temporary path it is given. Paths of the plan missing from
        ``contents`` are not written. Returns the paths written.
        """
        items: list[tuple[Path, Content]] = []
        by_key = {os.path.abspath(p): p for p in self.paths}
        for p, c in contents.items():
            key = os.path.abspath(p)
            if key not in by_key:
                raise ValueError(f"{p} is not part of this output plan")  # programming error
            items.append((by_key[key], c))
        temps: list[Path] = []
        placed: list[Path] = []
        try:
            for final, content in items:
                tmp = self._new_temp(final)
                temps.append(tmp)
                try:
                    if isinstance(content, str):
                        with open(tmp, "w", encoding="utf-8") as f:
                            f.write(content)
                    elif isinstance(content, (bytes, bytearray, memoryview)):
                        with open(tmp, "wb") as f:
                            f.write(content)
                    else:
                        content(tmp)
                except OSError as exc:
                    raise TiltgenError(f"could not write the file ({os_problem(exc)}); nothing "
                                       "was written.", final) from exc
                except MemoryError:
                    raise TiltgenError("out of memory while writing the file; nothing was "
                                       "written.", final) from None
            umask = os.umask(0)
            os.umask(umask)
            for tmp in temps:
                try:
                    os.chmod(tmp, (0o777 if tmp.is_dir() else 0o666) & ~umask)
                except OSError:
                    pass
            for (final, _), tmp in zip(items, temps):
                self._place(tmp, final)
                placed.append(final)
        except BaseException:
            if not self.overwrite:
                for p in placed:  # created by us a moment ago: roll back
                    _remove(p)
            raise
        finally:
            for tmp in temps:
                _remove(tmp)
        return [f for f, _ in items]

    def _new_temp(self, final: Path) -> Path:
        suffix = "".join(final.suffixes[-1:])[:16]
        for _ in range(100):
            tmp = final.parent / f"{_TMP_PREFIX}{secrets.token_hex(4)}{_TMP_MARK}{suffix}"
            try:
                if _is_folder_output(final):
                    os.mkdir(tmp, 0o700)
                else:
                    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            except FileExistsError:
                continue
            except OSError as exc:
                raise TiltgenError(f"cannot create a file in the output folder "
                                   f"({os_problem(exc)}); nothing was written.", final) from None
            return tmp
        raise TiltgenError("cannot create a temporary file in the output folder.", final)

    def _place(self, tmp: Path, final: Path) -> None:
        if _is_folder_output(final):
            self._place_folder(tmp, final)
            return
        try:
            if self.overwrite:
                if os.path.isdir(final) and not os.path.islink(final):
                    raise TiltgenError("is a folder; give a file name.", final)
                os.replace(tmp, final)
                return
            try:
                os.link(tmp, final)  # atomic: fails if the name exists
            except FileExistsError:
                raise TiltgenError("was created by another program while this one was working; "
                                   "it was left as it is and nothing was written.",
                                   final) from None
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV,
                                     errno.EMLINK):
                    raise
                # File systems without hard links: reserve the name exclusively, then replace.
                try:
                    fd = os.open(final, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                except FileExistsError:
                    raise TiltgenError("was created by another program while this one was "
                                       "working; it was left as it is and nothing was written.",
                                       final) from None
                os.close(fd)
                os.replace(tmp, final)
        except OSError as exc:
            raise TiltgenError(f"could not move the finished file into place "
                               f"({os_problem(exc)}); nothing was written.", final) from exc

    def _place_folder(self, tmp: Path, final: Path) -> None:
        """Rename a finished folder into place: exclusively (``rename`` refuses a non-empty
        target), or with ``overwrite`` after moving the old store aside (put back on failure)."""
        old = None
        if self.overwrite and final.is_dir() and _is_zarr_store(final):
            old = final.parent / f"{_TMP_PREFIX}{secrets.token_hex(4)}.old{final.suffix}"
            os.rename(final, old)
        try:
            os.rename(tmp, final)
        except OSError as exc:
            if old is not None:
                os.rename(old, final)
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR):
                raise TiltgenError("was created by another program while this one was working; "
                                   "it was left as it is and nothing was written.",
                                   final) from None
            raise TiltgenError(f"could not move the finished folder into place "
                               f"({os_problem(exc)}); nothing was written.", final) from exc
        if old is not None:
            _remove(old)


def _is_folder_output(path: Path) -> bool:
    return path.suffix.lower() in FOLDER_SUFFIXES


def _is_zarr_store(path: Path) -> bool:
    return any((path / n).is_file() for n in (".zgroup", ".zarray", "zarr.json"))


def _remove(path: Path) -> None:
    """Remove a temporary (or just placed) file or folder; errors are ignored."""
    import shutil

    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)
    except OSError:
        pass


def planned_outputs(
    main: str | os.PathLike,
    sidecars: Iterable[str | os.PathLike] = (),
    *,
    overwrite: bool = False,
    inputs: Iterable[str | os.PathLike | None] = (),
    formats: Iterable[str] | None = None,
    what: str = "output",
    create_folder: bool = False,
) -> OutputPlan:
    """Plan and validate the outputs of a job before it starts.

    Parameters
    ----------
    main
        The main output file (``--out``).
    sidecars
        Files written together with it (``.rawtlt``, ``.json``, ...); all or nothing.
    overwrite
        Allow replacing existing outputs (never an input or an input's sidecar).
    inputs
        The job's input files (``None`` entries are ignored); they and their sidecars are
        protected.
    formats
        Suffixes allowed for ``main`` (lower case, with the dot), e.g. :data:`DATA_SUFFIXES`.
    what
        What ``main`` is, for the error message ("output volume", ...).
    create_folder
        Create the folder of ``main`` if it is missing (its parent must exist).

    Raises
    ------
    TiltgenError
        Naming the file and the problem.
    """
    main = Path(os.fspath(main))
    if formats is not None:
        formats = tuple(s.lower() for s in formats)
        if main.suffix.lower() not in formats:
            raise TiltgenError(f"the {what} must end in one of {', '.join(formats)} (the "
                               f"extension sets the format); got {main.suffix or 'no extension'!r}.",
                               main)
    if create_folder and not main.parent.exists():
        if not main.parent.parent.is_dir():
            raise TiltgenError("the output folder does not exist, nor its parent.", main.parent)
        try:
            main.parent.mkdir(exist_ok=True)
        except OSError as exc:
            raise TiltgenError(f"cannot create the output folder ({os_problem(exc)}).",
                               main.parent) from None
    paths = [main, *(Path(os.fspath(s)) for s in sidecars)]
    ins = [Path(os.fspath(i)) for i in inputs if i is not None and os.fspath(i) != ""]
    return OutputPlan(paths, overwrite, ins).validate()


def write_text(path: str | os.PathLike, text: str | bytes, *, overwrite: bool = False,
               inputs: Iterable[str | os.PathLike | None] = ()) -> Path:
    """Validate and write one text (or bytes) file atomically."""
    plan = planned_outputs(path, overwrite=overwrite, inputs=inputs)
    return plan.commit({plan.main: text})[0]


def write_file(path: str | os.PathLike, writer: Callable[[Path], object], *,
               overwrite: bool = False, inputs: Iterable[str | os.PathLike | None] = ()) -> Path:
    """Validate and write one file atomically with ``writer(tmp_path)`` (e.g. a savefig)."""
    plan = planned_outputs(path, overwrite=overwrite, inputs=inputs)
    return plan.commit({plan.main: writer})[0]


def stray_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Temporary files of this module left in ``folder`` (there should be none)."""
    return sorted(p for p in Path(folder).iterdir()
                  if p.name.startswith(_TMP_PREFIX) and (_TMP_MARK in p.name
                                                         or p.name.endswith(".probe")))
