"""The safeguard: score a model on held-out tiles of the scan, with no reference, and pick the better one.

The criterion is Stein's unbiased risk estimate (SURE) for correlated Gaussian noise, on the scan itself:

    E|f(y) - x|^2 = E|f(y) - y|^2 - tr(S) + 2 tr(S J_f(y)),

S being the noise covariance (the scan's noise model) and tr(S J) estimated by Monte Carlo, b^T (f(y + e b)
- f(y)) / e with probes b ~ N(0, S) (Ramani et al. 2008). The data term uses the real scan: a model that
learned to remove only the synthetic noise of the training pairs (a Noisier2Noise/R2R failure when the
synthetic noise can be told apart from the scan's) returns the scan nearly unchanged, and SURE charges it
the full noise variance.

SURE is only as right as the noise covariance. Where the noise model overestimates the noise (fine organ
texture counted as noise), SURE favours over-smoothing, and a model fine-tuned on that same synthetic noise
wins by it. So the adapted model is kept only when it wins by more than two standard errors of the per-tile
differences both with the estimated noise and with a noise CONSERVATIVE_VARIANCE times as strong (std
x 0.9), which tilts the comparison towards less smoothing. (The noise model measured 5-20 % below the true
noise std on real CT at simulated low dose, training/docs/adaptation/README.md; a stricter 0.64 rejected
adapted models that were 1.3-2.3 dB better on heads with a clean reference.)

The test, and why it is sound (training/docs/adaptation/README.md, "Safeguard power"):

- Estimand: the mean risk difference per held-out TISSUE PIXEL (what PSNR measures). Every held-out tile
  with at least MIN_TISSUE tissue counts, weighted by its tissue pixels (a ratio estimator); a tile that is
  mostly air carries little weight instead of being dropped, so small or air-rich slices keep their data.
- Unit: the held-out tile. Each tile is denoised on its own (the network sees no pixel outside it), so
  two tiles' SURE terms come from disjoint pixels; held-out tiles of a slice touch at most at a corner (the
  diagonal stripes), and the in-plane noise correlates over a few pixels only. Measured against clean
  references (head-693), the estimation errors of touching tiles correlated by 0.07. Sub-tile blocks are
  no such units: they share the tile's network pass and noise, and the two halves of a tile correlated by
  0.4-0.75 on chest and abdomen, so counting them as independent would fake up to 2x the power.
- The spread between tiles also holds the anatomy's heterogeneity (edges gain more than flat tissue); for
  a systematic sample of the scan (the stripes) that makes the error conservative, not optimistic.
- Slices: the same place on adjacent slices can share noise (helical CT reconstructed with overlapping
  slices), so their covariance is added to the error when it is positive (never subtracted: a negative
  sample covariance of a few pairs is mostly chance, and subtracting it would make the test less
  conservative).
- Probes: PROBES per tile, the same for both models (the comparison is paired). Their Monte-Carlo share of
  the variance of the difference was at most 6 % on the measured cases, so more probes buy little.
- The thresholds (SIGNIFICANCE, CONSERVATIVE_VARIANCE) are not tuned on the evaluation cases. (Copies that
  were better against a clean reference but rejected had a zero estimated gain at CONSERVATIVE_VARIANCE:
  no error estimate lets those through, and copies worse only against a noisy reference look as good.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from .noise_model import ScanNoiseModel
from .pairs import Split, TISSUE_HU
from ..core.inference import _denoise_slab
from .tensors import tissue_weights, window_of

PROBES = 2
PROBE_SCALE = 0.05  # e: the probe perturbation, as a fraction of the local noise
MAX_TILES = 48
MIN_TISSUE = 0.05  # fraction of a tile's pixels; tiles count by their tissue pixels (air-rich ones barely)
SIGNIFICANCE = 2.0  # standard errors
CONSERVATIVE_VARIANCE = 0.8  # the second check's noise variance, relative to the estimate (std x 0.9)


@dataclass
class HeldOut:
    """Held-out tiles of the scan (HU) with fixed probes: scans (M, T, T), probes (M, P, T, T), weights, variance,
    and where each tile is (for the adjacent-slice term of the standard error)."""

    scans: torch.Tensor
    probes: torch.Tensor
    weights: torch.Tensor  # (M, 1, T, T)
    noise_var: torch.Tensor  # (M,) mean noise variance over each tile's weighted pixels, HU^2
    positions: Tuple[Tuple[int, int, int], ...] = ()  # (z, y0, x0) of each tile

    @property
    def tiles(self) -> int:
        return len(self.scans)


def held_out_tiles(volume_hu: np.ndarray, split: Split, noise: ScanNoiseModel, generator: torch.Generator) -> HeldOut:
    """Up to MAX_TILES held-out tiles with tissue, evenly spread over the slices, each with PROBES probes."""
    tile = split.tile
    candidates: List[Tuple[int, int, int]] = []
    for z in range(volume_hu.shape[0]):
        for y0, x0 in split.held_out_tiles():
            if np.mean(volume_hu[z, y0:y0 + tile, x0:x0 + tile] > TISSUE_HU) >= MIN_TISSUE:
                candidates.append((z, y0, x0))
    if len(candidates) > MAX_TILES:
        keep = np.linspace(0, len(candidates) - 1, MAX_TILES).round().astype(int)
        candidates = [candidates[i] for i in keep]
    if not candidates:
        empty = torch.zeros((0, tile, tile))
        return HeldOut(empty, empty.unsqueeze(1), empty.unsqueeze(1), torch.zeros(0), ())
    scans = torch.stack([torch.from_numpy(np.asarray(volume_hu[z, y0:y0 + tile, x0:x0 + tile], dtype=np.float32))
                         for z, y0, x0 in candidates])
    probes = torch.stack([torch.stack([noise.sample(z, y0, x0, tile, generator) for _ in range(PROBES)])
                          for z, y0, x0 in candidates])
    weights = tissue_weights(scans)
    local_var = torch.stack([noise.local_std(z, y0, x0, tile) ** 2 for z, y0, x0 in candidates]).unsqueeze(1)
    noise_var = (local_var * weights).sum(dim=(1, 2, 3)) / weights.sum(dim=(1, 2, 3)).clamp_min(1.0)
    return HeldOut(scans, probes, weights, noise_var, tuple(candidates))


def _denoise_hu(model: nn.Module, hu: torch.Tensor, device: torch.device) -> torch.Tensor:
    """(N, T, T) HU -> the model's output in HU (N, T, T): inference's own slab step, in fp32."""
    return _denoise_slab(hu.to(device), model, window_of(model), None, torch.float32).cpu()


@dataclass
class Scores:
    """Per-tile SURE terms (HU^2, shape (tiles,)): |f(y) - y|^2, the noise variance and tr(S J) / n, each a mean
    over the tile's tissue pixels; `pixels` (the tissue pixels per tile) and `neighbours` (pairs of tiles at
    the same place on adjacent slices) come from the held-out set."""

    data: torch.Tensor
    noise_var: torch.Tensor
    divergence: torch.Tensor
    pixels: Optional[torch.Tensor] = None  # None: every tile weighs the same
    neighbours: Tuple[Tuple[int, int], ...] = ()

    def risk(self, variance_scale: float = 1.0) -> torch.Tensor:
        """SURE per tile with the noise covariance scaled by `variance_scale`."""
        return self.data - variance_scale * self.noise_var + 2.0 * variance_scale * self.divergence


def score(model: nn.Module, held: HeldOut, device: torch.device, batch: int = 8) -> Scores:
    """The SURE terms of `model` on every held-out tile."""
    datas, divergences = [], []
    with torch.no_grad():
        for start in range(0, held.tiles, batch):
            part = slice(start, start + batch)
            scans, weights = held.scans[part], held.weights[part][:, 0]
            denoised = _denoise_hu(model, scans, device)
            count = weights.sum(dim=(1, 2)).clamp_min(1.0)
            data = (((denoised - scans) ** 2) * weights).sum(dim=(1, 2)) / count
            divergence = torch.zeros(len(scans))
            for k in range(held.probes.shape[1]):
                probe = held.probes[part][:, k]
                moved = _denoise_hu(model, scans + PROBE_SCALE * probe, device)
                divergence += ((probe * (moved - denoised) / PROBE_SCALE) * weights).sum(dim=(1, 2)) / count
            datas.append(data)
            divergences.append(divergence / held.probes.shape[1])
    pixels = held.weights.sum(dim=(1, 2, 3))
    neighbours = stacked_pairs(held.positions)
    if not datas:
        return Scores(torch.zeros(0), torch.zeros(0), torch.zeros(0), pixels, neighbours)
    return Scores(torch.cat(datas), held.noise_var, torch.cat(divergences), pixels, neighbours)


def stacked_pairs(positions: Sequence[Tuple[int, int, int]]) -> Tuple[Tuple[int, int], ...]:
    """Index pairs (i < j) of tiles at the same place on adjacent slices (their noise may be correlated)."""
    where = {tuple(int(v) for v in p): i for i, p in enumerate(positions)}
    pairs = []
    for (z, y0, x0), i in where.items():
        j = where.get((z + 1, y0, x0))
        if j is not None:
            pairs.append((min(i, j), max(i, j)))
    return tuple(sorted(pairs))


@dataclass
class Verdict:
    """The safeguard's comparison of the adapted and the original model on the held-out tiles."""

    use_adapted: bool
    original_risk: float  # SURE, HU^2 (mean per held-out tissue pixel)
    adapted_risk: float
    standard_error: float  # of the mean difference, HU^2
    conservative_gain: float = 0.0  # risk decrease with the weaker noise, HU^2 (must be significant too)
    conservative_standard_error: float = float("nan")

    @property
    def original_rmse_hu(self) -> float:
        return _rmse(self.original_risk)

    @property
    def adapted_rmse_hu(self) -> float:
        return _rmse(self.adapted_risk)

    @property
    def gain_db(self) -> float:
        """Estimated held-out gain of the adapted model, dB of mean squared error (positive: better).

        A risk estimate cannot be trusted below its own uncertainty: the adapted risk counts as at least
        SIGNIFICANCE standard errors, so a SURE estimate near zero reports a bounded gain, not +35 dB.
        """
        if not math.isfinite(self.adapted_rmse_hu):
            return float("-inf")
        uncertainty = SIGNIFICANCE * self.standard_error if math.isfinite(self.standard_error) else 0.0
        return 20.0 * math.log10(self.original_rmse_hu / _rmse(max(self.adapted_risk, uncertainty)))


def _rmse(risk: float) -> float:
    """sqrt of a risk, with a 1 HU^2 floor (SURE can dip below 0 by chance); inf for a diverged model."""
    return math.sqrt(max(risk, 1.0)) if math.isfinite(risk) else float("inf")


def _weights(n: int, pixels: Optional[torch.Tensor]) -> torch.Tensor:
    return torch.ones(n, dtype=torch.float64) if pixels is None else pixels.double().clamp_min(0.0)


def weighted_mean(values: torch.Tensor, pixels: Optional[torch.Tensor] = None) -> float:
    """The mean per tissue pixel of per-tile means `values` (nan for no tile, non-finite if any value is)."""
    if len(values) == 0:
        return float("nan")
    weights = _weights(len(values), pixels)
    return float((weights * values.double()).sum() / weights.sum().clamp_min(1e-12))


def weighted_difference(original: torch.Tensor, adapted: torch.Tensor, pixels: Optional[torch.Tensor] = None,
                        neighbours: Sequence[Tuple[int, int]] = ()) -> Tuple[float, float]:
    """The mean of `adapted - original` per tissue pixel over the tiles, and its standard error.

    The tiles are the independent units (a ratio estimator, tile totals around the weighted mean); the
    positive part of the covariance of the `neighbours` pairs is added (see the module docstring).

    Returns:
        (mean, standard error), HU^2; the error is inf for fewer than 2 tiles, the mean nan for a
        non-finite difference (a diverged model).
    """
    difference = (adapted - original).double()
    n = len(difference)
    if not bool(torch.isfinite(difference).all()):
        return float("nan"), float("nan")
    mean = weighted_mean(difference, pixels)
    if n < 2:
        return mean, float("inf")
    weights = _weights(n, pixels)
    total = float(weights.sum())
    residual = weights * (difference - mean)  # each tile's share of the total's deviation
    variance = float((residual**2).sum())
    shared = sum(float(residual[i] * residual[j]) for i, j in neighbours)
    variance = (variance + 2.0 * max(shared, 0.0)) * n / (n - 1)
    return mean, math.sqrt(variance) / total


def _significantly_lower(original: torch.Tensor, adapted: torch.Tensor, pixels: Optional[torch.Tensor],
                         neighbours: Sequence[Tuple[int, int]]) -> Tuple[bool, float, float]:
    mean, error = weighted_difference(original, adapted, pixels, neighbours)
    if not math.isfinite(mean):  # a diverged model (NaN or inf output) never wins
        return False, mean, float("nan")
    return math.isfinite(error) and mean < -SIGNIFICANCE * error, mean, error


def compare(original: Scores, adapted: Scores) -> Verdict:
    """Keep the adapted model only if its risk is significantly lower, with the estimated noise and with
    the conservative (weaker) one."""
    pixels, neighbours = original.pixels, original.neighbours
    wins, _, error = _significantly_lower(original.risk(), adapted.risk(), pixels, neighbours)
    still_wins, conservative_difference, conservative_error = _significantly_lower(
        original.risk(CONSERVATIVE_VARIANCE), adapted.risk(CONSERVATIVE_VARIANCE), pixels, neighbours)
    original_risk, adapted_risk = weighted_mean(original.risk(), pixels), weighted_mean(adapted.risk(), pixels)
    return Verdict(wins and still_wins, original_risk, adapted_risk if math.isfinite(adapted_risk) else float("inf"),
                   error, conservative_gain=-conservative_difference, conservative_standard_error=conservative_error)
