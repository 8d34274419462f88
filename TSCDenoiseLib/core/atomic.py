"""Atomic outputs: write to a temporary name beside the target, rename only when complete."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Union

from ..errors import OutputExistsError


def refuse_existing(path: Path, overwrite: bool) -> None:
    """Raise OutputExistsError if `path` exists and overwriting was not asked for."""
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} exists already. Pass overwrite=True (--overwrite) or choose another path.")


def _default_file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def atomic_output_file(
    path: Union[str, os.PathLike], overwrite: bool = False, suffix: str = ".tmp"
) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces `path`, on failure it is deleted.

    Writers that choose the format from the file name need `suffix` to end with the real extension.
    """
    path = Path(path)
    refuse_existing(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        refuse_existing(path, overwrite)  # it may have appeared while we were writing
        os.chmod(tmp, _default_file_mode())  # mkstemp makes 0600 files; outputs get the usual umask mode
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
