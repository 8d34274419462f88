"""`tscdenoise denoise` against calling `denoise_volume` directly on the same file's array, same run.

    python Testing/benchmarks/bench_cli.py [--device cpu|cuda] [--shape 16 512 512] [--repeats 3]

Writes a synthetic int16 CT to a temporary NIfTI file, then times, alternately:
- direct: `denoise_volume(array, model)` on the array already in memory (the engine alone);
- cli: `tscdenoise denoise IN OUT --json` run in this process (`TSCDenoiseLib.cli.main`), whose JSON
  splits its time into reading, denoising and writing;
and once, the same command as a fresh process (`python -m TSCDenoiseLib`), to show start-up cost
(Python, torch import, model load). Prints slices/s, the CLI's denoise time over the direct time
(goal: about 1.0) and its I/O seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_inference import synthetic_ct
from bench_utils import sync
from TSCDenoiseLib.core.checkpoint import load_model
from TSCDenoiseLib.cli import main as cli_main
from TSCDenoiseLib.core.device import describe_device, resolve_device
from TSCDenoiseLib.core.inference import denoise_volume
from TSCDenoiseLib.io import VolumeGeometry, read_ct, write_ct


def run_cli(argv) -> dict:
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):
        code = cli_main(argv)
    if code != 0:
        raise RuntimeError(f"tscdenoise {' '.join(argv)} exited with {code}")
    return json.loads(captured.getvalue())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--shape", type=int, nargs=3, default=[16, 512, 512], metavar=("Z", "Y", "X"))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = resolve_device(args.device)
    model = load_model(device=device)  # the bundled default model, as the CLI uses it
    with tempfile.TemporaryDirectory() as folder:
        source = write_ct(synthetic_ct(args.shape), VolumeGeometry(spacing=(0.7, 0.7, 1.0)), Path(folder) / "ct.nii.gz")
        volume, _ = read_ct(source)
        argv = ["denoise", str(source), str(Path(folder) / "out.nii.gz"), "--device", str(device), "--json", "--overwrite"]
        direct_times, cli_results = [], []
        for repeat in range(args.repeats + 1):  # the first round warms up
            sync(device)
            started = time.perf_counter()
            denoise_volume(volume, model, device=device)
            sync(device)
            elapsed = time.perf_counter() - started
            started = time.perf_counter()
            result = run_cli(argv)
            result["total_s"] = time.perf_counter() - started
            if repeat:
                direct_times.append(elapsed)
                cli_results.append(result)
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "TSCDenoiseLib", *argv], check=True, capture_output=True)
        fresh_process = time.perf_counter() - started

    z = args.shape[0]
    direct = statistics.median(direct_times)
    figures = {key: statistics.median(r[key] for r in cli_results) for key in ("read_s", "denoise_s", "write_s", "total_s")}
    print(f"{describe_device(device)}, volume {tuple(args.shape)} int16 NIfTI, default model, "
          f"{args.repeats} interleaved repeats (median)")
    print(f"  direct denoise_volume(array)        {direct:7.2f} s  {z / direct:6.2f} slices/s")
    print(f"  tscdenoise denoise, denoising part   {figures['denoise_s']:7.2f} s  {z / figures['denoise_s']:6.2f} slices/s"
          f"  ratio {figures['denoise_s'] / direct:.3f}")
    print(f"  tscdenoise denoise, read / write     {figures['read_s']:7.2f} s / {figures['write_s']:.2f} s")
    print(f"  tscdenoise denoise, whole command    {figures['total_s']:7.2f} s  (model load, checks, I/O included)"
          f"  ratio to direct {figures['total_s'] / direct:.3f}")
    print(f"  as a fresh process (python -m)       {fresh_process:7.2f} s  (Python start-up and torch import on top)")


if __name__ == "__main__":
    main()
