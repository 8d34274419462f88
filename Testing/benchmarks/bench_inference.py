"""Volume inference: `denoise_volume` against a bare loop of the network's forward, same slices, same run.

    python Testing/benchmarks/bench_inference.py [--device cpu|cuda] [--shape 16 512 512]
        [--slab-sizes 1 4 auto] [--memory-shape 200 512 512] [--no-amp]

For each slab size it prints slices/s of the pipeline (int16 HU in -> int16 HU out: validation,
normalisation, copies, dtype conversion included) and of the bare forward over pre-normalised float
tensors, and their ratio (goal <= 1.10). It then measures, in a fresh process, the peak host memory
the pipeline adds on a large int16 volume, as a multiple of the volume's size (goal <= 3), and on
CUDA the peak GPU memory per slab size. The network is the default TSCNet (untrained weights time
the same as trained ones).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
from typing import List, Sequence

import numpy as np
import torch

from bench_utils import PeakRSS, interleaved_medians
from TSCDenoiseLib.core.device import describe_device, resolve_device
from TSCDenoiseLib.core.inference import denoise_volume, resolve_slab_size
from TSCDenoiseLib.core.intensity import HUWindow
from TSCDenoiseLib.networks import TSCNet


def synthetic_ct(shape: Sequence[int], seed: int = 0) -> np.ndarray:
    """int16 HU volume: air, a noisy water body with a bone insert (content does not change timing)."""
    rng = np.random.default_rng(seed)
    z, y, x = shape
    yy, xx = np.ogrid[:y, :x]
    body = ((yy - y / 2) / (0.4 * y)) ** 2 + ((xx - x / 2) / (0.45 * x)) ** 2 < 1
    volume = np.where(body, 40, -1000).astype(np.int16)[None].repeat(z, axis=0)
    volume[:, y // 2 - y // 10 : y // 2, x // 3 : x // 3 + x // 10] = 900
    volume += rng.normal(0, 30, volume.shape).astype(np.int16)
    return volume


def make_model(device: torch.device) -> TSCNet:
    torch.manual_seed(0)
    return TSCNet().to(device).eval()


def bare_forward_loop(model: TSCNet, slices: torch.Tensor, slab: int, amp_dtype) -> None:
    """The baseline: the network's forward over normalised float slices already on the device."""
    with torch.inference_mode(), torch.autocast(slices.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        for start in range(0, slices.shape[0], slab):
            model(slices[start : start + slab])


def time_slab_sizes(args, device: torch.device) -> None:
    model = make_model(device)
    volume = synthetic_ct(args.shape)
    amp_dtype = (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16) if device.type == "cuda" and args.amp else None
    normalised = HUWindow().normalize(torch.from_numpy(volume).float()).unsqueeze(1).to(device)
    print(f"\nTiming on {describe_device(device)}, volume {tuple(volume.shape)} int16, amp={amp_dtype}")
    print(f"{'slab':>6s} {'pipeline sl/s':>14s} {'bare sl/s':>10s} {'ratio':>7s} {'peak GPU MiB':>13s}")
    for requested in args.slab_sizes:
        slab = resolve_slab_size(requested, volume.shape, device, model, args.amp)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        medians = interleaved_medians(
            {
                "pipeline": lambda: denoise_volume(volume, model, slab_size=slab, device=device, amp=args.amp),
                "bare": lambda: bare_forward_loop(model, normalised, slab, amp_dtype),
            },
            args.repeats,
            device,
        )
        gpu = f"{torch.cuda.max_memory_allocated(device) / 2**20:13.0f}" if device.type == "cuda" else f"{'-':>13s}"
        z = volume.shape[0]
        print(f"{str(requested) + ('=' + str(slab) if requested == 'auto' else ''):>6s} {z / medians['pipeline']:14.2f} "
              f"{z / medians['bare']:10.2f} {medians['pipeline'] / medians['bare']:7.3f} {gpu}")


def _memory_probe(shape: List[int], device_name: str, amp: bool, queue) -> None:
    device = torch.device(device_name)
    model = make_model(device)
    volume = synthetic_ct(shape)
    denoise_volume(volume[:1], model, device=device, amp=amp)  # load kernels and allocator pools first
    with PeakRSS() as peak:
        denoise_volume(volume, model, device=device, amp=amp)
    queue.put((peak.peak_increase, volume.nbytes, resolve_slab_size("auto", volume.shape, device, model, amp)))


def measure_host_memory(args, device: torch.device) -> None:
    context = mp.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_memory_probe, args=(args.memory_shape, str(device), args.amp, queue))
    process.start()
    increase, volume_bytes, slab = queue.get()
    process.join()
    print(f"\nHost memory, volume {tuple(args.memory_shape)} int16 ({volume_bytes / 2**20:.0f} MiB), slab auto={slab}: "
          f"peak increase {increase / 2**20:.0f} MiB = {increase / volume_bytes:.2f}x the volume "
          f"(output array 1.00x + working set)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--shape", type=int, nargs=3, default=[16, 512, 512], metavar=("Z", "Y", "X"))
    parser.add_argument("--slab-sizes", nargs="+", default=["1", "4", "auto"])
    parser.add_argument("--memory-shape", type=int, nargs=3, default=[200, 512, 512], metavar=("Z", "Y", "X"))
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-amp", dest="amp", action="store_false")
    args = parser.parse_args()
    args.slab_sizes = [s if s == "auto" else int(s) for s in args.slab_sizes]
    device = resolve_device(args.device)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    time_slab_sizes(args, device)
    if not args.skip_memory:
        measure_host_memory(args, device)


if __name__ == "__main__":
    main()
