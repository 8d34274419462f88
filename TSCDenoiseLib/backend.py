"""What this installation computes with: versions, devices and the deformable-convolution backend."""

from __future__ import annotations

from typing import Any, Dict

import torch

from .networks.deform_conv import resolve_backend, torchvision_deform_conv2d
from .version import __version__


def backend_info() -> Dict[str, Any]:
    """Versions, available devices, and which deformable-convolution backend "auto" uses on each."""
    try:
        import torchvision

        torchvision_version = torchvision.__version__ if torchvision_deform_conv2d() is not None else None
    except Exception:
        torchvision_version = None
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    info: Dict[str, Any] = {
        "tscdenoise": __version__,
        "torch": torch.__version__,
        "torchvision": torchvision_version,
        "cuda_available": torch.cuda.is_available(),
        "dcn_backend": {d: resolve_backend("auto", torch.device(d)) for d in devices},
    }
    if torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info
