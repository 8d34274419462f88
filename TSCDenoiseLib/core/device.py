"""Devices: "auto" resolves to the first CUDA GPU when there is one, else the CPU; what this installation computes with."""

from __future__ import annotations

from typing import Any, Dict, Union

import torch

from ..errors import DeviceError
from ..networks.deform_conv import resolve_backend, torchvision_deform_conv2d
from ..version import __version__


def resolve_device(device: Union[str, torch.device, None] = "auto") -> torch.device:
    """A concrete torch.device for "auto", "cpu", "cuda", "cuda:N", "mps" (or a torch.device); DeviceError if absent."""
    if device is None or (isinstance(device, str) and device.lower() == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise DeviceError(f"Unknown device {device!r}. Use 'auto', 'cpu', 'cuda' or 'cuda:N'.") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                "CUDA was requested but this PyTorch sees no CUDA GPU (CPU-only build, or no driver). "
                "Use device='cpu' (or 'auto'), or install a CUDA build of PyTorch."
            )
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise DeviceError(
                f"GPU {resolved.index} was requested but only {torch.cuda.device_count()} GPU(s) exist. "
                "Use 'cuda:0' or 'auto'."
            )
    elif resolved.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise DeviceError(
                "MPS (the Apple-silicon GPU) was requested but this PyTorch sees none (not a Mac with Apple "
                "silicon, or a build without MPS). Use device='cpu' (or 'auto')."
            )
    elif resolved.type != "cpu":
        raise DeviceError(f"Device type {resolved.type!r} is not supported. Use 'auto', 'cpu', 'cuda' or 'mps'.")
    return resolved


def describe_device(device: torch.device) -> str:
    """A human-readable name, with the GPU's model and free memory for CUDA devices."""
    if device.type != "cuda":
        return str(device)
    index = device.index if device.index is not None else torch.cuda.current_device()
    free, total = torch.cuda.mem_get_info(index)
    return f"cuda:{index} ({torch.cuda.get_device_name(index)}, {free / 2**30:.1f} of {total / 2**30:.1f} GiB free)"


def runtime_info() -> Dict[str, Any]:
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
