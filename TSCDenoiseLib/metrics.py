"""Image-quality figures in HU against a normal-dose reference."""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

SOFT_TISSUE_WINDOW = (-160.0, 240.0)  # the common Mayo protocol window (data range 400 HU)


def _masked(values: np.ndarray, mask: Optional[np.ndarray]) -> np.ndarray:
    return values if mask is None else values[mask]


def rmse(image: np.ndarray, reference: np.ndarray, mask: Optional[np.ndarray] = None) -> float:
    """Root-mean-square error in HU (over `mask` if given)."""
    diff = image.astype(np.float64) - reference.astype(np.float64)
    return float(np.sqrt(np.mean(_masked(diff, mask) ** 2)))


def psnr(image: np.ndarray, reference: np.ndarray, window: Tuple[float, float] = SOFT_TISSUE_WINDOW) -> float:
    """PSNR in dB after clipping both images to `window` (data range = window width)."""
    low, high = window
    a = np.clip(image.astype(np.float64), low, high)
    b = np.clip(reference.astype(np.float64), low, high)
    mse = np.mean((a - b) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10((high - low) ** 2 / mse))


def noise_std(image: np.ndarray, reference: np.ndarray, mask: np.ndarray) -> float:
    """Standard deviation of (image - reference) in HU inside `mask`: the noise left in flat tissue."""
    return float(np.std(image.astype(np.float64)[mask] - reference.astype(np.float64)[mask]))


def flat_soft_tissue_mask(reference: np.ndarray, low: float = -150.0, high: float = 150.0, margin: int = 3) -> np.ndarray:
    """Voxels of `reference` in [low, high] HU whose in-plane neighbourhood (± margin) is too."""
    inside = (reference >= low) & (reference <= high)
    flat = inside.copy()
    for axis in (-1, -2):
        for shift in range(1, margin + 1):
            flat &= np.roll(inside, shift, axis=axis) & np.roll(inside, -shift, axis=axis)
    return flat


def ssim(image: np.ndarray, reference: np.ndarray, window: Tuple[float, float] = SOFT_TISSUE_WINDOW) -> float:
    """Mean 2D SSIM over axial slices after clipping both to `window` (data range = its width).

    MONAI's ``SSIMMetric`` (Gaussian 11x11, sigma 1.5, k1 0.01, k2 0.03); needs the [train] extra.
    """
    import torch
    from monai.metrics import SSIMMetric

    low, high = window

    def slices(volume: np.ndarray) -> torch.Tensor:
        clipped = (np.clip(volume.astype(np.float32), low, high) - low) / (high - low)
        return torch.from_numpy(clipped.reshape(-1, 1, *clipped.shape[-2:]))

    scores = SSIMMetric(spatial_dims=2, data_range=1.0)(slices(image), slices(reference))
    return float(scores.mean())


def hu_bias(image: np.ndarray, reference: np.ndarray, mask: Optional[np.ndarray] = None) -> float:
    """Mean of (image - reference) in HU (over `mask` if given): a shift of CT numbers."""
    diff = image.astype(np.float64) - reference.astype(np.float64)
    return float(np.mean(_masked(diff, mask)))
