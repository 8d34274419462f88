"""Device selection: "auto" means the first CUDA GPU when there is one, else the CPU."""

from __future__ import annotations

from typing import Union

import torch

from .errors import DeviceError


def resolve_device(device: Union[str, torch.device, None] = "auto") -> torch.device:
    """A concrete torch.device for "auto", "cpu", "cuda", "cuda:N" (or a torch.device)."""
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
    elif resolved.type != "cpu" and resolved.type != "mps":
        raise DeviceError(f"Device type {resolved.type!r} is not supported. Use 'auto', 'cpu' or 'cuda'.")
    return resolved


def describe_device(device: torch.device) -> str:
    """A human-readable name, with the GPU's model and free memory for CUDA devices."""
    if device.type != "cuda":
        return str(device)
    index = device.index if device.index is not None else torch.cuda.current_device()
    free, total = torch.cuda.mem_get_info(index)
    return f"cuda:{index} ({torch.cuda.get_device_name(index)}, {free / 2**30:.1f} of {total / 2**30:.1f} GiB free)"
