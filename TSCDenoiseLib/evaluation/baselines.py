"""Classical baseline: SimpleITK's curvature anisotropic diffusion, tuned on validation data."""

from __future__ import annotations

import itertools
from typing import Iterable, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from ..core.metrics import psnr

DEFAULT_CONDUCTANCES = (0.125, 0.25, 0.5, 1.0, 2.0)
DEFAULT_ITERATIONS = (1, 2, 3, 5, 10)
# Best setting on the bundled sample's validation split (configs/evaluate.json, training/docs/evaluation.json):
# what `tscdenoise evaluate --baselines` uses when there is no validation data to tune on.
SAMPLE_TUNED_CONDUCTANCE = 0.25
SAMPLE_TUNED_ITERATIONS = 5


def anisotropic_diffusion(
    volume_hu: np.ndarray, spacing: Sequence[float] = (1.0, 1.0, 1.0), conductance: float = 1.0, iterations: int = 5
) -> np.ndarray:
    """Curvature anisotropic diffusion of a (Z, Y, X) HU volume (3D, spacing (x, y, z) in mm); a new array."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(volume_hu, dtype=np.float32))
    image.SetSpacing(tuple(float(s) for s in spacing))
    smoother = sitk.CurvatureAnisotropicDiffusionImageFilter()
    # Stable explicit step for 3D: below min spacing / 2^(N+1).
    smoother.SetTimeStep(min(float(s) for s in spacing) / 2 ** 4 * 0.99)
    smoother.SetConductanceParameter(float(conductance))
    smoother.SetNumberOfIterations(int(iterations))
    return sitk.GetArrayFromImage(smoother.Execute(image))


def tune_anisotropic_diffusion(
    pairs: Iterable[Tuple[np.ndarray, np.ndarray, Sequence[float]]],
    conductances: Sequence[float] = DEFAULT_CONDUCTANCES,
    iterations: Sequence[int] = DEFAULT_ITERATIONS,
) -> dict:
    """Grid-search (conductance, iterations) maximizing the mean PSNR at [-160, 240] HU over
    (low_dose, normal_dose, spacing) validation pairs; returns the best settings and the grid."""
    pairs = list(pairs)
    grid = []
    for conductance, count in itertools.product(conductances, iterations):
        score = np.mean([psnr(anisotropic_diffusion(low, spacing, conductance, count), high) for low, high, spacing in pairs])
        grid.append({"conductance": conductance, "iterations": count, "psnr_db": round(float(score), 3)})
    best = max(grid, key=lambda row: row["psnr_db"])
    return {"conductance": best["conductance"], "iterations": best["iterations"], "grid": grid}
