"""Atomic, verified outputs: check the target first, write to a hidden name beside it, verify, then rename.

One check (`check_output`) guards every output: the input (or a folder holding it) is never an output,
the current folder is never one, an existing output is replaced only with `overwrite` and then only when
it is what this program writes there (a file for a file; for a folder, one the caller recognises as its own),
and the destination folder must be writable. Writers then stage a file (`atomic_output_file`) or a folder
(`atomic_output_folder`); staging is flushed to disk and verified before the rename, and removed on any
failure, Ctrl-C or SIGTERM, so a full disk or an interrupt never leaves a partial or hidden file.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Union

from ..errors import InvalidInputError, OutputExistsError, OutputWriteError, TSCDenoiseError

PathLike = Union[str, os.PathLike]
OwnedFn = Callable[[Path], bool]


def check_output(
    path: PathLike,
    overwrite: bool = False,
    kind: str = "file",
    inputs: Iterable[PathLike] = (),
    owned: Optional[OwnedFn] = None,
    what: str = "",
) -> Path:
    """Refuse an output that may not be written; called before any work so a long run never ends refused.

    Args:
        path: the output file or folder.
        overwrite: whether an existing output may be replaced.
        kind: "file" or "folder" (what will be written at `path`).
        inputs: paths read by this run; neither they nor a folder holding them may be the output.
        owned: for folders, recognises a folder this program wrote (only such a folder is replaced).
        what: what a folder output is, for messages ("a DICOM series", "a report").

    Returns:
        `path` as a Path.

    Raises:
        InvalidInputError: the output is an input, holds an input, is the current folder, or cannot be written.
        OutputExistsError: the output exists and `overwrite` is false, or it is not something we may replace.
    """
    path = Path(path)
    if os.fspath(path) in ("", ".") or _is_within(Path.cwd(), path):
        raise InvalidInputError(
            f"The output '{os.fspath(path)}' is the current folder (or one above it); name a new file or folder."
        )
    for source in inputs:
        source = Path(source)
        if path.resolve() == source.resolve():
            raise InvalidInputError(f"The output {path} is the input; choose a new path so the input is kept.")
        if _is_within(source, path):
            raise InvalidInputError(
                f"The output {path} holds the input {source}; choose a new path so the input is kept."
            )
    if os.path.lexists(path):
        _check_existing(path, overwrite, kind, owned, what or "an output folder")
    _check_writable(path.parent)
    return path


def refuse_existing(path: PathLike, overwrite: bool) -> None:
    """`check_output` for a file output: raise OutputExistsError if it exists and overwriting was not asked for."""
    check_output(path, overwrite, kind="file")


def _check_existing(path: Path, overwrite: bool, kind: str, owned: Optional[OwnedFn], what: str) -> None:
    is_folder = path.is_dir() and not path.is_symlink()
    if kind == "file":
        if is_folder:
            raise OutputExistsError(f"{path} is a folder, but this output is a file; choose a file name.")
    elif not is_folder:
        raise OutputExistsError(
            f"{path} is a file, but {what} is written as a folder; remove the file or choose another name."
        )
    elif not any(path.iterdir()):
        return  # an empty folder holds nothing to lose
    if not overwrite:
        raise OutputExistsError(f"{path} exists already; pass --overwrite (overwrite=True) or choose another path.")
    if kind == "folder" and (owned is None or not owned(path)):
        raise OutputExistsError(
            f"{path} holds files not written by TSCDenoise as {what}; --overwrite only replaces such a folder. "
            "Choose a new folder name."
        )


def _is_within(inner: Path, outer: Path) -> bool:
    """Whether `inner` is `outer` or lies inside it (both resolved)."""
    inner, outer = inner.resolve(), outer.resolve()
    return inner == outer or outer in inner.parents


def _check_writable(folder: Path) -> None:
    """The nearest existing folder on the way to `folder` must accept a new file (tested by creating one)."""
    existing = folder
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise InvalidInputError(f"Cannot write into {folder}: {existing} is a file, not a folder.")
    with _interrupts_held():  # an interrupt must not leave the probe file behind
        try:
            fd, probe = tempfile.mkstemp(prefix=".tscdenoise-probe-", dir=existing)
        except OSError as exc:
            raise InvalidInputError(
                f"Cannot write into {existing} ({exc.strerror or exc}); choose an output folder you can write to."
            ) from None
        os.close(fd)
        os.unlink(probe)


def _mode_after_umask(mode: int) -> int:
    """`mode` as the process's umask leaves it for a new file (0o666) or folder (0o777)."""
    umask = os.umask(0)
    os.umask(umask)
    return mode & ~umask


def _fsync(path: Path) -> None:
    """Flush a written file (or a folder's entries) to the disk, so a delayed ENOSPC shows up here."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_failed(path: PathLike, exc: BaseException, size_hint: Optional[int] = None) -> OutputWriteError:
    """The one-line error for a failed write of `path` (full disk, read-only folder, short write).

    Some writers (ITK's NIfTI writer) report a full disk only on stderr: a short write with less free
    space left than `size_hint` bytes is then named for what it is.
    """
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        reason = os.strerror(exc.errno)
    elif size_hint is not None and _free_bytes(Path(path).parent) < size_hint:
        reason = f"{os.strerror(errno.ENOSPC)} (short write)"
    else:
        lines = str(exc).strip().splitlines()
        reason = (getattr(exc, "strerror", None) or (lines[0] if lines else type(exc).__name__)).strip()
    return OutputWriteError(
        f"Could not write {path}: {reason}. Nothing was written; free some disk space or choose another folder."
    )


def _free_bytes(folder: Path) -> int:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return 1 << 62


@contextmanager
def atomic_output_file(
    path: PathLike,
    overwrite: bool = False,
    suffix: str = ".tmp",
    verify: Optional[Callable[[Path], None]] = None,
    size_hint: Optional[int] = None,
) -> Iterator[Path]:
    """Yield a temporary path to write; it is flushed, verified and renamed to `path`, or deleted on failure.

    Writers that choose the format from the file name need `suffix` to end with the real extension.
    `verify(tmp)` reads the written file back and raises if it is incomplete; OSErrors from the writer
    or the verification become OutputWriteError (one line, nothing left behind); `size_hint` (about the
    bytes to write) lets that message recognise a full disk that the writer did not report.
    """
    path = check_output(path, overwrite, kind="file")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp: Optional[Path] = None
    try:
        with _interrupts_held():
            fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
            os.close(fd)
            tmp = Path(tmp_name)
        try:
            yield tmp
            _fsync(tmp)
            if verify is not None:
                verify(tmp)
        except OSError as exc:
            if isinstance(exc, TSCDenoiseError):
                raise
            tmp.unlink(missing_ok=True)  # before measuring the free space
            raise write_failed(path, exc, size_hint) from None
        check_output(path, overwrite, kind="file")  # it may have appeared while we were writing
        os.chmod(tmp, _mode_after_umask(0o666))  # mkstemp makes 0600 files; outputs get the usual umask mode
        os.replace(tmp, path)
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)


@contextmanager
def _interrupts_held() -> Iterator[None]:
    """Hold SIGINT/SIGTERM/SIGHUP while a staging path is created and recorded.

    Python runs a signal's handler between bytecodes, so a Ctrl-C or a SIGTERM (which the CLI turns into an
    exception) could otherwise land after the file exists and before its name is known to the cleanup, and
    leave it behind. The handlers are swapped for one that only records the signal (a thread mask would not
    do: the kernel hands a process signal to any thread that has it unblocked), and a recorded signal is
    raised again, to the handlers in force before, when the block ends: inside the cleanup's reach.
    Handlers can only be changed in the main thread; elsewhere nothing is held.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    names = ("SIGINT", "SIGTERM", "SIGHUP")
    held = [getattr(signal, name) for name in names if hasattr(signal, name)]
    previous = {number: signal.getsignal(number) for number in held}
    held = [number for number in held if previous[number] is not None]  # None: set outside Python, keep it
    pending: list = []
    for number in held:
        signal.signal(number, lambda signum, frame: pending.append(signum))
    try:
        yield
    finally:
        for number in held:
            signal.signal(number, previous[number])
        for number in pending:
            signal.raise_signal(number)


def write_bytes_atomically(path: PathLike, data: bytes, overwrite: bool = False) -> Path:
    """Write `data` to `path` through `atomic_output_file`, checking the size that reached the disk.

    For writers that can serialise to memory (torch.save, torch.jit.save, torch.export.save): their own
    file writers can abort the process on a full disk, Python's raise OSError instead.
    """
    with atomic_output_file(path, overwrite, verify=lambda tmp: _check_size(tmp, len(data))) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(data)
    return Path(path)


def _check_size(path: Path, expected: int) -> None:
    size = path.stat().st_size
    if size != expected:
        raise OSError(errno.EIO, f"short write ({size} of {expected} bytes)", str(path))


@contextmanager
def atomic_output_folder(
    folder: PathLike,
    overwrite: bool = False,
    inputs: Iterable[PathLike] = (),
    owned: Optional[OwnedFn] = None,
    what: str = "an output folder",
    verify: Optional[Callable[[Path], None]] = None,
    size_hint: Optional[int] = None,
) -> Iterator[Path]:
    """Yield a hidden sibling folder to fill; it replaces `folder` only when complete and verified.

    `folder` must pass `check_output(kind="folder")`: with `overwrite`, an existing non-empty folder is
    replaced only if `owned(folder)` says this program wrote it. Every staged file is flushed to disk
    and `verify(staging)` runs before the rename; on any failure or interrupt the staging is removed.
    """
    folder = check_output(folder, overwrite, kind="folder", inputs=inputs, owned=owned, what=what)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging: Optional[Path] = None
    try:
        with _interrupts_held():
            staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
        try:
            yield staging
            for file in staging.iterdir():
                _fsync(file)
            if verify is not None:
                verify(staging)
        except OSError as exc:
            if isinstance(exc, TSCDenoiseError):
                raise
            shutil.rmtree(staging, ignore_errors=True)  # before measuring the free space
            raise write_failed(folder, exc, size_hint) from None
        check_output(folder, overwrite, kind="folder", inputs=inputs, owned=owned, what=what)
        os.chmod(staging, _mode_after_umask(0o777))
        if os.path.lexists(folder):
            _replace_folder(staging, folder)
        else:
            os.replace(staging, folder)
    except BaseException:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        raise


def _replace_folder(staging: Path, folder: Path) -> None:
    """Swap `staging` in for `folder`: the old folder is moved aside first, so a failure keeps one of them."""
    aside = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old.", dir=folder.parent))
    os.rmdir(aside)
    os.replace(folder, aside)
    try:
        os.replace(staging, folder)
    except BaseException:
        os.replace(aside, folder)
        raise
    shutil.rmtree(aside, ignore_errors=True)
