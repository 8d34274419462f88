"""TSCDenoise engine: TSC-Net low-dose CT denoising (networks, losses, checkpoints, inference).

Submodules are imported on first use, so ``import TSCDenoiseLib`` stays cheap (Slicer imports it at
start-up) and parts that need no torch (e.g. I/O) work without it.
"""

from importlib import import_module
from importlib.util import find_spec
from typing import Any

from .errors import (
    CheckpointError,
    DefaultModelMissingError,
    DenoiseCancelled,
    DeviceError,
    InvalidInputError,
    InvalidVolumeError,
    OutputExistsError,
    TSCDenoiseError,
)
from .version import __version__

_LAZY = {
    "TSCNet": "networks",
    "denoise_volume": "inference",
    "load_model": "checkpoint",
    "save_model": "checkpoint",
    "export_model": "export",
    "backend_info": "backend",
    "HUWindow": "intensity",
}

__all__ = sorted(
    list(_LAZY)
    + [
        "CheckpointError",
        "DefaultModelMissingError",
        "DenoiseCancelled",
        "DeviceError",
        "InvalidInputError",
        "InvalidVolumeError",
        "OutputExistsError",
        "TSCDenoiseError",
        "__version__",
    ]
)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    if not name.startswith("_") and find_spec(f"{__name__}.{name}") is not None:
        # `TSCDenoiseLib.data...` after a bare `import TSCDenoiseLib` (as MONAI bundle configs write it)
        return import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
