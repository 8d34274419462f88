"""Inference core (numpy + torch only): checkpoints, devices, intensity windows, volume checks, the slab
runners behind `denoise_volume`, export, metrics and the lookup of shipped files."""

from ..lazy import submodule_getattr

__getattr__ = submodule_getattr(__name__)
