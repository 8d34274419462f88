"""Run the network over slabs of a volume: synchronously on the CPU, pipelined on CUDA.

The CUDA runner overlaps the host-side staging and host<->device copies of one slab with the
computation of the previous one: pinned double buffers, host-to-device copies on a side stream,
device-to-host copies collected one slab late.
"""

from __future__ import annotations

from typing import Callable, List, Optional, Tuple

import numpy as np
import torch

SlabFn = Callable[[torch.Tensor], torch.Tensor]  # raw HU slab on the device -> denoised, output dtype
DoneFn = Callable[[int], None]  # called with the number of slices finished, in order


def torch_dtype_of(dtype: np.dtype) -> torch.dtype:
    """The torch dtype matching a numpy dtype."""
    return torch.from_numpy(np.empty(0, dtype=dtype)).dtype


class CpuSlabRunner:
    """Denoises each slab as it is submitted."""

    def __init__(self, slices: np.ndarray, output: np.ndarray, compute: SlabFn, on_done: DoneFn) -> None:
        self.slices, self.output, self.compute, self.on_done = slices, output, compute, on_done

    def submit(self, start: int, stop: int) -> None:
        slab = self.slices[start:stop]
        if not (slab.flags.c_contiguous and slab.flags.writeable):  # torch wants writable memory to share
            slab = np.array(slab, order="C")
        result = self.compute(torch.from_numpy(slab))
        self.output[start:stop] = result.numpy()
        self.on_done(stop)

    def collect(self) -> None:
        """Nothing is ever pending on the CPU."""


class CudaSlabRunner:
    """Pipelined CUDA runner; `collect()` must be called once after the last `submit`."""

    def __init__(
        self,
        slices: np.ndarray,
        output: np.ndarray,
        compute: SlabFn,
        on_done: DoneFn,
        device: torch.device,
        max_slab: int,
    ) -> None:
        self.slices, self.output, self.compute, self.on_done, self.device = slices, output, compute, on_done, device
        shape = (max_slab,) + slices.shape[1:]
        self.staging = [torch.empty(shape, dtype=torch_dtype_of(slices.dtype), pin_memory=True) for _ in range(2)]
        self.landing = [torch.empty(shape, dtype=torch_dtype_of(output.dtype), pin_memory=True) for _ in range(2)]
        self.copied: List[Optional[torch.cuda.Event]] = [None, None]
        self.copy_stream = torch.cuda.Stream(device)
        self.pending: Optional[Tuple[int, int, int, torch.cuda.Event]] = None
        self.slot = 0

    def submit(self, start: int, stop: int) -> None:
        slot, count = self.slot, stop - start
        if self.copied[slot] is not None:
            self.copied[slot].synchronize()  # the staging buffer is free once its last upload finished
        staging = self.staging[slot][:count]
        staging.numpy()[...] = self.slices[start:stop]
        compute_stream = torch.cuda.current_stream(self.device)
        with torch.cuda.stream(self.copy_stream):
            raw = staging.to(self.device, non_blocking=True)
            copied = torch.cuda.Event()
            copied.record(self.copy_stream)
        self.copied[slot] = copied
        compute_stream.wait_event(copied)
        raw.record_stream(compute_stream)
        result = self.compute(raw)  # queued on the GPU; may raise torch.cuda.OutOfMemoryError
        self.collect()  # land the previous slab while the GPU works on this one
        landing = self.landing[slot][:count]
        landing.copy_(result, non_blocking=True)
        done = torch.cuda.Event()
        done.record(compute_stream)
        self.pending = (start, stop, slot, done)
        self.slot ^= 1

    def collect(self) -> None:
        """Wait for the slab still in flight, if any, and write it into the output."""
        if self.pending is None:
            return
        start, stop, slot, done = self.pending
        self.pending = None
        done.synchronize()
        self.output[start:stop] = self.landing[slot][: stop - start].numpy()
        self.on_done(stop)
