"""Devices: "auto" resolves to the first CUDA GPU when there is one, else the CPU; what this installation computes with."""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Dict, FrozenSet, Optional, Union

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


# CPU flags of bf16 matrix instructions that oneDNN (PyTorch's CPU convolutions) uses.
BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
AMX_CPU_FLAGS = frozenset({"amx_bf16", "amx_tile"})


@lru_cache(maxsize=1)
def cpu_has_fast_bf16() -> bool:
    """True when this CPU has bf16 matrix instructions (AVX512-BF16 or AMX) that PyTorch's oneDNN kernels use.

    Elsewhere (older x86, most ARM builds) bf16 is emulated and slower than fp32.
    """
    return _cpu_has("_is_avx512_bf16_supported", BF16_CPU_FLAGS) or cpu_has_amx()


@lru_cache(maxsize=1)
def cpu_has_amx() -> bool:
    """True when this CPU has AMX tiles (Intel Xeon 4th generation and later), whose bf16 GEMMs outrun fp32 by far."""
    return _cpu_has("_is_amx_tile_supported", AMX_CPU_FLAGS)


def cpu_prefers_bf16() -> bool:
    """Whether `amp=True` computes in bf16 on this CPU: only with AMX.

    AVX512-BF16 alone is not enough: on the 2-core AVX512-BF16 Xeon (no AMX) these benchmarks ran on,
    a 2048^2 bf16 matmul measured slower than fp32 in every run (51-68 vs 61-86 GFLOP/s) and bf16
    autocast took 0.57-1.30x the time of fp32 eager over four runs (bench_inference.py --candidates).
    A measured choice was tried and flipped from process to process on the loaded machine: the rule
    is fixed per CPU so that the same machine always gives the same result.
    """
    return cpu_has_amx()


def _cpu_has(probe_name: str, flags: FrozenSet[str]) -> bool:
    """PyTorch's own CPU probe `torch.cpu.<probe_name>` where it exists, else the kernel's CPU flags."""
    if not torch.backends.mkldnn.is_available():
        return False
    probe = getattr(torch.cpu, probe_name, None)
    if probe is not None:
        try:
            return bool(probe())
        except Exception:  # a private probe that changed: fall back to the flags
            pass
    return bool(_cpu_flags() & flags)


def _cpu_flags() -> FrozenSet[str]:
    """The CPU feature flags Linux reports (empty elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            for line in info:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def autocast_dtype(device: torch.device, amp: bool = True) -> Optional[torch.dtype]:
    """The reduced precision `amp=True` computes in on `device`, or None for full fp32.

    CUDA: bf16 where the GPU supports it, else fp16. CPU: bf16 where `cpu_prefers_bf16()`, else
    None. Other devices (mps): None.
    """
    if not amp:
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_prefers_bf16():
        return torch.bfloat16
    return None


def precision_label(device: torch.device, amp: bool = True) -> str:
    """What `amp` computes in on `device`, for progress messages ("bf16 autocast" or "fp32")."""
    dtype = autocast_dtype(device, amp)
    return "fp32" if dtype is None else f"{str(dtype).replace('torch.', '').replace('bfloat16', 'bf16').replace('float16', 'fp16')} autocast"


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
        "cpu_bf16": cpu_has_fast_bf16(),  # the instructions; amp uses bf16 only with AMX (cpu_prefers_bf16)
    }
    if torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info
