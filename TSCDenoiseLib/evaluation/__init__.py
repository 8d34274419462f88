"""Evaluation (scipy, matplotlib, MONAI's SSIM): scoring of denoisers against references, the datalist
benchmark, classical baselines and the image-quality report."""

from ..lazy import submodule_getattr

__getattr__ = submodule_getattr(__name__)
