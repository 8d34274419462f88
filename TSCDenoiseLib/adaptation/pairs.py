"""Where training patches and held-out tiles come from, and the self-supervised pairs built from them.

The scan is split in-plane into tiles; every fourth tile along each row (shifted by one per row) is held out on
every slice, so no pixel of a held-out tile ever enters training, not even as an adjacent-slice target.
Training patches are drawn from the remaining area, preferring tissue (air teaches nothing).

Pairs (all in HU, y the scan, m synthetic noise of the scan's own kind from `noise.scan_model`):
- ``r2r`` (Recorrupted-to-Recorrupted, Pang et al. 2021; the Noisier2Noise family with its correction
  built into the target): input y + a·m, target y − m/a. The two noises are uncorrelated, so the loss is
  Noise2Noise's: its minimiser is the clean image, with no correction needed at inference;
- ``noisier`` (test-time pseudo pairs, Won et al. 2021): input y + m, target y (teaches to remove noise of
  the scan's kind and amplitude);
- ``sure``: no pair: the scan itself, with a probe of synthetic noise for the divergence term of Stein's
  unbiased risk estimate (`finetune`, `safeguard`);
- ``adjacent`` (Noise2Noise across slices): input slice z, target the mean of slices z − 1 and z + 1 (same
  anatomy to first order, independent noise); for thin slices only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence, Tuple

import numpy as np
import torch

from ..noise.scan_model import ScanNoiseModel

STRATEGIES = ("r2r", "noisier", "adjacent", "sure")
HELD_OUT_PERIOD = 4
TISSUE_HU = -500.0  # pixels above it count as tissue (for patch choice and the loss)
MIN_TISSUE_FRACTION = 0.3
MAX_TRIES = 50


@dataclass(frozen=True)
class Split:
    """The in-plane tiling of a (Z, Y, X) scan into training area and held-out tiles."""

    shape: Tuple[int, int, int]
    tile: int

    def held_out(self, ty: int, tx: int) -> bool:
        return (tx + ty) % HELD_OUT_PERIOD == 0  # diagonal stripes: a patch over 2 x 2 tiles still fits between

    def held_out_tiles(self) -> List[Tuple[int, int]]:
        """(y0, x0) of every whole held-out tile."""
        _, rows, cols = self.shape
        return [(ty * self.tile, tx * self.tile) for ty in range(rows // self.tile) for tx in range(cols // self.tile)
                if self.held_out(ty, tx)]

    def patch_allowed(self, y0: int, x0: int, size: int) -> bool:
        """True when the patch touches no held-out tile (size <= tile, so its corners see every tile)."""
        for y in (y0, y0 + size - 1):
            for x in (x0, x0 + size - 1):
                if self.held_out(y // self.tile, x // self.tile):
                    return False
        return True


def make_split(shape: Sequence[int], patch: int) -> Split:
    """A split whose tiles are at least the patch size and at least 4 along each in-plane axis."""
    _, rows, cols = shape
    tile = max(patch, min(rows, cols) // 8)
    return Split(tuple(int(s) for s in shape), int(tile))


def slice_range(strategy: str, depth: int) -> Tuple[int, int]:
    """The slices a training input may come from: all, or those with both neighbours (adjacent)."""
    return (1, depth - 1) if strategy == "adjacent" else (0, depth)


def sample_positions(volume_hu: np.ndarray, split: Split, strategy: str, size: int, count: int,
                     rng: np.random.Generator) -> List[Tuple[int, int, int]]:
    """`count` patch corners (z, y0, x0) in the training area, tissue-rich where the scan allows."""
    depth, rows, cols = volume_hu.shape
    z_low, z_high = slice_range(strategy, depth)
    positions = []
    for _ in range(count):
        best = None
        for _ in range(MAX_TRIES):
            z = int(rng.integers(z_low, z_high))
            y0, x0 = int(rng.integers(0, rows - size + 1)), int(rng.integers(0, cols - size + 1))
            if not split.patch_allowed(y0, x0, size):
                continue
            tissue = float(np.mean(volume_hu[z, y0:y0 + size, x0:x0 + size] > TISSUE_HU))
            if best is None or tissue > best[0]:
                best = (tissue, (z, y0, x0))
            if tissue >= MIN_TISSUE_FRACTION:
                break
        if best is None:  # unlucky draws: the first allowed corner in raster order (one always exists)
            best = (0.0, next((z_low, y, x) for y in range(rows - size + 1) for x in range(cols - size + 1)
                              if split.patch_allowed(y, x, size)))
        positions.append(best[1])
    return positions


def make_pair(volume_hu: np.ndarray, noise: ScanNoiseModel, strategy: str, position: Tuple[int, int, int],
              size: int, generator: torch.Generator, alpha: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """(input, target) patches in HU, float32 tensors (size, size), for one training position."""
    z, y0, x0 = position
    scan = torch.from_numpy(np.asarray(volume_hu[z, y0:y0 + size, x0:x0 + size], dtype=np.float32))
    if strategy == "adjacent":
        before = np.asarray(volume_hu[z - 1, y0:y0 + size, x0:x0 + size], dtype=np.float32)
        after = np.asarray(volume_hu[z + 1, y0:y0 + size, x0:x0 + size], dtype=np.float32)
        return scan, torch.from_numpy((before + after) / 2.0)
    extra = noise.sample(z, y0, x0, size, generator)
    if strategy == "sure":
        return scan, extra
    if strategy == "noisier":
        return scan + extra, scan
    if strategy == "r2r":
        return scan + alpha * extra, scan - extra / alpha
    raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
