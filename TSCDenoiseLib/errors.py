"""Errors raised to users: each message names the problem and what to do about it."""


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
    """The caller's cancel hook asked the running denoise to stop."""


class DeviceError(TSCDenoiseError, ValueError):
    """The requested device does not exist or is not available on this machine."""


class OutputExistsError(TSCDenoiseError, FileExistsError):
    """An output path exists already and overwriting was not asked for."""
