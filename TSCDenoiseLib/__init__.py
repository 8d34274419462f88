"""TSCDenoise engine: TSC-Net low-dose CT denoising (networks, losses, checkpoints, inference).

Submodules are imported on first use, so ``import TSCDenoiseLib`` stays cheap (Slicer imports it at
start-up) and parts that need no torch (e.g. I/O) work without it.
"""

from importlib import import_module
from typing import Any

from .errors import (
    CheckpointError,
    DefaultModelMissingError,
    DenoiseCancelled,
    DenoiseOutOfMemory,
    DeviceError,
    ExportError,
    Interrupted,
    InvalidInputError,
    InvalidVolumeError,
    MissingDependencyError,
    OutputExistsError,
    OutputWriteError,
    TSCDenoiseError,
    exit_code,
)
from .lazy import submodule_getattr
from .version import __version__

_LAZY = {
    "TSCNet": "networks",
    "denoise_volume": "core.inference",
    "load_model": "core.checkpoint",
    "save_model": "core.checkpoint",
    "export_model": "core.export",
    "runtime_info": "core.device",
    "HUWindow": "core.intensity",
}

__all__ = sorted(
    list(_LAZY)
    + [
        "CheckpointError",
        "DefaultModelMissingError",
        "DenoiseCancelled",
        "DenoiseOutOfMemory",
        "DeviceError",
        "ExportError",
        "Interrupted",
        "InvalidInputError",
        "InvalidVolumeError",
        "MissingDependencyError",
        "OutputExistsError",
        "OutputWriteError",
        "TSCDenoiseError",
        "exit_code",
        "__version__",
    ]
)


_submodule = submodule_getattr(__name__)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    return _submodule(name)
