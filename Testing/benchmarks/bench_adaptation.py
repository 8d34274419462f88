"""Adapting to a scan (`adapt_model`, the product's settings and a given batch) against denoising the same scan
(`denoise_volume`), in time and peak host memory, each call in a fresh process, candidates interleaved.

    python Testing/benchmarks/bench_adaptation.py [--shape 4 512 512] [--repeats 3] [--threads 2]
        [--batches 4]   # extra TrainSettings.batch values to compare with the default

The scan is a torso phantom from the training generator with 40 HU of white noise added (the time and memory
of adaptation do not depend on what the noise is). The model is the bundled default. Prints, per candidate,
the minimum wall time over the repeats and the largest peak resident-memory increase, both also as a ratio to
`denoise_volume` measured in the same run. Goal for memory: bounded like denoising's, near it and not growing
with the scan (it trains on 64^2 patches in passes of 4 and scores at most 48 held-out tiles); measured
1.11x on 4 x 512^2 and 1.00x on 16 x 512^2 (training/docs/adaptation, "Batch of the two steps").
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

REPO = Path(__file__).resolve().parents[2]

CHILD = r"""
import json, sys, time
import numpy as np, torch
sys.path.insert(0, {bench!r})
from bench_utils import PeakRSS
from TSCDenoiseLib.adaptation import TrainSettings, adapt_model
from TSCDenoiseLib.core.checkpoint import load_model
from TSCDenoiseLib.core.inference import denoise_volume
from TSCDenoiseLib.training.phantom import make_phantom

torch.set_num_threads({threads})
shape, candidate = {shape!r}, {candidate!r}
spacing = (0.8, 0.8, 2.5)
clean = make_phantom(tuple(shape), "torso", spacing, seed=9101)
scan = (clean + np.random.default_rng(0).normal(0.0, 40.0, clean.shape)).astype(np.float32)
model = load_model({model!r}, device="cpu")
with PeakRSS() as memory:
    started = time.perf_counter()
    if candidate == "denoise_volume":
        denoise_volume(scan, model, device="cpu")
        steps = None
    else:
        settings = (TrainSettings() if candidate == "adapt_model"
                    else TrainSettings(batch=int(candidate.split("=")[1])))
        _, report = adapt_model(scan, model, spacing, device="cpu", settings=settings)
        steps = report.steps
    seconds = time.perf_counter() - started
print(json.dumps({{"seconds": seconds, "peak_increase": memory.peak_increase, "steps": steps}}))
"""


def run_child(candidate: str, shape: List[int], threads: int, model: Path) -> Dict[str, float]:
    """One candidate in a fresh Python process; its JSON line."""
    code = CHILD.format(bench=str(Path(__file__).parent), threads=threads, shape=shape, candidate=candidate,
                        model=str(model))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", type=int, nargs=3, default=[4, 512, 512])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batches", type=int, nargs="*", default=[4])
    parser.add_argument("--model", type=Path, default=REPO / "training" / "models" / "model.pt")
    args = parser.parse_args()
    candidates = ["denoise_volume", "adapt_model"] + [f"adapt_model batch={b}" for b in args.batches]
    runs: Dict[str, List[Dict[str, float]]] = {name: [] for name in candidates}
    for _ in range(args.repeats):
        for name in candidates:
            runs[name].append(run_child(name, args.shape, args.threads, args.model))
    base_time = min(r["seconds"] for r in runs["denoise_volume"])
    base_memory = max(r["peak_increase"] for r in runs["denoise_volume"])
    print(f"scan {' x '.join(map(str, args.shape))}, {args.threads} threads, {args.repeats} repeats (fresh process each)")
    print(f"{'candidate':28s} {'min s':>8s} {'x denoise':>10s} {'peak MiB':>9s} {'x denoise':>10s} {'steps':>6s}")
    for name, results in runs.items():
        seconds = min(r["seconds"] for r in results)
        memory = max(r["peak_increase"] for r in results)
        steps = results[0]["steps"]
        print(f"{name:28s} {seconds:8.2f} {seconds / base_time:10.2f} {memory / 2**20:9.0f} "
              f"{memory / max(base_memory, 1):10.2f} {'' if steps is None else steps:>6}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
