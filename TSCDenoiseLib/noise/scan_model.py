"""A model of this scan's own noise, estimated from the scan alone, that synthesizes more of it.

Noise insertion in the projection domain needs a projector (astra, a training extra) and the scan's
reconstruction kernel, which Slicer's worker has neither of. The image-domain model here matches the
scan by construction, with numpy and torch only:

- texture: the 2D noise power spectrum (NPS) of the flattest soft-tissue ROIs of the scan (detrended by a
  plane, so slow anatomy drops out), turned into a convolution kernel whose output has that NPS;
- amplitude, which in CT varies across the slice (long, attenuating paths are noisier): the Immerkaer noise
  index (`networks.noise_level.estimate_noise_level`) of every tile, a high-pass statistic that anatomy
  hardly reaches, converted to a noise std with the ratio std / index of noise of the estimated texture.

Even the flattest ROIs of a real scan hold some anatomy (organ texture, slow gradients), all of it at low
frequencies, where an FBP kernel's NPS falls to zero like the ramp filter. Below LOW_FREQUENCY the NPS is
therefore not measured but continued linearly from the ring above it to zero at DC: counting anatomy as
noise made the std 60 % too high on a textured phantom and taught the network to erase organ texture.

Synthesized noise is Gaussian with that NPS, scaled by the local std: it is what a Recorrupted-to-Recorrupted
or Noisier2Noise pair needs (noise of the kind already in the scan).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..core.metrics import find_flat_tissue_rois, noise_power_spectrum_2d
from ..networks.noise_level import estimate_noise_level

ROI_SIZE = 32
ROI_COUNT = 48
TISSUE_HU = (-150.0, 150.0)  # fat to soft tissue; ROIs may reach past it by the noise (below)
ROI_NOISE_REACH = 6.0  # ROI pixels may lie this many noise indices (~3-4 std) outside TISSUE_HU
INDEX_BAND_HU = (-500.0, 500.0)
TILE = 32  # the local amplitude map's resolution, in pixels
MAX_ROI_SLICES = 8  # slices searched for flat ROIs (bounded memory and time on long volumes)
MIN_TILE_BAND_FRACTION = 0.25
LOW_FREQUENCY = 0.1  # cycles per pixel
RATIO_FIELD = 256  # side of the synthetic noise field that calibrates index -> std
MIN_ROIS = 2  # fewer: white texture, index taken as the std (underestimates correlated noise)


@dataclass
class ScanNoiseModel:
    """Noise texture (a convolution kernel) and amplitude (a coarse std map in HU) of one scan."""

    kernel: torch.Tensor  # (1, 1, K, K), output of unit variance for unit white noise
    std_map: torch.Tensor  # (Z, ceil(Y / TILE), ceil(X / TILE)), noise std in HU
    shape: Tuple[int, int, int]
    index_to_std: float
    rois_used: int

    @property
    def median_std_hu(self) -> float:
        """The typical noise std of the scan in HU (median over its tissue tiles)."""
        return float(self.std_map.median())

    def local_std(self, z: int, y0: int, x0: int, size: int) -> torch.Tensor:
        """The noise std in HU at every pixel of the square patch at (z, y0, x0) of side `size`."""
        _, rows, cols = self.shape
        full = F.interpolate(self.std_map[z][None, None], size=(rows, cols), mode="bilinear", align_corners=False)
        return full[0, 0, y0:y0 + size, x0:x0 + size]

    def sample(self, z: int, y0: int, x0: int, size: int, generator: torch.Generator) -> torch.Tensor:
        """Synthetic noise in HU for the patch at (z, y0, x0): this scan's NPS and local amplitude."""
        k = self.kernel.shape[-1]
        white = torch.randn((1, 1, size + k - 1, size + k - 1), generator=generator)
        correlated = F.conv2d(white, self.kernel)[0, 0]
        return correlated * self.local_std(z, y0, x0, size)


@dataclass
class NoiseTexture:
    """The grain of a scan's noise: a kernel that makes it from white noise, and its std per unit index."""

    kernel: torch.Tensor  # (1, 1, K, K), output of unit variance for unit white noise
    index_to_std: float  # noise std / Immerkaer noise index for noise of this texture
    rois_used: int  # flat tissue ROIs the NPS came from; below MIN_ROIS the texture is the white fallback

    @property
    def measured(self) -> bool:
        """True when the texture comes from the scan's own flat tissue, not the white-noise fallback."""
        return self.rois_used >= MIN_ROIS


def estimate_noise_texture(volume_hu: np.ndarray, spacing_yx: Sequence[float] = (1.0, 1.0)) -> NoiseTexture:
    """Estimate the texture of this scan's noise from the NPS of its flattest soft-tissue ROIs.

    Args:
        volume_hu: the scan (Z, Y, X) in HU (any real dtype; not modified; at most MAX_ROI_SLICES slices,
            spread over the volume, are read).
        spacing_yx: pixel spacing (row, column) in mm (scales the NPS only; the kernel does not depend on it).

    Returns:
        The texture. Where no flat tissue is found (e.g. a phantom of air and bone), it falls back to white
        noise, whose std per unit index is 1 (`measured` is then False).
    """
    depth, rows, cols = volume_hu.shape
    picks = np.unique(np.linspace(0, depth - 1, min(depth, MAX_ROI_SLICES)).round().astype(int))
    sample = np.asarray(volume_hu[picks], dtype=np.float64)
    size = ROI_SIZE if min(rows, cols) >= 8 * ROI_SIZE else ROI_SIZE // 2  # small images: smaller ROIs
    # the band must scale with the noise: at 10 % dose a flat ROI of liver spans +-300 HU
    reach = ROI_NOISE_REACH * float(estimate_noise_level(torch.from_numpy(sample).float()[:, None],
                                                         band=INDEX_BAND_HU).median())
    rois = find_flat_tissue_rois(sample, size=size, count=ROI_COUNT, low=TISSUE_HU[0] - reach,
                                 high=TISSUE_HU[1] + reach, max_std=np.inf)
    if len(rois) < MIN_ROIS:
        return NoiseTexture(kernel=torch.ones((1, 1, 1, 1)), index_to_std=1.0, rois_used=len(rois))
    nps = _ramp_below(noise_power_spectrum_2d(sample, rois, spacing_yx, detrend="plane"), LOW_FREQUENCY)
    kernel = _kernel_from_nps(nps)
    return NoiseTexture(kernel=kernel, index_to_std=_index_to_std_ratio(kernel), rois_used=len(rois))


def estimate_noise_model(volume_hu: np.ndarray, spacing_yx: Sequence[float] = (1.0, 1.0)) -> ScanNoiseModel:
    """Estimate this scan's noise texture and amplitude.

    Args:
        volume_hu: the scan (Z, Y, X) in HU (any real dtype; not modified, not copied whole).
        spacing_yx: pixel spacing (row, column) in mm (scales the NPS only; the kernel does not depend on it).

    Returns:
        The noise model. Where no flat tissue is found (e.g. a phantom of air and bone), the texture falls
        back to white noise and the ratio to that of white noise (1).
    """
    texture = estimate_noise_texture(volume_hu, spacing_yx)
    depth, rows, cols = volume_hu.shape
    index = torch.stack([_tile_index(np.asarray(volume_hu[z], dtype=np.float32)) for z in range(depth)])
    std_map = _filled(index) * texture.index_to_std
    return ScanNoiseModel(kernel=texture.kernel, std_map=std_map, shape=(depth, rows, cols),
                          index_to_std=texture.index_to_std, rois_used=texture.rois_used)


def _kernel_from_nps(nps: np.ndarray) -> torch.Tensor:
    """A convolution kernel whose output, for unit white noise, has the NPS's shape and unit variance."""
    amplitude = np.sqrt(np.maximum(nps, 0.0))
    kernel = np.fft.fftshift(np.real(np.fft.ifft2(np.fft.ifftshift(amplitude))))
    kernel /= np.sqrt(np.sum(kernel**2))
    return torch.from_numpy(kernel.astype(np.float32))[None, None]


def _ramp_below(nps: np.ndarray, cutoff: float) -> np.ndarray:
    """The NPS with its values below `cutoff` (cycles/pixel) replaced by a ramp from the ring above to 0 at DC."""
    n = nps.shape[0]
    f = np.fft.fftshift(np.fft.fftfreq(n))
    radius = np.hypot(f[:, None], f[None, :])
    ring = (radius >= cutoff) & (radius < cutoff + 1.5 / n)
    low = radius < cutoff
    if not ring.any() or not low.any():
        return nps
    out = nps.copy()
    out[low] = nps[ring].mean() * radius[low] / cutoff
    return out


def _index_to_std_ratio(kernel: torch.Tensor) -> float:
    """Noise std per unit of Immerkaer index for noise of this texture (from a fixed synthetic field)."""
    k = kernel.shape[-1]
    white = torch.randn((1, 1, RATIO_FIELD + k - 1, RATIO_FIELD + k - 1), generator=torch.Generator().manual_seed(0))
    field = F.conv2d(white, kernel)
    index = float(estimate_noise_level(field, band=(-1e9, 1e9))[0])
    return float(field.std()) / index if index > 0 else 1.0


def _tile_index(section: np.ndarray) -> torch.Tensor:
    """The noise index (HU) of each TILE x TILE tile of one slice; NaN where too little tissue to tell."""
    rows, cols = section.shape
    padded_rows, padded_cols = -(-rows // TILE) * TILE, -(-cols // TILE) * TILE
    image = torch.from_numpy(section)[None, None]
    image = F.pad(image, (0, padded_cols - cols, 0, padded_rows - rows), mode="replicate")
    tiles = image.unfold(2, TILE, TILE).unfold(3, TILE, TILE)  # 1, 1, ty, tx, TILE, TILE
    ty, tx = tiles.shape[2], tiles.shape[3]
    tiles = tiles.reshape(ty * tx, 1, TILE, TILE)
    index = estimate_noise_level(tiles, band=INDEX_BAND_HU)
    inside = ((tiles >= INDEX_BAND_HU[0]) & (tiles <= INDEX_BAND_HU[1])).float().mean(dim=(1, 2, 3))
    index = torch.where(inside >= MIN_TILE_BAND_FRACTION, index, torch.full_like(index, float("nan")))
    return index.reshape(ty, tx)


def _filled(index: torch.Tensor) -> torch.Tensor:
    """NaN tiles filled from their neighbours (repeated 3x3 averaging), then with the median; smoothed."""
    values = index.clone()
    known = ~torch.isnan(values)
    fallback = float(values[known].median()) if known.any() else 0.0
    for _ in range(4):
        if bool(known.all()):
            break
        sums = F.avg_pool2d(torch.where(known, values, 0.0)[:, None], 3, 1, 1, count_include_pad=False)[:, 0]
        counts = F.avg_pool2d(known.float()[:, None], 3, 1, 1, count_include_pad=False)[:, 0]
        grown = torch.where(counts > 0, sums / counts.clamp_min(1e-6), torch.nan)
        values = torch.where(known, values, grown)
        known = ~torch.isnan(values)
    values = torch.where(known, values, torch.full_like(values, fallback))
    # a light 3x3 smoothing: a tile's index from 32 x 32 pixels scatters by several per cent
    return F.avg_pool2d(values[:, None], 3, 1, 1, count_include_pad=False)[:, 0]
