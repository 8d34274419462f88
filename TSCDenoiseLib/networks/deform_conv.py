"""Modulated deformable convolution (DCNv2) with two interchangeable backends.

- ``"torchvision"``: ``torchvision.ops.deform_conv2d`` (compiled CPU and CUDA kernels).
- ``"torch"``: a pure-PyTorch version built on bilinear ``grid_sample`` + ``einsum``; it runs wherever
  PyTorch runs, exports with ``torch.export``/ONNX, and on CPU it is faster than torchvision's kernel
  (see ``Testing/benchmarks/bench_deform_conv.py``).

``"auto"`` picks per device: torchvision's kernel on CUDA when it is installed, the pure-PyTorch
version otherwise. Offsets follow torchvision's layout: channel ``2*(g*K + k)`` is the y offset and
``2*(g*K + k) + 1`` the x offset of kernel tap ``k`` in offset group ``g``; the mask has ``G*K`` channels.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

BACKENDS = ("auto", "torch", "torchvision")
IntPair = Union[int, Tuple[int, int]]


@lru_cache(maxsize=1)
def torchvision_deform_conv2d():
    """torchvision's deform_conv2d, or None when torchvision is missing or broken."""
    try:
        from torchvision.ops import deform_conv2d
    except Exception:  # a torchvision built for another torch fails with RuntimeError, not ImportError
        return None
    return deform_conv2d


def resolve_backend(backend: str, device: torch.device) -> str:
    """The concrete backend ("torch" or "torchvision") to use for `backend` on `device`."""
    if backend not in BACKENDS:
        raise ValueError(f"Unknown deformable-convolution backend {backend!r}; choose one of {BACKENDS}.")
    if backend == "torch" or (backend == "auto" and device.type != "cuda"):
        return "torch"  # decided without importing torchvision (seconds at start-up, unused on the CPU)
    available = torchvision_deform_conv2d() is not None
    if backend == "torchvision":
        if not available:
            from ..lazy import missing_dependency

            raise missing_dependency("torchvision", "fast", "The torchvision deformable-convolution backend "
                                         "(backend='torch' needs no torchvision)")
        return "torchvision"
    if backend == "auto" and available and device.type == "cuda":
        return "torchvision"
    return "torch"


def _pair(value: IntPair) -> Tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


# Bytes of sampled columns (all taps of the samples in one chunk) held at once by the pure-PyTorch path:
# one grid_sample and one GEMM per chunk instead of one per tap (bench_deform_conv.py), without letting the
# K-fold (9x) column buffer grow with the batch.
COLUMN_BUDGET_BYTES = 128 << 20


def deform_conv2d_torch(
    x: torch.Tensor,
    offset: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    stride: IntPair = 1,
    padding: IntPair = 0,
    dilation: IntPair = 1,
    mask: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Pure-PyTorch modulated deformable convolution with torchvision's semantics (groups=1).

    The sampling positions are computed in float32 (or float64) whatever `x`'s dtype: bf16/fp16 cannot
    hold pixel coordinates (at 128 px their step is 0.5-1 px). Under bf16 autocast the bilinear
    sampling runs in float32 and only the GEMM in bf16, as torchvision's kernel would with fp32 input.
    """
    n, c, h, w = x.shape
    out_channels, c_w, kh, kw = weight.shape
    if c_w != c:
        raise ValueError(f"weight expects {c_w} input channels, got {c} (grouped convolution is not supported)")
    sh, sw = _pair(stride)
    ph, pw = _pair(padding)
    dh, dw = _pair(dilation)
    taps = kh * kw
    groups = offset.shape[1] // (2 * taps)
    out_h, out_w = offset.shape[-2:]
    position_dtype = torch.promote_types(x.dtype, torch.float32)
    device = x.device

    # Sampling positions in input pixel coordinates, shape (N, G, K, Ho, Wo) for y and x.
    base_y = (torch.arange(out_h, device=device, dtype=position_dtype) * sh - ph).view(1, 1, 1, out_h, 1)
    base_x = (torch.arange(out_w, device=device, dtype=position_dtype) * sw - pw).view(1, 1, 1, 1, out_w)
    tap_y = (torch.arange(kh, device=device, dtype=position_dtype) * dh).repeat_interleave(kw).view(1, 1, taps, 1, 1)
    tap_x = (torch.arange(kw, device=device, dtype=position_dtype) * dw).repeat(kh).view(1, 1, taps, 1, 1)
    offset = offset.to(position_dtype).reshape(n, groups, taps, 2, out_h, out_w)
    # grid_sample with align_corners=False maps pixel p to (2p + 1) / size - 1; zero padding outside the
    # image reproduces torchvision's bilinear interpolation, which treats out-of-range neighbours as 0.
    grid_x = (base_x + tap_x + offset[:, :, :, 1]) * (2.0 / w) + (1.0 / w - 1.0)
    grid_y = (base_y + tap_y + offset[:, :, :, 0]) * (2.0 / h) + (1.0 / h - 1.0)
    grid = torch.stack((grid_x, grid_y), dim=-1)  # (N, G, K, Ho, Wo, 2)
    source = x.to(position_dtype).reshape(n * groups, c // groups, h, w)
    if mask is not None:
        mask = mask.reshape(n, groups, 1, taps, out_h * out_w)
    weight_taps = weight.reshape(out_channels, c, taps)

    def columns_times_weight(first: int, last: Optional[int], k0: int, k1: int) -> torch.Tensor:
        count, k = (n if last is None else last - first), k1 - k0
        # All taps of a chunk in one call: (count*G, C/G, K*Ho, Wo) = columns in (c, k) order.
        chunk_source = source if last is None else source[first * groups : last * groups]
        chunk_grid = grid if last is None else grid[first:last]
        sampled = F.grid_sample(
            chunk_source, chunk_grid[:, :, k0:k1].reshape(count * groups, k * out_h, out_w, 2),
            mode="bilinear", padding_mode="zeros", align_corners=False,
        ).view(count, groups, c // groups, k, out_h * out_w)
        if mask is not None:
            chunk_mask = (mask if last is None else mask[first:last])[:, :, :, k0:k1].to(sampled.dtype)
            sampled = sampled * chunk_mask if sampled.requires_grad else sampled.mul_(chunk_mask)  # no new 9x buffer
        columns = sampled.reshape(count, c * k, out_h * out_w).to(x.dtype)
        return torch.matmul(weight_taps[:, :, k0:k1].reshape(out_channels, c * k), columns)

    if _tracing():  # one chunk, no Python branching on sizes: the batch and image size stay symbolic
        result = columns_times_weight(0, None, 0, taps)
    else:
        tap_bytes = c * out_h * out_w * torch.finfo(position_dtype).bits // 8
        result = _assemble([(first, columns_times_weight(first, last, k0, k1))
                            for first, last, k0, k1 in _chunks(n, taps, tap_bytes)])
    if bias is not None:
        result = result + bias.view(1, -1, 1)
    return result.view(n, out_channels, out_h, out_w)


def _tracing() -> bool:
    """True inside torch.jit.trace, torch.compile or torch.export."""
    exporting = getattr(torch.compiler, "is_exporting", None)
    return torch.jit.is_tracing() or torch.compiler.is_compiling() or bool(exporting and exporting())


def _chunks(samples: int, taps: int, tap_bytes: int):
    """(first, last, k0, k1) ranges whose sampled columns stay within COLUMN_BUDGET_BYTES where possible."""
    per_sample = tap_bytes * taps
    if per_sample <= COLUMN_BUDGET_BYTES:
        step = max(1, COLUMN_BUDGET_BYTES // per_sample)
        return [(i, min(i + step, samples), 0, taps) for i in range(0, samples, step)]
    tap_step = max(1, COLUMN_BUDGET_BYTES // max(tap_bytes, 1))
    return [(i, i + 1, k, min(k + tap_step, taps)) for i in range(samples) for k in range(0, taps, tap_step)]


def _assemble(parts) -> torch.Tensor:
    """Stack per-chunk GEMM results (first sample, result) over samples, summing the tap chunks of a sample."""
    if len(parts) == 1:
        return parts[0][1]
    by_sample = {}
    for first, part in parts:
        by_sample[first] = part if first not in by_sample else by_sample[first] + part
    return torch.cat([by_sample[first] for first in sorted(by_sample)], dim=0)


def deform_conv2d(
    x: torch.Tensor,
    offset: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    stride: IntPair = 1,
    padding: IntPair = 0,
    dilation: IntPair = 1,
    mask: Optional[torch.Tensor] = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Modulated deformable convolution, dispatched to the backend chosen for `x`'s device."""
    if resolve_backend(backend, x.device) == "torchvision":
        kernel = torchvision_deform_conv2d()
        return kernel(x, offset, weight, bias, stride=stride, padding=padding, dilation=dilation, mask=mask)
    return deform_conv2d_torch(x, offset, weight, bias, stride, padding, dilation, mask)


class ModulatedDeformConv2d(nn.Module):
    """DCNv2 layer: a plain conv predicts per-tap offsets and sigmoid masks from the input itself.

    The offset/mask predictor starts at zero, so the layer starts as an ordinary convolution with
    masks 0.5 and learns where to look (as in Zhu et al., "Deformable ConvNets v2", 2019).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        padding: int = 1,
        dilation: int = 1,
        offset_groups: int = 1,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"Unknown deformable-convolution backend {backend!r}; choose one of {BACKENDS}.")
        if in_channels % offset_groups:
            raise ValueError(f"in_channels={in_channels} is not divisible by offset_groups={offset_groups}")
        self.padding = padding
        self.dilation = dilation
        self.backend = backend
        if backend == "torchvision" or (backend == "auto" and torch.cuda.is_available()):
            # import torchvision now where it will run: an import inside a first forward breaks jit tracing.
            # CPU-only machines never use it, and skip its import (seconds).
            torchvision_deform_conv2d()
        taps = kernel_size * kernel_size
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.offset_mask = nn.Conv2d(
            in_channels, 3 * offset_groups * taps, kernel_size, padding=padding, dilation=dilation
        )
        self._offset_channels = 2 * offset_groups * taps
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        nn.init.zeros_(self.offset_mask.weight)
        nn.init.zeros_(self.offset_mask.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        offset_mask = self.offset_mask(x)
        offset = offset_mask[:, : self._offset_channels]
        mask = torch.sigmoid(offset_mask[:, self._offset_channels :])
        return deform_conv2d(
            x, offset, self.weight, self.bias, padding=self.padding, dilation=self.dilation, mask=mask,
            backend=self.backend,
        )
