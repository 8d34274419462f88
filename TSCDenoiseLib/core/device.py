"""Devices: "auto" resolves to the first CUDA GPU when there is one, else the CPU; what this installation computes with."""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Dict, FrozenSet, Optional, Union

import torch

from ..errors import DeviceError
from ..networks.deform_conv import resolve_backend, torchvision_deform_conv2d
from ..version import __version__


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


# CPU flags of bf16 matrix instructions that oneDNN (PyTorch's CPU convolutions) uses: with them bf16
# convolutions run at up to twice the fp32 rate (Testing/benchmarks/bench_inference.py measures it).
BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


@lru_cache(maxsize=1)
def cpu_has_fast_bf16() -> bool:
    """True when this CPU has bf16 matrix instructions (AVX512-BF16 or AMX) that PyTorch's oneDNN kernels use.

    Elsewhere (older x86, most ARM builds) bf16 is emulated and slower than fp32, so it is not used.
    """
    if not torch.backends.mkldnn.is_available():
        return False
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    probes = [probe for probe in probes if probe is not None]
    if probes:
        try:
            return any(bool(probe()) for probe in probes)
        except Exception:  # a private probe that changed: fall back to the kernel's flags
            pass
    return bool(_cpu_flags() & BF16_CPU_FLAGS)


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


def cpu_prefers_bf16() -> bool:
    """True when this CPU has bf16 instructions and its bf16 convolutions measure faster than fp32 here.

    Having the instructions is not enough: on a loaded 2-core Xeon with AVX512-BF16 (no AMX) a bf16
    matmul measured slower than fp32 (68 vs 86 GFLOP/s) and bf16 autocast lost to fp32 channels-last
    (bench_inference.py --candidates). So it is measured once per process and thread count.
    """
    return cpu_has_fast_bf16() and _bf16_conv_speedup(torch.get_num_threads()) >= BF16_MIN_SPEEDUP


BF16_MIN_SPEEDUP = 1.25  # bf16 must win clearly on a bare conv: the casts around it cost a little


@lru_cache(maxsize=None)
def _bf16_conv_speedup(threads: int) -> float:
    """fp32 time / bf16 time of a channels-last 3x3 conv shaped like TSC-Net's bottleneck (128 channels),
    interleaved, minimum of three after a warm-up (about 0.1 s once; `threads` keys the cache)."""
    import time

    generator = torch.Generator().manual_seed(0)
    x = torch.rand(1, 128, 32, 32, generator=generator).contiguous(memory_format=torch.channels_last)
    w = torch.rand(128, 128, 3, 3, generator=generator).contiguous(memory_format=torch.channels_last)
    pairs = {torch.float32: (x, w), torch.bfloat16: (x.bfloat16(), w.bfloat16())}
    best = {dtype: float("inf") for dtype in pairs}
    with torch.inference_mode():
        for repeat in range(4):
            for dtype, (inp, weight) in pairs.items():
                started = time.perf_counter()
                torch.nn.functional.conv2d(inp, weight, padding=1)
                if repeat:  # the first round creates the kernels
                    best[dtype] = min(best[dtype], time.perf_counter() - started)
    return best[torch.float32] / best[torch.bfloat16]


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
        "cpu_bf16": cpu_has_fast_bf16(),  # the instructions; whether amp uses them is measured (cpu_prefers_bf16)
    }
    if torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info
