"""Low-dose CT simulated from normal-dose CT in the projection domain.

The physics (Zeng et al. 2015, "A simple low-dose x-ray CT simulation from
high-dose scan"): HU -> linear attenuation mu, forward projection to line
integrals p, transmitted counts y = Poisson(a * I0 * exp(-p)) + N(0, sigma_e^2)
for dose fraction ``a``, then p_LD = -log(max(y, floor) / (a * I0)) and
filtered back-projection (FBP) back to HU.

Projector: astra-toolbox's CPU projectors (chosen by measurement, see
``Testing/benchmarks/bench_simulation.py``). ASTRA's CPU FBP only handles
parallel beams, so fan-beam data are rebinned to parallel rays before FBP,
as many clinical scanners do; the rebinning is a linear interpolation, which
correlates neighbouring noise samples slightly, as on those scanners.

Two reconstructions are offered:

* ``"noise_insertion"`` (default): LDCT = NDCT + FBP(p_LD - p_ND). Only the
  added noise passes through the projector, so the pair differs by dose alone
  and the NDCT's own resolution is kept (no projector blur in the target).
* ``"full"``: LDCT = FBP(p_LD), the whole image re-reconstructed.

The NDCT's own noise is not removed first, so the result is slightly noisier
than a true acquisition at dose fraction ``a`` (negligible for ``a <= 0.25``,
where the added variance is >= 3x the existing one).
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from ..errors import InvalidInputError

Reconstruction = Literal["noise_insertion", "full"]


@dataclass(frozen=True)
class FanBeamGeometry:
    """Flat-detector fan beam over 360 degrees (defaults: a Siemens Definition-class scanner)."""

    source_to_isocenter_mm: float = 595.0
    source_to_detector_mm: float = 1085.6
    detector_bins: int = 736
    detector_spacing_mm: float = 1.2858
    views: int = 1152

    @property
    def detector_spacing_at_isocenter_mm(self) -> float:
        return self.detector_spacing_mm * self.source_to_isocenter_mm / self.source_to_detector_mm


@dataclass(frozen=True)
class ParallelBeamGeometry:
    """Parallel beam over 180 degrees."""

    detector_bins: int = 736
    detector_spacing_mm: float = 0.7
    views: int = 576


@dataclass(frozen=True)
class LowDoseParameters:
    """Dose and noise model. ``incident_flux`` (I0) is photons per detector bin per view."""

    dose_fraction: float = 0.25
    incident_flux: float = 2.25e5
    electronic_noise_variance: float = 8.0
    mu_water_per_mm: float = 0.0192
    count_floor: float = 1.0
    geometry: FanBeamGeometry | ParallelBeamGeometry = field(default_factory=FanBeamGeometry)
    reconstruction: Reconstruction = "noise_insertion"
    fbp_filter: str = "ram-lak"

    def __post_init__(self) -> None:
        if not 0.0 < self.dose_fraction <= 1.0:
            raise InvalidInputError(
                f"dose_fraction must be in (0, 1], got {self.dose_fraction}; use 0.25 for quarter dose."
            )
        if self.incident_flux <= 0 or self.electronic_noise_variance < 0 or self.count_floor <= 0:
            raise InvalidInputError(
                "incident_flux and count_floor must be > 0 and electronic_noise_variance >= 0."
            )
        if self.reconstruction not in ("noise_insertion", "full"):
            raise InvalidInputError(
                f"reconstruction must be 'noise_insertion' or 'full', got {self.reconstruction!r}."
            )


def _import_astra():
    from ..lazy import require_optional

    return require_optional("astra", "data", "Low-dose simulation", package="astra-toolbox")


def hu_to_mu(slice_hu: np.ndarray, mu_water_per_mm: float) -> np.ndarray:
    """Linear attenuation (1/mm) from HU; below-air values are clipped to zero attenuation."""
    return np.maximum(mu_water_per_mm * (1.0 + slice_hu.astype(np.float32) / 1000.0), 0.0).astype(np.float32)


def mu_to_hu(mu: np.ndarray, mu_water_per_mm: float) -> np.ndarray:
    return (1000.0 * (mu / mu_water_per_mm - 1.0)).astype(np.float32)


class _Projector:
    """ASTRA forward projection and parallel-beam FBP for one image size, split over threads."""

    def __init__(self, shape: tuple[int, int], pixel_spacing_mm: float, geometry, threads: int) -> None:
        self.astra = _import_astra()
        rows, cols = shape
        half_y, half_x = rows * pixel_spacing_mm / 2, cols * pixel_spacing_mm / 2
        self.volume = self.astra.create_vol_geom(rows, cols, -half_x, half_x, -half_y, half_y)
        self.geometry = geometry
        self.threads = max(1, threads)
        if isinstance(geometry, FanBeamGeometry):
            self.angles = np.linspace(0, 2 * np.pi, geometry.views, endpoint=False)
        else:
            self.angles = np.linspace(0, np.pi, geometry.views, endpoint=False)
        self.angle_chunks = np.array_split(np.arange(len(self.angles)), self.threads)

    def _projection_geometry(self, angles: np.ndarray):
        g = self.geometry
        if isinstance(g, FanBeamGeometry):
            return self.astra.create_proj_geom(
                "fanflat", g.detector_spacing_mm, g.detector_bins, angles,
                g.source_to_isocenter_mm, g.source_to_detector_mm - g.source_to_isocenter_mm,
            )
        return self.astra.create_proj_geom("parallel", g.detector_spacing_mm, g.detector_bins, angles)

    def _project_chunk(self, mu: np.ndarray, indices: np.ndarray) -> np.ndarray:
        kind = "line_fanflat" if isinstance(self.geometry, FanBeamGeometry) else "line"
        projector = self.astra.create_projector(kind, self._projection_geometry(self.angles[indices]), self.volume)
        try:
            sinogram_id, sinogram = self.astra.create_sino(mu, projector)
            self.astra.data2d.delete(sinogram_id)
        finally:
            self.astra.projector.delete(projector)
        return sinogram

    def forward(self, mu: np.ndarray) -> np.ndarray:
        """Line integrals (views, bins) of ``mu`` (1/mm) with lengths in mm."""
        with ThreadPoolExecutor(self.threads) as pool:
            parts = list(pool.map(lambda idx: self._project_chunk(mu, idx), self.angle_chunks))
        return np.concatenate(parts, axis=0)

    def _fbp_parallel_chunk(self, sinogram: np.ndarray, angles: np.ndarray, spacing: float, fbp_filter: str):
        geometry = self.astra.create_proj_geom("parallel", spacing, sinogram.shape[1], angles)
        projector = self.astra.create_projector("line", geometry, self.volume)
        sinogram_id = self.astra.data2d.create("-sino", geometry, sinogram)
        image_id = self.astra.data2d.create("-vol", self.volume)
        config = self.astra.astra_dict("FBP")
        config.update(ProjectorId=projector, ProjectionDataId=sinogram_id, ReconstructionDataId=image_id)
        config["FilterType"] = fbp_filter
        algorithm = self.astra.algorithm.create(config)
        try:
            self.astra.algorithm.run(algorithm)
            return self.astra.data2d.get(image_id)
        finally:
            self.astra.algorithm.delete(algorithm)
            self.astra.data2d.delete([sinogram_id, image_id])
            self.astra.projector.delete(projector)

    def fbp(self, sinogram: np.ndarray, fbp_filter: str) -> np.ndarray:
        """FBP to mu (1/mm); fan-beam data are rebinned to parallel rays first."""
        if isinstance(self.geometry, FanBeamGeometry):
            sinogram, angles, spacing = _rebin_fan_to_parallel(sinogram, self.geometry)
        else:
            angles, spacing = self.angles, self.geometry.detector_spacing_mm
        chunks = np.array_split(np.arange(len(angles)), self.threads)
        with ThreadPoolExecutor(self.threads) as pool:
            parts = list(pool.map(
                lambda idx: self._fbp_parallel_chunk(np.ascontiguousarray(sinogram[idx]), angles[idx], spacing, fbp_filter),
                chunks,
            ))
        # ASTRA normalizes each chunk as if it covered 180 degrees; weight by its share of views.
        return sum(part * (len(idx) / len(angles)) for part, idx in zip(parts, chunks)).astype(np.float32)


def _rebin_fan_to_parallel(sinogram: np.ndarray, geometry: FanBeamGeometry):
    """Rebin a 360-degree flat-detector fan sinogram to parallel rays over 180 degrees.

    In ASTRA's conventions the parallel ray (theta, s) is the fan ray at source
    angle beta = theta + gamma and detector position u = D tan(gamma), with
    s = D sin(gamma); its conjugate is at beta + pi - 2 gamma, u -> -u. Both are
    averaged, which uses all 360 degrees of data.
    """
    from scipy.ndimage import map_coordinates

    views, bins = sinogram.shape
    radius = geometry.source_to_isocenter_mm
    spacing = geometry.detector_spacing_at_isocenter_mm
    u_max = (bins - 1) / 2 * spacing
    s_max = radius * math.sin(math.atan(u_max / radius))
    parallel_bins = bins
    parallel_spacing = 2 * s_max / (parallel_bins - 1)
    parallel_views = views // 2
    theta = np.linspace(0, np.pi, parallel_views, endpoint=False)
    s = (np.arange(parallel_bins) - (parallel_bins - 1) / 2) * parallel_spacing
    theta_grid, s_grid = np.meshgrid(theta, s, indexing="ij")
    gamma = np.arcsin(np.clip(s_grid / radius, -1.0, 1.0))
    u_index = radius * np.tan(gamma) / spacing + (bins - 1) / 2
    wrapped = np.vstack([sinogram, sinogram[:1]])  # periodic in beta for interpolation
    view_scale = views / (2 * np.pi)
    beta = np.mod(theta_grid + gamma, 2 * np.pi) * view_scale
    beta_conjugate = np.mod(theta_grid + np.pi - gamma, 2 * np.pi) * view_scale
    direct = map_coordinates(wrapped, [beta, u_index], order=1, mode="nearest")
    conjugate = map_coordinates(wrapped, [beta_conjugate, (bins - 1) - u_index], order=1, mode="nearest")
    return ((direct + conjugate) / 2).astype(np.float32), theta, parallel_spacing


def _noisy_line_integrals(
    line_integrals: np.ndarray, params: LowDoseParameters, rng: np.random.Generator
) -> np.ndarray:
    expected = params.dose_fraction * params.incident_flux
    counts = rng.poisson(expected * np.exp(-line_integrals.astype(np.float64)))
    counts = counts + rng.normal(0.0, math.sqrt(params.electronic_noise_variance), size=counts.shape)
    return (-np.log(np.maximum(counts, params.count_floor) / expected)).astype(np.float32)


class LowDoseSimulator:
    """Simulates low-dose slices; reuse one instance for many slices of one size."""

    def __init__(self, params: LowDoseParameters | None = None, threads: int | None = None) -> None:
        self.params = params or LowDoseParameters()
        self.threads = threads or min(4, os.cpu_count() or 1)
        self._projectors: dict[tuple, _Projector] = {}

    def _projector(self, shape: tuple[int, int], pixel_spacing_mm: float) -> _Projector:
        key = (shape, round(float(pixel_spacing_mm), 6))
        if key not in self._projectors:
            self._projectors[key] = _Projector(shape, pixel_spacing_mm, self.params.geometry, self.threads)
        return self._projectors[key]

    def line_integrals(self, image_hu: np.ndarray, pixel_spacing_mm: float) -> np.ndarray:
        """Line integrals (views, bins; attenuation x mm) of a 2D HU image centred on the rotation axis."""
        return self._projector(image_hu.shape, pixel_spacing_mm).forward(hu_to_mu(image_hu, self.params.mu_water_per_mm))

    def simulate_slice(
        self, slice_hu: np.ndarray, pixel_spacing_mm: float, rng: np.random.Generator,
        surrounding_line_integrals: np.ndarray | None = None,
    ) -> np.ndarray:
        """Low-dose version (float32 HU) of one 2D normal-dose slice with square pixels.

        Args:
            slice_hu: the slice, centred on the rotation axis.
            pixel_spacing_mm: its pixel size.
            rng: the noise's random generator.
            surrounding_line_integrals: attenuation outside the slice's field of view (from
                :meth:`line_integrals` of the body around a crop, with the crop's area empty): it adds to
                the slice's own line integrals, so the photon counts, and hence the noise, are those of the
                whole patient, while only the slice's own area is reconstructed.
        """
        if slice_hu.ndim != 2:
            raise InvalidInputError(f"simulate_slice needs a 2D slice, got shape {slice_hu.shape}.")
        if not pixel_spacing_mm > 0:
            raise InvalidInputError(f"pixel_spacing_mm must be > 0, got {pixel_spacing_mm}.")
        params = self.params
        projector = self._projector(slice_hu.shape, pixel_spacing_mm)
        mu = hu_to_mu(slice_hu, params.mu_water_per_mm)
        own = projector.forward(mu)
        clean = own if surrounding_line_integrals is None else own + surrounding_line_integrals
        noisy = _noisy_line_integrals(clean, params, rng)
        if params.reconstruction == "full":
            return mu_to_hu(projector.fbp(noisy - (clean - own), params.fbp_filter), params.mu_water_per_mm)
        noise_mu = projector.fbp(noisy - clean, params.fbp_filter)
        return (slice_hu.astype(np.float32) + 1000.0 * noise_mu / params.mu_water_per_mm).astype(np.float32)

    def simulate_volume(
        self, volume_hu: np.ndarray, pixel_spacing_mm: float, seed: int | None = None
    ) -> np.ndarray:
        """Low-dose version (float32 HU) of a (Z, Y, X) volume, slice by slice.

        Each slice draws from its own stream spawned from ``seed``, so a slice's
        noise does not depend on which other slices are simulated with it.
        """
        if volume_hu.ndim != 3:
            raise InvalidInputError(f"simulate_volume needs a (Z, Y, X) volume, got shape {volume_hu.shape}.")
        streams = np.random.SeedSequence(seed).spawn(volume_hu.shape[0])
        return np.stack([
            self.simulate_slice(volume_hu[z], pixel_spacing_mm, np.random.default_rng(streams[z]))
            for z in range(volume_hu.shape[0])
        ])


def simulate_low_dose(
    hu: np.ndarray,
    dose: float = 0.25,
    seed: int | None = None,
    *,
    pixel_spacing: float,
    i0: float = 2.25e5,
    electronic_noise_var: float = 8.0,
    geometry: Literal["fan", "parallel"] | FanBeamGeometry | ParallelBeamGeometry = "fan",
    reconstruction: Reconstruction = "noise_insertion",
    **parameters,
) -> np.ndarray:
    """Low-dose version (float32 HU) of a 2D slice (Y, X) or a volume (Z, Y, X) in HU.

    ``dose`` is the dose fraction (0.25 = quarter dose), ``pixel_spacing`` the in-plane
    pixel size in mm (square pixels), ``i0`` the incident photons per detector bin and
    view at full dose. Further :class:`LowDoseParameters` fields go in ``parameters``.
    Deterministic for a given ``seed``; the input is not modified.
    """
    if isinstance(geometry, str):
        if geometry not in ("fan", "parallel"):
            raise InvalidInputError(f"geometry must be 'fan', 'parallel' or a geometry object, got {geometry!r}.")
        geometry = FanBeamGeometry() if geometry == "fan" else ParallelBeamGeometry()
    params = LowDoseParameters(
        dose_fraction=dose, incident_flux=i0, electronic_noise_variance=electronic_noise_var,
        geometry=geometry, reconstruction=reconstruction, **parameters,
    )
    simulator = LowDoseSimulator(params)
    if hu.ndim == 2:
        return simulator.simulate_slice(hu, pixel_spacing, np.random.default_rng(seed))
    return simulator.simulate_volume(hu, pixel_spacing, seed)
