"""The safeguard: score a model on held-out tiles of the scan, with no reference, and pick the better one.

The criterion is Stein's unbiased risk estimate (SURE) for correlated Gaussian noise, on the scan itself:

    E|f(y) - x|^2 = E|f(y) - y|^2 - tr(S) + 2 tr(S J_f(y)),

S being the noise covariance (the scan's noise model) and tr(S J) estimated by Monte Carlo, b^T (f(y + e b)
- f(y)) / e with probes b ~ N(0, S) (Ramani et al. 2008). The data term uses the real scan: a model that
learned to remove only the synthetic noise of the training pairs (a Noisier2Noise/R2R failure when the
synthetic noise can be told apart from the scan's) returns the scan nearly unchanged, and SURE charges it
the full noise variance.

SURE is only as right as the noise covariance, and the noise model errs both ways. Where it overestimates
the noise (fine organ texture counted as noise), SURE favours over-smoothing; where it underestimates it,
SURE favours a model that leaves noise in; and a model fine-tuned on that same synthetic noise wins by the
error. So the adapted model is kept only when it wins by more than two standard errors of the per-tile
differences with the estimated noise and also with a noise CONSERVATIVE_VARIANCE times as strong (std
x 0.9) and STRONGER_VARIANCE times as strong (std x 1.2). The risk difference is linear in the variance
scale, so a copy that wins at both ends wins over the whole range on average. The range comes from 147
simulated training pairs whose noise is known (training/docs/adaptation/noise-model-bias.md; not the
evaluation cases): the estimate was 0.58-1.79 x the true variance (5th-95th percentile); it overestimated
by more than 1 / 0.8 on 14 % of them and underestimated by more than 1.45 on 15 %, mostly real chests. (A
stricter weaker end, 0.64, rejected adapted models 1.3-2.3 dB better on heads with a clean reference.)

Why the test is what it is (measured, training/docs/adaptation/README.md, "Safeguard power"):

- Unit: the held-out tile. Each tile is denoised on its own (the network sees no pixel outside it), so two
  tiles' SURE terms come from disjoint pixels, and the held-out tiles of a slice touch at most at a corner
  (diagonal stripes) while the noise correlates over a few pixels; the estimation errors of touching tiles
  correlated by 0.07 against clean references. Sub-tile blocks are no such units: they share the tile's
  network pass and noise (the halves of a tile correlated by 0.4-0.75 on chest and abdomen), and counting
  them as independent would fake up to 2x the power. The spread between tiles also holds the anatomy's
  heterogeneity, which makes the error conservative for a systematic sample of the scan such as the stripes.
- Probes: PROBES per tile, the same for both models (paired). Their Monte-Carlo share of the variance of
  the difference was at most 10 %: the spread between tiles is the rest, so more probes buy little.
- Which tiles: those with at least MIN_TISSUE tissue, each weighing the same. Taking every tile with some
  tissue, weighted by its tissue pixels (the per-pixel mean PSNR measures), plus the covariance of the same
  tile on adjacent slices, was tried: no decision changed on 18 evaluation rows, but the margin moved
  towards accepting the copies that were worse against their (noisy) references and away from a clean-
  reference head's better copy, so it was not kept.
- What limits the test is not its error: copies that were better against a clean reference but rejected
  have zero estimated gain at CONSERVATIVE_VARIANCE (it crosses zero at 0.78-0.81 x the noise variance),
  and copies worse only against a reference with its own noise become significant at about the same noise
  scales as the better ones. From the scan alone, the reference's noise is noise: no reference-free
  threshold keeps those apart, and SIGNIFICANCE and the two variance scales were not tuned on the evaluation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import List, Optional, Tuple

import numpy as np
import torch
from torch import nn

from ..noise.scan_model import ScanNoiseModel
from .pairs import Split, TISSUE_HU
from ..core.inference import _denoise_slab
from .tensors import tissue_weights, window_of

PROBES = 2
PROBE_SCALE = 0.05  # e: the probe perturbation, as a fraction of the local noise
MAX_TILES = 48
MIN_TISSUE = 0.3
SIGNIFICANCE = 2.0  # standard errors
CONSERVATIVE_VARIANCE = 0.8  # the weaker noise's variance, relative to the estimate (std x 0.9)
STRONGER_VARIANCE = 1.45  # the stronger noise's (std x 1.2)
MIN_REAL_PROBE_VARIANCE = 0.1  # a real-noise probe weaker than this share of the noise variance is not used


@dataclass
class HeldOut:
    """Held-out tiles of the scan (HU) with fixed probes: scans (M, T, T), probes (M, P, T, T), weights, variance."""

    scans: torch.Tensor
    probes: torch.Tensor
    weights: torch.Tensor  # (M, 1, T, T)
    noise_var: torch.Tensor  # (M,) mean noise variance over each tile's weighted pixels, HU^2
    neighbours: Optional[torch.Tensor] = None  # (M, T, T) the training tile beside each held-out tile, HU
    real_probes: Optional[torch.Tensor] = None  # (M, T, T) the original model's residual on the neighbour
    positions: Optional[List[Tuple[int, int, int]]] = None  # (z, y0, x0) of each held-out tile

    @property
    def tiles(self) -> int:
        return len(self.scans)


def held_out_tiles(volume_hu: np.ndarray, split: Split, noise: ScanNoiseModel, generator: torch.Generator) -> HeldOut:
    """Up to MAX_TILES tissue-rich held-out tiles, evenly spread over the slices, each with PROBES probes."""
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
        return HeldOut(empty, empty.unsqueeze(1), empty.unsqueeze(1), torch.zeros(0), empty, empty, [])
    scans = torch.stack([torch.from_numpy(np.asarray(volume_hu[z, y0:y0 + tile, x0:x0 + tile], dtype=np.float32))
                         for z, y0, x0 in candidates])
    neighbours = torch.stack([_neighbour(volume_hu, z, y0, x0, tile) for z, y0, x0 in candidates])
    probes = torch.stack([torch.stack([noise.sample(z, y0, x0, tile, generator) for _ in range(PROBES)])
                          for z, y0, x0 in candidates])
    weights = tissue_weights(scans)
    local_var = torch.stack([noise.local_std(z, y0, x0, tile) ** 2 for z, y0, x0 in candidates]).unsqueeze(1)
    noise_var = (local_var * weights).sum(dim=(1, 2, 3)) / weights.sum(dim=(1, 2, 3)).clamp_min(1.0)
    return HeldOut(scans, probes, weights, noise_var, neighbours, positions=candidates)


def _neighbour(volume_hu: np.ndarray, z: int, y0: int, x0: int, tile: int) -> torch.Tensor:
    """The left or right neighbour of a held-out tile (a training tile in the diagonal-stripe split), whichever
    holds more tissue."""
    options = [x for x in (x0 - tile, x0 + tile) if 0 <= x and x + tile <= volume_hu.shape[2]]
    tiles = [np.asarray(volume_hu[z, y0:y0 + tile, x:x + tile], dtype=np.float32) for x in options]
    return torch.from_numpy(max(tiles, key=lambda t: float(np.mean(t > TISSUE_HU))))


def with_real_probes(held: HeldOut, original: nn.Module, device: torch.device, batch: int = 8) -> HeldOut:
    """The held-out tiles with a probe of the scan's own noise for each: `original`'s residual (scan - output)
    on the neighbouring training tile. It carries the real noise's local texture and orientation, which
    the synthetic probes (a stationary Gaussian model) do not, so a copy that learned to tell the two
    apart is measured on the noise it actually passes."""
    if held.neighbours is None or held.tiles == 0:
        return held
    residuals = []
    with torch.no_grad():
        for start in range(0, held.tiles, batch):
            part = held.neighbours[start:start + batch]
            residuals.append(part - _denoise_hu(original, part, device))
    return replace(held, real_probes=torch.cat(residuals))


def _denoise_hu(model: nn.Module, hu: torch.Tensor, device: torch.device) -> torch.Tensor:
    """(N, T, T) HU -> the model's output in HU (N, T, T): inference's own slab step, in fp32."""
    return _denoise_slab(hu.to(device), model, window_of(model), None, torch.float32).cpu()


@dataclass
class Scores:
    """Per-tile SURE terms (HU^2, shape (tiles,)): |f(y) - y|^2, the noise variance and tr(S J) / n."""

    data: torch.Tensor
    noise_var: torch.Tensor
    divergence: torch.Tensor
    real_pass: Optional[torch.Tensor] = None  # share of the real-noise probe the model lets through, per tile

    def risk(self, variance_scale: float = 1.0) -> torch.Tensor:
        """SURE per tile with the noise covariance scaled by `variance_scale`."""
        return self.data - variance_scale * self.noise_var + 2.0 * variance_scale * self.divergence

    def real_noise_risk(self) -> Optional[torch.Tensor]:
        """SURE per tile with the divergence measured by the real-noise probes (None without them)."""
        if self.real_pass is None:
            return None
        return self.data - self.noise_var + 2.0 * self.noise_var * self.real_pass


def score(model: nn.Module, held: HeldOut, device: torch.device, batch: int = 8) -> Scores:
    """The SURE terms of `model` on every held-out tile."""
    datas, divergences, passes = [], [], []
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
            if held.real_probes is not None:
                passes.append(_real_pass(model, scans, denoised, weights, held.real_probes[part],
                                         held.noise_var[part], divergences[-1], device))
    if not datas:
        return Scores(torch.zeros(0), torch.zeros(0), torch.zeros(0))
    return Scores(torch.cat(datas), held.noise_var, torch.cat(divergences), torch.cat(passes) if passes else None)


def _real_pass(model: nn.Module, scans: torch.Tensor, denoised: torch.Tensor, weights: torch.Tensor,
               probes: torch.Tensor, noise_var: torch.Tensor, synthetic_divergence: torch.Tensor,
               device: torch.device) -> torch.Tensor:
    """b.(f(y + e b) - f(y)) / (e |b|^2) for the real-noise probes b, per tile; where a neighbour holds too
    little noise to probe with (mostly air), the synthetic probes' share stands in."""
    moved = _denoise_hu(model, scans + PROBE_SCALE * probes, device)
    energy = (probes ** 2 * weights).sum(dim=(1, 2))
    response = (probes * (moved - denoised) / PROBE_SCALE * weights).sum(dim=(1, 2))
    count = weights.sum(dim=(1, 2)).clamp_min(1.0)
    usable = energy / count >= MIN_REAL_PROBE_VARIANCE * noise_var
    return torch.where(usable, response / energy.clamp_min(1e-6), synthetic_divergence / noise_var.clamp_min(1e-6))


@dataclass
class Verdict:
    """The safeguard's comparison of the adapted and the original model on the held-out tiles."""

    use_adapted: bool
    original_risk: float  # SURE, HU^2 (mean over tiles)
    adapted_risk: float
    standard_error: float  # of the mean difference, HU^2
    conservative_gain: float = 0.0  # risk decrease with the weaker noise, HU^2 (must be significant too)
    conservative_standard_error: float = float("nan")  # its standard error, HU^2
    stronger_noise_gain: float = 0.0  # risk decrease with the stronger noise, HU^2 (must be significant too)
    stronger_noise_standard_error: float = float("nan")  # its standard error, HU^2
    real_noise_gain: float = float("nan")  # risk decrease with the real-noise probes' divergence, HU^2 (idem)
    real_noise_standard_error: float = float("nan")  # its standard error, HU^2

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


def _significantly_lower(original: torch.Tensor, adapted: torch.Tensor) -> Tuple[bool, float]:
    difference = adapted - original
    n = len(difference)
    if not bool(torch.isfinite(difference).all()):  # a diverged model (NaN or inf output) never wins
        return False, float("nan")
    error = float(difference.std() / math.sqrt(n)) if n > 1 else float("inf")
    return n > 1 and float(difference.mean()) < -SIGNIFICANCE * error, error


def compare(original: Scores, adapted: Scores) -> Verdict:
    """Keep the adapted model only if its risk is significantly lower with the estimated noise and with the
    weaker and the stronger one, and only if that decrease is credible: SURE estimates a mean squared
    error, so an original risk within its uncertainty of zero leaves nothing to gain that the test could
    resolve, and a decrease larger than it drives the adapted risk below zero, which shows the noise
    model is wrong for this scan (measured on a 16-slice mixed slab: a copy 4.6 dB worse passed the paired
    test with a reported gain of -3.2 dB). Then the original is kept."""
    wins, error = _significantly_lower(original.risk(), adapted.risk())
    wins_weaker, weaker_error = _significantly_lower(original.risk(CONSERVATIVE_VARIANCE),
                                                     adapted.risk(CONSERVATIVE_VARIANCE))
    wins_stronger, stronger_error = _significantly_lower(original.risk(STRONGER_VARIANCE),
                                                         adapted.risk(STRONGER_VARIANCE))
    wins_real, real_error, real_gain = True, float("nan"), float("nan")
    original_real, adapted_real = original.real_noise_risk(), adapted.real_noise_risk()
    if original_real is not None and adapted_real is not None:
        wins_real, real_error = _significantly_lower(original_real, adapted_real)
        real_gain = float((original_real - adapted_real).mean())
    adapted_risk = float(adapted.risk().mean())
    verdict = Verdict(wins and wins_weaker and wins_stronger and wins_real, float(original.risk().mean()),
                      adapted_risk if math.isfinite(adapted_risk) else float("inf"), error,
                      conservative_gain=_mean_decrease(original, adapted, CONSERVATIVE_VARIANCE),
                      conservative_standard_error=weaker_error,
                      stronger_noise_gain=_mean_decrease(original, adapted, STRONGER_VARIANCE),
                      stronger_noise_standard_error=stronger_error,
                      real_noise_gain=real_gain, real_noise_standard_error=real_error)
    verdict.use_adapted = verdict.use_adapted and verdict.gain_db > 0.0
    return verdict


def _mean_decrease(original: Scores, adapted: Scores, variance_scale: float) -> float:
    return float((original.risk(variance_scale) - adapted.risk(variance_scale)).mean())
