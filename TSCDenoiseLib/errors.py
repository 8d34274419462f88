"""Errors raised to users (each message names the problem and what to do about it), and the one mapping
from an exception to the exit code that the CLI, the worker process and the background runner share.

Exit codes: 0 success, 1 runtime failure, 2 bad usage or bad input, 128 + N stopped by signal N (130 for
Ctrl-C, 143 for SIGTERM).
"""

from __future__ import annotations

import signal as _signal
from typing import Optional

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED = 128 + int(_signal.SIGINT)  # 130


class TSCDenoiseError(Exception):
    """Base class of every error TSCDenoise raises on purpose."""


class InvalidInputError(TSCDenoiseError, ValueError):
    """A file, folder, datalist or argument given by the user cannot be used as it is."""


class InvalidVolumeError(InvalidInputError):
    """The image given to the engine cannot be denoised as it is (shape, values, type)."""


class CheckpointError(TSCDenoiseError):
    """A checkpoint file is missing, corrupt, unsafe, or does not match its network."""


class DefaultModelMissingError(CheckpointError):
    """No path was given and no bundled default weights were found."""


class DenoiseCancelled(TSCDenoiseError):
    """The caller's cancel hook (or the Cancel button) stopped the running denoise; nothing was returned."""


class DenoiseOutOfMemory(TSCDenoiseError, MemoryError):
    """Even a single slice does not fit in the GPU's memory."""


class DeviceError(TSCDenoiseError, ValueError):
    """The requested device does not exist or is not available on this machine."""


class OutputExistsError(InvalidInputError, FileExistsError):
    """The output path is taken and overwriting was not asked for (or what is there may not be replaced)."""


class OutputWriteError(TSCDenoiseError):
    """An output could not be written completely (full disk, read-only folder, short write); nothing was kept."""


class ExportError(TSCDenoiseError):
    """The model could not be exported in the requested format."""


class MissingDependencyError(TSCDenoiseError, ImportError):
    """An optional package this feature needs is not installed; the message names the extra to install."""


class Interrupted(BaseException):
    """A termination signal (SIGTERM, SIGHUP) arrived; raised like KeyboardInterrupt so clean-up code runs."""

    def __init__(self, signum: int = int(_signal.SIGTERM)) -> None:
        super().__init__(f"stopped by signal {_signal.Signals(signum).name}")
        self.signum = int(signum)


def exit_code(exc: Optional[BaseException]) -> int:
    """The process exit code for `exc` (None: success), as the CLI, the worker and the background runner use."""
    if exc is None:
        return EXIT_OK
    if isinstance(exc, Interrupted):
        return 128 + exc.signum
    if isinstance(exc, (KeyboardInterrupt, DenoiseCancelled)):
        return EXIT_INTERRUPTED
    if isinstance(exc, (InvalidInputError, OutputExistsError, DeviceError)):
        return EXIT_USAGE
    return EXIT_FAILURE


def exception_for_exit_code(code: int, message: str) -> TSCDenoiseError:
    """The error a parent raises for a child that exited with `code` (the inverse of `exit_code`)."""
    if code == EXIT_USAGE:
        return InvalidInputError(message)
    stopped_by = {int(_signal.SIGINT), int(_signal.SIGTERM)}
    if code - 128 in stopped_by or -code in stopped_by:  # handled, or killed by the signal (Popen: -N)
        return DenoiseCancelled(message)
    return TSCDenoiseError(message)


def raise_on_termination(signum: int, frame=None) -> None:
    """A signal handler: turn SIGTERM (or SIGHUP) into `Interrupted`, so `finally` blocks remove staging files."""
    raise Interrupted(signum)
