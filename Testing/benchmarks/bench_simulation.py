"""Low-dose simulation of one slice: projector candidates compared in the same run.

    python Testing/benchmarks/bench_simulation.py [--size 512] [--repeats 3]

Times the whole simulation (projection, noise, FBP) of a size x size slice at 0.7 mm with
astra-toolbox (fan beam over 360 degrees, 1152 views; threads 1 and 2; parallel beam, 576 views)
and, as the candidate baseline, scikit-image's radon/iradon (parallel only, 576 views) if installed.
The requirement is <= 2 s per 512 x 512 slice on a 2-core machine.
"""

from __future__ import annotations

import argparse
import os

import numpy as np

from bench_utils import interleaved_medians
from TSCDenoiseLib.training.simulation import LowDoseParameters, LowDoseSimulator, ParallelBeamGeometry, hu_to_mu


def phantom(size: int) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    centre = (size - 1) / 2
    image = np.full((size, size), -1000.0, np.float32)
    image[(yy - centre) ** 2 + (xx - centre) ** 2 < (0.4 * size) ** 2] = 40.0
    image[(yy - 0.4 * size) ** 2 + (xx - 0.6 * size) ** 2 < (0.05 * size) ** 2] = 1000.0
    return image


def skimage_candidate(image: np.ndarray, spacing_mm: float, params: LowDoseParameters):
    from skimage.transform import iradon, radon

    angles = np.linspace(0.0, 180.0, 576, endpoint=False)
    rng = np.random.default_rng(0)

    def run() -> np.ndarray:
        mu = hu_to_mu(image, params.mu_water_per_mm)
        clean = radon(mu, angles, circle=False) * spacing_mm
        expected = params.dose_fraction * params.incident_flux
        counts = rng.poisson(expected * np.exp(-clean)) + rng.normal(0, np.sqrt(params.electronic_noise_variance), clean.shape)
        noisy = -np.log(np.maximum(counts, params.count_floor) / expected)
        return iradon((noisy - clean) / spacing_mm, angles, circle=False, output_size=image.shape[0])

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--spacing", type=float, default=0.7)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    image = phantom(args.size)
    rng = np.random.default_rng(0)
    candidates = {}
    for threads in (1, 2):
        simulator = LowDoseSimulator(LowDoseParameters(), threads=threads)
        candidates[f"astra fan 1152 views, {threads} thread(s)"] = (
            lambda s=simulator: s.simulate_slice(image, args.spacing, rng)
        )
    parallel = LowDoseSimulator(LowDoseParameters(geometry=ParallelBeamGeometry()), threads=2)
    candidates["astra parallel 576 views, 2 threads"] = lambda: parallel.simulate_slice(image, args.spacing, rng)
    try:
        candidates["scikit-image radon/iradon parallel 576 views"] = skimage_candidate(image, args.spacing, LowDoseParameters())
    except ImportError:
        print("scikit-image not installed: its candidate is skipped")
    times = interleaved_medians(candidates, args.repeats, device=__import__("torch").device("cpu"))
    baseline = times[next(iter(candidates))]
    print(f"{args.size}x{args.size} slice, {os.cpu_count()} CPU cores, median of {args.repeats}")
    for name, seconds in times.items():
        print(f"  {name:48s} {seconds:7.2f} s   ({seconds / baseline:4.2f}x the 1-thread fan run)")


if __name__ == "__main__":
    main()
