"""A wide distribution of simulated acquisitions: dose, reconstruction kernel, pixel size, patient size.

A supervised denoiser fails away from the noise it was trained on (level, grain, pixel size), so the
training pairs are simulated over the range users scan at: dose fractions log-uniform in [5 %, 50 %],
FBP filters from sharp (Ram-Lak) to smooth (Hann), pixel spacings 0.4-1.0 mm, and, for images that
show only part of a body (crops), a body-sized water-equivalent outline 30-40 cm wide around them so that
the projections, and hence the noise, are those of a whole patient.

Optionally the normal-dose target itself is re-acquired at a reduced dose first (`reference_dose_fraction`),
so that targets carry the noise grain of clinical normal-dose scans rather than the smoother texture of
the source images; a network trained only on smooth targets learns to remove that grain too.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from ..errors import InvalidInputError

# ASTRA's FBP filters, sharpest first.
FBP_FILTERS = ("ram-lak", "shepp-logan", "cosine", "hamming", "hann")
SOFT_TISSUE_HU = 30.0


@dataclass(frozen=True)
class Acquisition:
    """One simulated acquisition; recorded beside every training pair."""

    dose_fraction: float
    fbp_filter: str
    pixel_spacing_mm: float
    body_width_mm: float | None = None
    reference_dose_fraction: float | None = None  # target re-acquired at this fraction; None: the source as is

    def as_dict(self) -> dict:
        """The fields that are set (a datalist entry's metadata: MONAI's collate refuses None)."""
        return {key: value for key, value in asdict(self).items() if value is not None}


@dataclass(frozen=True)
class AcquisitionDistribution:
    """Ranges the acquisitions are drawn from (dose log-uniform, the rest uniform)."""

    dose_range: tuple[float, float] = (0.05, 0.5)
    spacing_range_mm: tuple[float, float] = (0.4, 1.0)
    body_width_range_mm: tuple[float, float] = (300.0, 400.0)
    fbp_filters: Sequence[str] = FBP_FILTERS
    reference_dose_range: tuple[float, float] | None = None
    reference_noise_probability: float = 0.75

    def __post_init__(self) -> None:
        if self.reference_dose_range is not None:
            low, high = self.reference_dose_range
            if not 0 < low <= high <= 1:
                raise InvalidInputError(
                    f"reference_dose_range must satisfy 0 < low <= high <= 1, got {self.reference_dose_range}."
                )
        if not 0 <= self.reference_noise_probability <= 1:
            raise InvalidInputError(
                f"reference_noise_probability must be in [0, 1], got {self.reference_noise_probability}."
            )
        low, high = self.dose_range
        if not 0 < low <= high <= 1:
            raise InvalidInputError(f"dose_range must satisfy 0 < low <= high <= 1, got {self.dose_range}.")
        if not 0 < self.spacing_range_mm[0] <= self.spacing_range_mm[1]:
            raise InvalidInputError(f"spacing_range_mm must be positive and ordered, got {self.spacing_range_mm}.")
        unknown = set(self.fbp_filters) - set(FBP_FILTERS)
        if unknown or not self.fbp_filters:
            raise InvalidInputError(f"fbp_filters must be a non-empty subset of {FBP_FILTERS}, got {self.fbp_filters}.")

    def draw(self, rng: np.random.Generator, in_body: bool = False) -> Acquisition:
        """One acquisition; `in_body` also draws the width of the body the image is embedded in."""
        dose = math.exp(rng.uniform(math.log(self.dose_range[0]), math.log(self.dose_range[1])))
        spacing = rng.uniform(*self.spacing_range_mm)
        fbp_filter = str(self.fbp_filters[rng.integers(len(self.fbp_filters))])
        width = float(rng.uniform(*self.body_width_range_mm)) if in_body else None
        reference = None
        if self.reference_dose_range is not None:  # drawn only then, so existing data sets draw as before
            low, high = self.reference_dose_range
            noisy_target = rng.uniform() < self.reference_noise_probability
            fraction = math.exp(rng.uniform(math.log(low), math.log(high)))
            reference = round(fraction, 4) if noisy_target else None
        return Acquisition(round(dose, 4), fbp_filter, round(float(spacing), 3), width, reference)


def resample_slices(volume_hu: np.ndarray, spacing_mm: float, new_spacing_mm: float) -> np.ndarray:
    """(Z, Y, X) slices resampled in-plane to `new_spacing_mm` (cubic spline, HU range kept)."""
    from scipy.ndimage import zoom

    factor = spacing_mm / new_spacing_mm
    if abs(factor - 1.0) < 1e-3:
        return volume_hu.astype(np.float32, copy=True)
    out = zoom(volume_hu.astype(np.float32), (1.0, factor, factor), order=3, mode="nearest", grid_mode=True)
    return np.clip(out, float(volume_hu.min()), float(volume_hu.max())).astype(np.float32)


def body_around(crop_shape: tuple[int, int], spacing_mm: float, body_width_mm: float, aspect: float = 0.72,
                body_spacing_mm: float = 1.0) -> tuple[np.ndarray, float]:
    """An elliptical soft-tissue body around a centred crop, with the crop's own area left empty (air).

    Its line integrals, added to the crop's, give the photon counts of a whole patient (see
    `LowDoseSimulator.simulate_slice`); being smooth, the body is drawn on a coarse grid.

    Args:
        crop_shape: (rows, columns) of the crop.
        spacing_mm: the crop's pixel size.
        body_width_mm: left-right width of the body; `aspect` gives the anterior-posterior one.
        body_spacing_mm: pixel size of the body image.

    Returns:
        The body image in HU and its pixel size.
    """
    rows, cols = crop_shape
    half_x = max(body_width_mm / 2, 0.6 * cols * spacing_mm)
    half_y = max(half_x * aspect, 0.6 * rows * spacing_mm)
    size = int(math.ceil(2 * max(half_x, half_y) / body_spacing_mm)) + 4
    axis = (np.arange(size) - (size - 1) / 2) * body_spacing_mm
    yy, xx = np.meshgrid(axis, axis, indexing="ij")
    body = np.where((xx / half_x) ** 2 + (yy / half_y) ** 2 <= 1.0, SOFT_TISSUE_HU, -1000.0).astype(np.float32)
    hole = (np.abs(yy) < rows * spacing_mm / 2) & (np.abs(xx) < cols * spacing_mm / 2)
    body[hole] = -1000.0
    return body, body_spacing_mm


def simulate_acquisition(volume_hu: np.ndarray, spacing_mm: float, acquisition: Acquisition, seed: int,
                         threads: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """A (normal-dose, low-dose) pair of (Z, Y, X) volumes at the acquisition's pixel size.

    The normal-dose slices are resampled to the acquisition's spacing; the low dose is simulated in the
    projection domain (noise insertion), inside a body of `body_width_mm` when that is set (for crops).
    With `reference_dose_fraction` r set, the normal-dose target first gets the noise of a scan at r times
    the simulator's photon flux (same kernel), and the low dose is then simulated from that target at
    `dose_fraction` of the reduced flux.
    """
    from .simulation import LowDoseParameters, LowDoseSimulator

    ndct = resample_slices(np.maximum(volume_hu, -1024.0), spacing_mm, acquisition.pixel_spacing_mm)
    reference = acquisition.reference_dose_fraction
    base = LowDoseParameters()
    simulator = LowDoseSimulator(
        LowDoseParameters(dose_fraction=acquisition.dose_fraction, fbp_filter=acquisition.fbp_filter,
                          incident_flux=base.incident_flux * (reference or 1.0)),
        threads=threads,
    )
    streams = np.random.SeedSequence(seed).spawn(ndct.shape[0] + 1)
    surrounding = None
    if acquisition.body_width_mm is not None:
        aspect = np.random.default_rng(streams[-1]).uniform(0.65, 0.8)  # anterior-posterior over left-right
        body, body_spacing = body_around(ndct.shape[1:], acquisition.pixel_spacing_mm, acquisition.body_width_mm, aspect)
        surrounding = simulator.line_integrals(body, body_spacing)
    if reference is not None:
        # The target gets the noise of a scan at r x the simulator's flux; the low dose then adds, on top of
        # the target, the noise of a scan at d x that reduced flux (as it adds d x flux to an unaltered source).
        target = LowDoseSimulator(LowDoseParameters(dose_fraction=reference, fbp_filter=acquisition.fbp_filter),
                                  threads=threads)
        target_streams = np.random.SeedSequence([seed, 1]).spawn(ndct.shape[0])
        ndct = np.stack([
            target.simulate_slice(ndct[z], acquisition.pixel_spacing_mm, np.random.default_rng(target_streams[z]),
                                  surrounding)
            for z in range(ndct.shape[0])
        ])
    ldct = np.stack([
        simulator.simulate_slice(ndct[z], acquisition.pixel_spacing_mm, np.random.default_rng(streams[z]), surrounding)
        for z in range(ndct.shape[0])
    ])
    return ndct, ldct
