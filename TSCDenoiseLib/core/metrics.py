"""Image-quality figures in HU against a normal-dose reference."""

from __future__ import annotations

from typing import NamedTuple, Optional, Sequence, Tuple, Union

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


# --- Texture-aware figures: noise power spectrum in flat tissue, edge sharpness -------------------


class SquareRoi(NamedTuple):
    """A square in-plane region: slice ``z``, top-left corner (``y``, ``x``), side ``size`` pixels."""

    z: int
    y: int
    x: int
    size: int

    def index(self) -> Tuple[int, slice, slice]:
        """Index that cuts this ROI out of a (Z, Y, X) array as a (size, size) slice."""
        return self.z, slice(self.y, self.y + self.size), slice(self.x, self.x + self.size)


class NpsSummary(NamedTuple):
    """Peak and mean (centroid) frequency in cycles/mm, and the noise variance in HU² from the NPS."""

    peak_frequency: float
    mean_frequency: float
    variance: float


def _box_sums(values: np.ndarray, size: int) -> np.ndarray:
    """Sums of every size x size window of a 2D array (integral image); shape (Y - size + 1, X - size + 1)."""
    integral = np.pad(values, ((1, 0), (1, 0))).cumsum(axis=0).cumsum(axis=1)
    return integral[size:, size:] - integral[:-size, size:] - integral[size:, :-size] + integral[:-size, :-size]


def _flat_window_std(section: np.ndarray, size: int, low: float, high: float) -> np.ndarray:
    """Std of every size x size window of a 2D slice, inf where any pixel is outside [low, high]."""
    outside = _box_sums(((section < low) | (section > high)).astype(np.int64), size)
    # centring on the window keeps the sum of squares small, so E[x²] - E[x]² does not lose precision
    centred = section - (low + high) / 2.0
    n = float(size * size)
    mean = _box_sums(centred, size) / n
    variance = np.maximum(_box_sums(centred**2, size) / n - mean**2, 0.0)
    return np.where(outside == 0, np.sqrt(variance), np.inf)


def find_flat_tissue_rois(reference: np.ndarray, size: int = 32, count: int = 16, low: float = -150.0,
                          high: float = 150.0, max_std: float = 20.0) -> list[SquareRoi]:
    """Up to ``count`` non-overlapping square ROIs in flat soft tissue of a (Z, Y, X) HU reference.

    An ROI qualifies when all its pixels lie in [low, high] HU and its std in the reference is at most
    ``max_std`` HU (the normal-dose noise plus slow anatomy; edges and structures push it higher).
    The flattest ROI is taken first, then the flattest one not overlapping those taken, and so on;
    ties go to the lowest (z, y, x), so the result is deterministic. ROIs on different slices may share
    (y, x). Returns fewer than ``count`` ROIs, possibly none (an empty list), when no more qualify.
    """
    volume = np.asarray(reference, dtype=np.float64)
    if volume.ndim != 3:
        raise ValueError(f"reference must be a (Z, Y, X) volume, got shape {volume.shape}")
    if size < 1 or count < 1:
        raise ValueError(f"size and count must be positive, got size={size}, count={count}")
    if size > volume.shape[1] or size > volume.shape[2]:
        return []
    scores = np.stack([_flat_window_std(section, size, low, high) for section in volume]).astype(np.float32)
    scores[scores > max_std] = np.inf
    rois: list[SquareRoi] = []
    while len(rois) < count:
        best = int(np.argmin(scores))  # the first minimum in (z, y, x) order
        if not np.isfinite(scores.flat[best]):
            break
        z, y, x = (int(i) for i in np.unravel_index(best, scores.shape))
        rois.append(SquareRoi(z, y, x, size))
        # any corner closer than `size` in both directions on this slice would overlap
        scores[z, max(0, y - size + 1):y + size, max(0, x - size + 1):x + size] = np.inf
    return rois


def _spacing_yx(pixel_spacing_mm: Union[float, Sequence[float]]) -> Tuple[float, float]:
    if np.ndim(pixel_spacing_mm) == 0:
        return float(pixel_spacing_mm), float(pixel_spacing_mm)  # type: ignore[arg-type]
    dy, dx = (float(v) for v in pixel_spacing_mm)  # type: ignore[union-attr]
    return dy, dx


def _detrended_rois(noise: np.ndarray, rois: Sequence[Tuple[int, int, int, int]], detrend: str) -> np.ndarray:
    """The ROIs of ``noise`` as an (M, N, N) float64 stack with their mean or fitted plane removed."""
    sizes = {int(roi[3]) for roi in rois}
    if len(sizes) != 1:
        raise ValueError(f"need at least one ROI, all of one size; got sizes {sorted(sizes)}")
    n = sizes.pop()
    stack = np.stack([np.asarray(noise[z, y:y + n, x:x + n], dtype=np.float64) for z, y, x, _ in rois])
    if stack.shape[1:] != (n, n):
        raise ValueError("an ROI reaches past the edge of the noise image")
    if detrend == "mean":
        return stack - stack.mean(axis=(1, 2), keepdims=True)
    if detrend == "plane":
        rows, cols = np.mgrid[0:n, 0:n]
        design = np.stack([np.ones(n * n), rows.ravel(), cols.ravel()], axis=1)
        flat = stack.reshape(len(stack), -1)
        coefficients = np.linalg.lstsq(design, flat.T, rcond=None)[0]
        return (flat - (design @ coefficients).T).reshape(stack.shape)
    raise ValueError(f"detrend must be 'mean' or 'plane', got {detrend!r}")


def noise_power_spectrum_2d(noise: np.ndarray, rois: Sequence[Tuple[int, int, int, int]],
                            pixel_spacing_mm: Union[float, Sequence[float]] = 1.0,
                            detrend: str = "mean") -> np.ndarray:
    """2D NPS in HU²·mm² of (Z, Y, X) noise (image - reference, HU), averaged over square ROIs.

    NPS(fy, fx) = <|DFT(ROI - trend)|²> · Δy·Δx / (Ny·Nx), the trend being the ROI mean or a fitted
    plane (``detrend``). Zero frequency is at index [N // 2, N // 2] (``np.fft.fftshift`` order).
    ``pixel_spacing_mm`` is one number or (Δy, Δx) in array order: ``geometry.spacing`` is (x, y, z).
    """
    dy, dx = _spacing_yx(pixel_spacing_mm)
    stack = _detrended_rois(noise, rois, detrend)
    n = stack.shape[1]
    power = np.abs(np.fft.fft2(stack)) ** 2
    return np.fft.fftshift(power.mean(axis=0)) * (dy * dx) / (n * n)


def nps_frequencies(n: int, pixel_spacing_mm: Union[float, Sequence[float]] = 1.0) -> Tuple[np.ndarray, np.ndarray]:
    """(fy, fx) in cycles/mm along the axes of an n x n NPS from :func:`noise_power_spectrum_2d`."""
    dy, dx = _spacing_yx(pixel_spacing_mm)
    return np.fft.fftshift(np.fft.fftfreq(n, d=dy)), np.fft.fftshift(np.fft.fftfreq(n, d=dx))


def radial_average(nps_2d: np.ndarray, pixel_spacing_mm: Union[float, Sequence[float]] = 1.0
                   ) -> Tuple[np.ndarray, np.ndarray]:
    """Radial NPS: (frequencies in cycles/mm, mean of the 2D NPS over each ring), up to the Nyquist frequency.

    Rings are one frequency step wide (the coarser axis' step) and centred on its multiples, so ring 0
    holds only zero frequency (about 0 after detrending).
    """
    fy, fx = nps_frequencies(nps_2d.shape[0], pixel_spacing_mm)
    step = max(fy[1] - fy[0], fx[1] - fx[0])
    radius = np.hypot(*np.meshgrid(fy, fx, indexing="ij"))
    ring = np.rint(radius / step).astype(np.int64).ravel()
    rings = int(np.floor(min(-fy[0], -fx[0]) / step + 1e-9)) + 1  # -f[0] is the Nyquist frequency
    counts = np.bincount(ring, minlength=rings)[:rings]
    totals = np.bincount(ring, weights=nps_2d.ravel(), minlength=rings)[:rings]
    return np.arange(rings) * step, totals / np.maximum(counts, 1)


def noise_power_spectrum(noise: np.ndarray, rois: Sequence[Tuple[int, int, int, int]],
                         pixel_spacing_mm: Union[float, Sequence[float]] = 1.0,
                         detrend: str = "mean") -> Tuple[np.ndarray, np.ndarray]:
    """Radial NPS of noise (image - reference, HU) in square ROIs: (frequencies cycles/mm, NPS HU²·mm²).

    See :func:`noise_power_spectrum_2d` and :func:`radial_average`; ROIs come e.g. from
    :func:`find_flat_tissue_rois` on the normal-dose reference.
    """
    nps_2d = noise_power_spectrum_2d(noise, rois, pixel_spacing_mm, detrend)
    return radial_average(nps_2d, pixel_spacing_mm)


def nps_variance(nps_2d: np.ndarray, pixel_spacing_mm: Union[float, Sequence[float]] = 1.0) -> float:
    """Integral of a 2D NPS over the whole frequency plane: the detrended noise variance in HU² (Parseval)."""
    dy, dx = _spacing_yx(pixel_spacing_mm)
    n = nps_2d.shape[0]
    return float(nps_2d.sum() / (n * dy * n * dx))


def nps_summary(frequencies: np.ndarray, nps: np.ndarray) -> NpsSummary:
    """Peak frequency, mean frequency and variance of a radial NPS on evenly spaced frequencies from 0.

    Mean frequency is the centroid ∫f·NPS df / ∫NPS df of the radial curve (as in AAPM TG-233);
    lower than another's means coarser, blotchier noise. Variance is ∫2πf·NPS(f) df, the integral
    over the disc up to the Nyquist frequency assuming an isotropic NPS: it equals the noise variance
    when little power lies beyond that disc (smoothed or denoised noise), but misses the corners of the
    frequency square, up to 1 - π/4 of white noise's; :func:`nps_variance` integrates the 2D NPS exactly.
    """
    frequencies = np.asarray(frequencies, dtype=np.float64)
    nps = np.asarray(nps, dtype=np.float64)
    step = frequencies[1] - frequencies[0]
    # each ring [f - step/2, f + step/2] has area 2π·f·step, so this sum is the midpoint rule
    variance = float(np.sum(2 * np.pi * frequencies * nps) * step)
    return NpsSummary(float(frequencies[np.argmax(nps)]), float(np.sum(frequencies * nps) / np.sum(nps)), variance)


def _in_plane_gradient(volume: np.ndarray, sigma: float) -> Tuple[np.ndarray, np.ndarray]:
    """(d/dy, d/dx) per pixel of the last two axes, Gaussian-smoothed with ``sigma`` pixels."""
    from scipy.ndimage import gaussian_filter

    lead = (0,) * (volume.ndim - 2)
    sigmas = lead + (sigma, sigma)
    return (gaussian_filter(volume, sigmas, order=lead + (1, 0)),
            gaussian_filter(volume, sigmas, order=lead + (0, 1)))


def edge_gradient_ratio(image: np.ndarray, reference: np.ndarray, mask: Optional[np.ndarray] = None,
                        percentile: float = 99.0, sigma: float = 1.0) -> float:
    """Edge contrast kept by ``image``: its gradient across the reference's strongest edges over the reference's.

    Edges are the pixels whose in-plane reference gradient magnitude is in the top (100 - percentile)%
    inside ``mask`` (default: reference > -500 HU, the body). There the image gradient is projected onto
    the reference gradient's direction and summed, then divided by the summed reference magnitude.
    About 1: edges kept; below 1: blurred; above 1: sharpened (overshoot). Projecting, instead of
    comparing magnitudes, keeps the ratio unbiased by noise left in the image: noise gradients point
    every way and average out, while their magnitudes would only add. ``sigma`` (pixels) smooths the
    derivatives of both images alike. Works on 2D (Y, X) or (Z, Y, X) arrays.
    """
    ref = np.asarray(reference, dtype=np.float64)
    img = np.asarray(image, dtype=np.float64)
    if img.shape != ref.shape or ref.ndim < 2:
        raise ValueError(f"image and reference need one shape of 2 or more axes, got {img.shape} and {ref.shape}")
    ref_y, ref_x = _in_plane_gradient(ref, sigma)
    img_y, img_x = _in_plane_gradient(img, sigma)
    magnitude = np.hypot(ref_y, ref_x)
    region = ref > -500.0 if mask is None else np.asarray(mask, dtype=bool)
    if not region.any():
        raise ValueError("the mask (or body, reference > -500 HU) is empty")
    edges = region & (magnitude >= np.percentile(magnitude[region], percentile)) & (magnitude > 0)
    if not edges.any():
        raise ValueError("the reference has no edges inside the mask")
    along = (img_y[edges] * ref_y[edges] + img_x[edges] * ref_x[edges]) / magnitude[edges]
    return float(along.sum() / magnitude[edges].sum())
