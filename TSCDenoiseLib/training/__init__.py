"""Training (MONAI, astra-toolbox): low-dose simulation, datasets and transforms, losses, engines and handlers
used by the bundle in `training/`."""

from ..lazy import submodule_getattr

__getattr__ = submodule_getattr(__name__)
