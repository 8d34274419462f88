"""MRML glue cost: `denoise_volume_node` against the engine's `denoise_volume`, same volume, same run.

    python Testing/benchmarks/bench_mrml.py [--device cpu|cuda] [--shape 16 512 512]
        [--memory-shape 200 512 512] [--no-amp] [--skip-memory] [--skip-background]

Needs slicer-core (Slicer's MRML libraries, headless). Prints:
- slices/s of the engine on the node's voxels vs of `denoise_volume_node` (new output node included)
  and their ratio (goal <= 1.05);
- the panel's path: the same volume denoised in a separate worker process (`DenoiseProcess`, as the
  Slicer module runs it), total wall time (process start, torch import, model load, file transfer)
  and the slices/s the panel shows when done;
- in fresh processes, the peak host memory `denoise_volume_node` and `denoise_volume` add on a large
  int16 volume, as a multiple of the volume's size (goal <= 4).
The network is the default TSCNet (untrained weights time the same as trained ones).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import tempfile
import time
from pathlib import Path
from typing import List

import slicer
import torch
from slicer.util import arrayFromVolume, updateVolumeFromArray

from bench_inference import make_model, synthetic_ct
from bench_utils import PeakRSS, interleaved_medians
from TSCDenoiseLib.mrml.background import DenoiseProcess
from TSCDenoiseLib.core.checkpoint import save_model
from TSCDenoiseLib.core.device import describe_device, resolve_device
from TSCDenoiseLib.core.inference import denoise_volume
from TSCDenoiseLib.mrml.nodes import denoise_volume_node


def volume_node(scene, shape):
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "bench CT")
    updateVolumeFromArray(node, synthetic_ct(shape))
    node.SetSpacing(0.7, 0.7, 1.0)
    return node


def time_glue(args, device: torch.device) -> None:
    scene = slicer.vtkMRMLScene()
    node = volume_node(scene, args.shape)
    model = make_model(device)

    def through_mrml():
        output = denoise_volume_node(node, model=model, device=device, amp=args.amp)
        scene.RemoveNode(output.GetDisplayNode())
        scene.RemoveNode(output)

    medians = interleaved_medians(
        {"engine": lambda: denoise_volume(arrayFromVolume(node), model, device=device, amp=args.amp),
         "mrml": through_mrml},
        args.repeats, device)
    z = args.shape[0]
    print(f"\nGlue on {describe_device(device)}, volume {tuple(args.shape)} int16, amp={args.amp}, "
          f"{args.repeats} interleaved repeats (median)")
    print(f"  denoise_volume(arrayFromVolume(node))  {z / medians['engine']:7.2f} slices/s")
    print(f"  denoise_volume_node(node)              {z / medians['mrml']:7.2f} slices/s")
    print(f"  ratio mrml / engine                    {medians['mrml'] / medians['engine']:7.3f}  (goal <= 1.05)")
    if not args.skip_background:
        time_background(args, device, arrayFromVolume(node), model, medians["engine"])


def time_background(args, device, voxels, model, engine_seconds: float) -> None:
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = save_model(model, Path(folder) / "bench.pt")
        started = time.perf_counter()
        process = DenoiseProcess(voxels, checkpoint, device=str(device), amp=args.amp, work_dir=folder).start()
        events = []
        while process.running:
            events += process.poll()
            time.sleep(0.02)
        process.result()
        total = time.perf_counter() - started
        process.cleanup()
        events += process.poll()
    done = next(e for e in events if e["event"] == "done")
    print(f"  panel path (worker process)            {total:7.2f} s wall in all, "
          f"{done['slices_per_second']:.2f} slices/s shown when done; "
          f"start-up + transfer {total - done['seconds']:.2f} s vs in-process engine {engine_seconds:.2f} s")


def _memory_probe(shape: List[int], device_name: str, amp: bool, through_mrml: bool, queue) -> None:
    device = torch.device(device_name)
    model = make_model(device)
    scene = slicer.vtkMRMLScene()
    node = volume_node(scene, shape)
    denoise_volume(arrayFromVolume(node)[:1], model, device=device, amp=amp)  # kernels and allocator pools first
    with PeakRSS() as peak:
        if through_mrml:
            denoise_volume_node(node, model=model, device=device, amp=amp)
        else:
            denoise_volume(arrayFromVolume(node), model, device=device, amp=amp)
    queue.put((peak.peak_increase, arrayFromVolume(node).nbytes))


def measure_host_memory(args, device: torch.device) -> None:
    context = mp.get_context("spawn")
    print(f"\nHost memory, volume {tuple(args.memory_shape)} int16 in a vtkMRMLScalarVolumeNode (fresh process each)")
    for label, through_mrml in (("denoise_volume_node", True), ("denoise_volume", False)):
        queue = context.Queue()
        process = context.Process(target=_memory_probe, args=(args.memory_shape, str(device), args.amp, through_mrml, queue))
        process.start()
        increase, volume_bytes = queue.get()
        process.join()
        print(f"  {label:20s} peak increase {increase / 2**20:6.0f} MiB = {increase / volume_bytes:.2f}x the volume "
              f"({volume_bytes / 2**20:.0f} MiB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--shape", type=int, nargs=3, default=[16, 512, 512], metavar=("Z", "Y", "X"))
    parser.add_argument("--memory-shape", type=int, nargs=3, default=[200, 512, 512], metavar=("Z", "Y", "X"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-amp", dest="amp", action="store_false")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-background", action="store_true")
    args = parser.parse_args()
    device = resolve_device(args.device)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    time_glue(args, device)
    if not args.skip_memory:
        measure_host_memory(args, device)


if __name__ == "__main__":
    main()
