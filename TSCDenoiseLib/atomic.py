"""Atomic outputs: write to a temporary name beside the target, rename only when complete."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Union

from .errors import OutputExistsError


def refuse_existing(path: Path, overwrite: bool) -> None:
    """Raise OutputExistsError if `path` exists and overwriting was not asked for."""
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} exists already. Pass overwrite=True (--overwrite) or choose another path.")


@contextmanager
def atomic_output_file(path: Union[str, os.PathLike], overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces `path`, on failure it is deleted."""
    path = Path(path)
    refuse_existing(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        refuse_existing(path, overwrite)  # it may have appeared while we were writing
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
