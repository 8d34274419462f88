"""Volume inference: `denoise_volume` against a bare loop of the network's forward, same slices, same run;
on the CPU its precision/kernel candidates on real CT, and the end-to-end paths.

    python Testing/benchmarks/bench_inference.py [--device cpu|cuda] [--shape 16 512 512]
        [--slab-sizes 1 4 auto] [--memory-shape 200 512 512] [--no-amp] [--threads 2]
        [--candidates [--onnx] [--compile]] [--end-to-end] [--ct-slices 4] [--ct-size 512]

`--candidates` (CPU): the default model on slices of the bundled real CT (Cranium sample, resampled to
--ct-size): `denoise_volume` with its defaults, fp32 channels-last, bf16 autocast (NCHW and channels-last),
optionally ONNX Runtime and torch.compile, each as a ratio to the fp32 eager path (`amp=False`) measured
in the same run, with its quality: the largest per-slice PSNR change against the normal-dose reference
(tolerance 0.05 dB) and the mean/max absolute difference to fp32 in HU (tolerance 0.5 HU mean); then a
2048^2 matmul's fp32 and bf16 GFLOP/s and the fraction of it the defaults reach.
`--end-to-end` (CPU): a fresh `tscdenoise denoise` process, the Slicer worker (`DenoiseProcess`) and the
Slicer worker handed to a ready standby (`StandbyWorker`, started untimed before each call, as the panel
starts it ahead of the run) vs in-process fp32, each worker's time to its first "start" event, and a fresh
process's fixed costs (imports, model load, first-slice warm-up).

For each slab size it prints slices/s of the pipeline (int16 HU in -> int16 HU out: validation,
normalisation, copies, dtype conversion included) and of the bare forward over pre-normalised float
tensors, and their ratio (goal <= 1.10). It then measures, in a fresh process, the peak host memory
the pipeline adds on a large int16 volume, as a multiple of the volume's size (goal <= 3), and on
CUDA the peak GPU memory per slab size. The network is the default TSCNet (untrained weights time
the same as trained ones).
"""

from __future__ import annotations

import argparse
import copy
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
import torch
from torch import nn

from bench_utils import PeakRSS, interleaved_medians, interleaved_minima
from TSCDenoiseLib.core.device import autocast_dtype, describe_device, resolve_device
from TSCDenoiseLib.core.inference import _model_on, _use_channels_last, denoise_volume, resolve_slab_size
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
    amp_dtype = autocast_dtype(device, args.amp)
    channels_last = _use_channels_last(device, args.amp)  # the bare loop gets the pipeline's layout
    bare_model = _model_on(model, device, channels_last)
    normalised = HUWindow().normalize(torch.from_numpy(volume).float()).unsqueeze(1).to(device)
    if channels_last:
        normalised = normalised.contiguous(memory_format=torch.channels_last)
    best_bare = 0.0
    print(f"\nTiming on {describe_device(device)}, volume {tuple(volume.shape)} int16, amp={amp_dtype}")
    print(f"{'slab':>6s} {'pipeline sl/s':>14s} {'bare sl/s':>10s} {'ratio':>7s} {'peak GPU MiB':>13s}")
    for requested in args.slab_sizes:
        slab = resolve_slab_size(requested, volume.shape, device, model, args.amp)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        medians = interleaved_medians(
            {
                "pipeline": lambda: denoise_volume(volume, model, slab_size=slab, device=device, amp=args.amp),
                "bare": lambda: bare_forward_loop(bare_model, normalised, slab, amp_dtype),
            },
            args.repeats,
            device,
        )
        gpu = f"{torch.cuda.max_memory_allocated(device) / 2**20:13.0f}" if device.type == "cuda" else f"{'-':>13s}"
        z = volume.shape[0]
        best_bare = max(best_bare, z / medians["bare"])
        print(f"{str(requested) + ('=' + str(slab) if requested == 'auto' else ''):>6s} {z / medians['pipeline']:14.2f} "
              f"{z / medians['bare']:10.2f} {medians['pipeline'] / medians['bare']:7.3f} {gpu}")
    if device.type == "cuda":  # the fraction of the GPU's measured bf16 matmul rate the bare forward reaches
        ceiling = matmul_throughput(device, args.repeats, size=8192)
        flops = model_flops_per_slice(copy.deepcopy(model).cpu(), volume.shape[-1])
        print(f"matmul 8192^2 on the GPU: fp32 {ceiling['float32']:.0f}, bf16 {ceiling['bfloat16']:.0f} GFLOP/s; "
              f"{flops / 1e9:.1f} GFLOP per slice: {ceiling['bfloat16'] * 1e9 / flops:.0f} slices/s at that rate; "
              f"the best bare forward reaches {best_bare * flops / 1e9 / ceiling['bfloat16']:.0%} of it")


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
    for slices in args.memory_slices or [args.memory_shape[0]]:
        shape = [slices] + list(args.memory_shape[1:])
        process = context.Process(target=_memory_probe, args=(shape, str(device), args.amp, queue))
        process.start()
        increase, volume_bytes, slab = queue.get()
        process.join()
        _print_memory(shape, increase, volume_bytes, slab)


def _print_memory(shape, increase: int, volume_bytes: int, slab: int) -> None:
    print(f"\nHost memory, volume {tuple(shape)} int16 ({volume_bytes / 2**20:.0f} MiB), slab auto={slab}: "
          f"peak increase {increase / 2**20:.0f} MiB = {increase / volume_bytes:.2f}x the volume "
          f"(output array 1.00x + working set)")


# ---------------------------------------------------------------------------------------------------
# CPU precision and kernels on real CT: denoise_volume's defaults and each candidate vs the fp32 eager path


def real_ct_slices(count: int, size: int):
    """(low-dose, normal-dose) int16 HU slices of the bundled Cranium sample, resampled to size x size."""
    import SimpleITK as sitk

    from TSCDenoiseLib.core.resources import sample_path

    pairs = []
    for name in ("ldct_test.nii.gz", "ndct_test.nii.gz"):
        array = sitk.GetArrayFromImage(sitk.ReadImage(str(sample_path(name)))).astype(np.float32)
        middle = array.shape[0] // 2
        chosen = torch.from_numpy(array[max(0, middle - count // 2):][:count])[:, None]
        if chosen.shape[-1] != size or chosen.shape[-2] != size:
            chosen = torch.nn.functional.interpolate(chosen, size=(size, size), mode="bilinear", align_corners=False)
        pairs.append(chosen[:, 0].round().numpy().astype(np.int16))
    return pairs[0], pairs[1]


def _slab_candidate(model, volume, autocast, channels_last: bool, slab: int = 1):
    """A candidate path through the same normalisation/residual code as denoise_volume."""
    from functools import partial

    from TSCDenoiseLib.core.inference import _denoise_slab, _model_on

    runner = _model_on(model, torch.device("cpu"), channels_last)
    step = partial(_denoise_slab, model=runner, window=HUWindow.from_any(model.hu_window), autocast_dtype=autocast,
                   out_dtype=torch.float32, channels_last=channels_last)

    def run():
        out = np.empty(volume.shape, np.float32)
        for start in range(0, volume.shape[0], slab):
            out[start:start + slab] = step(torch.from_numpy(volume[start:start + slab])).numpy()
        return out
    return run


def _compiled_candidate(model, volume, autocast):
    """torch.compile (inductor, weights frozen and pre-packed for oneDNN) of the same slab function."""
    import torch._inductor.config as inductor_config

    inductor_config.freezing = True
    runner = copy.deepcopy(model).eval()
    compiled = torch.compile(runner, dynamic=False)
    window = HUWindow.from_any(model.hu_window)

    def run():
        out = np.empty(volume.shape, np.float32)
        with torch.inference_mode():
            for index in range(volume.shape[0]):
                hu = torch.from_numpy(volume[index:index + 1]).float()
                clipped = hu.clamp(window.low, window.high)
                with torch.autocast("cpu", dtype=autocast, enabled=autocast is not None):
                    y = compiled(window.normalize(clipped, clip=False).unsqueeze(1))
                out[index] = (window.denormalize(y.float()[:, 0]) + (hu - clipped)).numpy()
        return out
    return run


def _onnx_candidate(model, volume, folder: str, threads: int):
    """ONNX Runtime (CPU execution provider) on the exported graph, fp32."""
    import onnxruntime as ort

    from TSCDenoiseLib.core.export import export_model

    path = export_model(model, Path(folder) / "model.onnx", format="onnx", example_shape=(2, 1, 64, 64))
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    window = HUWindow.from_any(model.hu_window)

    def run():
        out = np.empty(volume.shape, np.float32)
        for index in range(volume.shape[0]):
            hu = volume[index:index + 1].astype(np.float32)
            clipped = np.clip(hu, window.low, window.high)
            y = session.run(None, {"slices": window.normalize(clipped, clip=False)[:, None]})[0]
            out[index] = window.denormalize(y[:, 0]) + (hu - clipped)
        return out
    return run


def matmul_throughput(device: torch.device, repeats: int, size: int = 2048) -> Dict[str, float]:
    """GFLOP/s of a size^2 matmul in fp32 and bf16 on `device` (interleaved, minimum): the hardware ceiling."""
    a = {dtype: torch.randn(size, size, device=device).to(dtype) for dtype in (torch.float32, torch.bfloat16)}
    with torch.inference_mode():
        times = interleaved_minima({str(d).split(".")[-1]: (lambda d=d: a[d] @ a[d]) for d in a}, repeats, device)
    return {name: 2 * size**3 / seconds / 1e9 for name, seconds in times.items()}


def model_flops_per_slice(model: nn.Module, size: int) -> float:
    """Forward FLOPs of one size x size slice (multiply-add = 2; grid_sample not counted), as bench_model_cost.py."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model(torch.zeros(1, 1, size, size))
    return float(counter.get_total_flops())


def compare_candidates(args) -> None:
    """Each CPU candidate's time (ratio to fp32 eager) and quality against fp32 and the normal-dose reference."""
    from TSCDenoiseLib.core.checkpoint import load_model
    from TSCDenoiseLib.core.device import autocast_dtype
    from TSCDenoiseLib.core.metrics import psnr

    device = torch.device("cpu")
    model = load_model(device=device)
    low, normal = real_ct_slices(args.ct_slices, args.ct_size)
    bf16 = torch.bfloat16
    candidates = {
        "fp32 eager (amp=False)": lambda: denoise_volume(low, model, device=device, amp=False).astype(np.float32),
        "defaults (denoise_volume)": lambda: denoise_volume(low, model, device=device).astype(np.float32),
        "fp32 channels-last": _slab_candidate(model, low, None, True),
        "bf16 autocast NCHW": _slab_candidate(model, low, bf16, False),
        "bf16 autocast channels-last": _slab_candidate(model, low, bf16, True),
    }
    # the defaults, unrounded (the int16 output rounds to 1 HU): the quality figures of its arithmetic alone
    reduced = autocast_dtype(device, True)
    exact = {"fp32 eager (amp=False)": _slab_candidate(model, low, None, False),
             "defaults (denoise_volume)": _slab_candidate(model, low, reduced, True)}
    folder = tempfile.mkdtemp(prefix="bench_inference_")
    if args.onnx:
        started = time.perf_counter()
        candidates["ONNX Runtime fp32"] = _onnx_candidate(model, low, folder, torch.get_num_threads())
        print(f"ONNX export + session: {time.perf_counter() - started:.1f} s (one-off)")
    if args.compile:
        for name, dtype in (("torch.compile fp32", None), ("torch.compile bf16", bf16)):
            started = time.perf_counter()
            candidates[name] = _compiled_candidate(model, low, dtype)
            candidates[name]()
            print(f"{name}: compile + first pass {time.perf_counter() - started:.1f} s (one-off, per shape)")
    outputs = {name: (exact.get(name) or fn)() for name, fn in candidates.items()}
    minima = interleaved_minima(candidates, args.repeats, device)
    ceiling = matmul_throughput(device, args.repeats)
    flops = model_flops_per_slice(model, args.ct_size)

    reference = outputs["fp32 eager (amp=False)"]
    base_psnr = np.array([psnr(s, n) for s, n in zip(reference, normal)])
    z = low.shape[0]
    print(f"\nReal CT: {z} slices of the Cranium sample test volume resampled to {args.ct_size}^2, default model, "
          f"{torch.get_num_threads()} threads, {args.repeats} interleaved repeats (minimum). "
          f"denoise_volume's defaults here: autocast={reduced}.")
    print(f"{'candidate':30s} {'s/slice':>8s} {'x fp32':>7s} {'GFLOP/s':>8s} {'dPSNR max':>10s} "
          f"{'mean|d| HU':>11s} {'max|d| HU':>10s}")
    for name in candidates:
        out = outputs[name]
        delta = np.array([psnr(s, n) for s, n in zip(out, normal)]) - base_psnr
        diff = np.abs(out.astype(np.float64) - reference)
        seconds = minima[name] / z
        print(f"{name:30s} {seconds:8.3f} {minima['fp32 eager (amp=False)'] / minima[name]:7.2f} "
              f"{flops / seconds / 1e9:8.1f} {np.abs(delta).max():10.4f} {diff.mean():11.3f} {diff.max():10.2f}")
    print(f"PSNR of fp32 vs normal dose (soft-tissue window): {base_psnr.mean():.2f} dB mean; "
          f"low-dose input {np.mean([psnr(s, n) for s, n in zip(low, normal)]):.2f} dB")
    print(f"matmul 2048^2: fp32 {ceiling['float32']:.0f} GFLOP/s, bf16 {ceiling['bfloat16']:.0f} GFLOP/s; model "
          f"{flops / 1e9:.1f} GFLOP/slice; defaults reach "
          f"{flops / (minima['defaults (denoise_volume)'] / z) / 1e9 / ceiling['bfloat16']:.0%} of the bf16 matmul "
          f"rate, fp32 eager {flops / (minima['fp32 eager (amp=False)'] / z) / 1e9 / ceiling['float32']:.0%} of fp32's")


# ---------------------------------------------------------------------------------------------------
# End to end: `tscdenoise denoise` in a fresh process and the Slicer panel's worker, vs in-process fp32

_FIXED_COST_PROBE = r"""
import json, sys, time
t0 = time.perf_counter()
import torch
t1 = time.perf_counter()
torch.set_num_threads(int(sys.argv[2]))
import TSCDenoiseLib.cli, TSCDenoiseLib.mrml.worker
t2 = time.perf_counter()
from TSCDenoiseLib.core.checkpoint import load_model
from TSCDenoiseLib.core.inference import denoise_volume
import numpy as np
model = load_model(device="cpu")
t3 = time.perf_counter()
volume = np.load(sys.argv[1])[:1]
denoise_volume(volume, model, device="cpu")
t4 = time.perf_counter()
denoise_volume(volume, model, device="cpu")
t5 = time.perf_counter()
print(json.dumps({"import torch": t1 - t0, "import TSCDenoiseLib.cli + mrml.worker": t2 - t1,
                  "load_model (default)": t3 - t2, "first slice": t4 - t3, "second slice": t5 - t4,
                  "torchvision imported": "torchvision" in sys.modules}))
"""


def end_to_end(args) -> None:
    """Wall time of a fresh `tscdenoise denoise` and of the Slicer worker path, and their fixed costs."""
    from TSCDenoiseLib.core.checkpoint import load_model
    from TSCDenoiseLib.core.resources import default_model_path
    from TSCDenoiseLib.io import VolumeGeometry, write_ct
    from TSCDenoiseLib.mrml.background import DenoiseProcess, StandbyWorker, start_denoise_process

    device = torch.device("cpu")
    model = load_model(device=device)
    low, _ = real_ct_slices(args.ct_slices, args.ct_size)
    threads = str(torch.get_num_threads())
    env = dict(os.environ, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    with tempfile.TemporaryDirectory() as folder:
        source = write_ct(low, VolumeGeometry(spacing=(0.7, 0.7, 1.0)), Path(folder) / "ct.nii.gz")
        array_path = Path(folder) / "ct.npy"
        np.save(array_path, low)
        command = [sys.executable, "-m", "TSCDenoiseLib", "denoise", str(source), str(Path(folder) / "out.nii.gz"),
                   "--device", "cpu", "--json", "--overwrite"]

        def cli() -> None:
            done = subprocess.run(command, check=True, capture_output=True, text=True, env=env)
            cli.last = json.loads(done.stdout)

        # seconds from the call to the worker's "start" event (model loaded) and to its first "progress" (a slice done)
        to_start: Dict[str, List[float]] = {"fresh": [], "standby": []}
        to_first: Dict[str, List[float]] = {"fresh": [], "standby": []}

        def follow(process, kind: str, started: float) -> None:
            seen = set()
            while process.running:
                for event in process.poll():
                    if event["event"] in ("start", "progress") and event["event"] not in seen:
                        seen.add(event["event"])
                        (to_start if event["event"] == "start" else to_first)[kind].append(time.perf_counter() - started)
                time.sleep(0.02)
            process.result()
            process.cleanup()

        def worker() -> None:
            started = time.perf_counter()
            follow(DenoiseProcess(low, default_model_path(), device="cpu", work_dir=folder).start(), "fresh", started)

        standbys: List[StandbyWorker] = []

        def prepare_standby() -> None:  # untimed: the panel starts it when the module is entered / after a run
            standby = StandbyWorker(work_dir=folder).start()
            while standby.ready is None:
                if not standby.running:
                    raise RuntimeError("the standby worker did not start: " + " | ".join(standby.stderr_tail))
                time.sleep(0.02)
            standbys.append(standby)

        def standby_worker() -> None:
            started = time.perf_counter()
            standby = standbys.pop()
            process = start_denoise_process(low, standby=standby, model_path=default_model_path(), device="cpu",
                                            work_dir=folder)
            if process is not standby:
                raise RuntimeError("the ready standby worker did not take the job")
            follow(process, "standby", started)

        standby_row = "Slicer worker, standby (StandbyWorker)"
        minima = interleaved_minima(
            {"in-process fp32 (amp=False)": lambda: denoise_volume(low, model, device=device, amp=False),
             "in-process defaults": lambda: denoise_volume(low, model, device=device),
             "tscdenoise denoise (fresh process)": cli,
             "Slicer worker (DenoiseProcess)": worker,
             standby_row: standby_worker},
            args.repeats, device, setups={standby_row: prepare_standby})
        probes = [json.loads(subprocess.run([sys.executable, "-c", _FIXED_COST_PROBE, str(array_path), threads],
                                            check=True, capture_output=True, text=True, env=env).stdout)
                  for _ in range(args.repeats)]
    base = minima["in-process fp32 (amp=False)"]
    print(f"\nEnd to end: {low.shape[0]} x {args.ct_size}^2 real CT slices, CPU, {threads} threads, "
          f"{args.repeats} interleaved repeats (minimum)")
    defaults = minima["in-process defaults"]  # the workers' own settings (amp=True)
    for name, seconds in minima.items():
        print(f"  {name:38s} {seconds:7.2f} s  {base / seconds:5.2f}x in-process fp32  "
              f"{defaults / seconds:5.2f}x in-process defaults")
    fresh_row = "Slicer worker (DenoiseProcess)"
    print(f"  standby vs fresh worker: {minima[fresh_row] / minima[standby_row]:.2f}x faster end to end")
    print("  from the call to the worker's 'start' event / first 'progress' event (minimum): " + ", ".join(
        f"{label} {min(to_start[kind]):.2f} / {min(to_first[kind]):.2f} s"
        for kind, label in (("fresh", "fresh worker"), ("standby", "standby"))))
    print(f"  tscdenoise's own split (last run): read {cli.last['read_s']:.2f} s, denoise {cli.last['denoise_s']:.2f} s, "
          f"write {cli.last['write_s']:.2f} s")
    print("  fixed costs of a fresh process (minimum of the probes):")
    for key in probes[0]:
        if key == "torchvision imported":
            print(f"    torchvision imported on the CPU path: {probes[0][key]}")
        else:
            print(f"    {key:40s} {min(p[key] for p in probes):6.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--shape", type=int, nargs=3, metavar=("Z", "Y", "X"),
                        help="timing volume (default 16 512 512 on the CPU, 256 512 512 on CUDA)")
    parser.add_argument("--slab-sizes", nargs="+", help="default: 1 4 auto on the CPU, 1 2 4 ... 64 auto on CUDA")
    parser.add_argument("--memory-shape", type=int, nargs=3, default=[200, 512, 512], metavar=("Z", "Y", "X"))
    parser.add_argument("--memory-slices", type=int, nargs="+", help="several volume depths (e.g. 200 500)")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-amp", dest="amp", action="store_false")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (torch.set_num_threads)")
    parser.add_argument("--skip-slabs", action="store_true", help="skip the slab-size table")
    parser.add_argument("--candidates", action="store_true", help="CPU precision/kernel candidates on real CT")
    parser.add_argument("--onnx", action="store_true", help="with --candidates: ONNX Runtime too")
    parser.add_argument("--compile", action="store_true", help="with --candidates: torch.compile too (minutes)")
    parser.add_argument("--end-to-end", action="store_true", help="CLI and Slicer worker vs in-process (CPU)")
    parser.add_argument("--ct-slices", type=int, default=4)
    parser.add_argument("--ct-size", type=int, default=512)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # for the spawned and worker processes
    device = resolve_device(args.device)
    default_slabs = ["1", "2", "4", "8", "16", "32", "64", "auto"] if device.type == "cuda" else ["1", "4", "auto"]
    args.slab_sizes = [s if s == "auto" else int(s) for s in (args.slab_sizes or default_slabs)]
    args.shape = args.shape or ([256, 512, 512] if device.type == "cuda" else [16, 512, 512])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    if not args.skip_slabs:
        time_slab_sizes(args, device)
    if args.candidates:
        compare_candidates(args)
    if args.end_to_end:
        end_to_end(args)
    if not args.skip_memory:
        measure_host_memory(args, device)


if __name__ == "__main__":
    main()
