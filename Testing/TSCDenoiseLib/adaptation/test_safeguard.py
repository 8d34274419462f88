"""The safeguard's decision on per-tile SURE scores: a paired test over held-out tiles, with the estimated
noise and with a weaker and a stronger one, each reported with its standard error."""

import math

import pytest
import torch

from TSCDenoiseLib.adaptation.safeguard import (CONSERVATIVE_VARIANCE, PROBES, SIGNIFICANCE, STRONGER_VARIANCE,
                                                 HeldOut, Scores, compare, score, with_real_probes)
from TSCDenoiseLib.adaptation.tensors import window_of


def _scores(data, noise_var, divergence):
    return Scores(torch.tensor(data), torch.tensor(noise_var), torch.tensor(divergence))


def test_the_standard_errors_are_the_spread_of_the_paired_tile_differences():
    original = _scores([900.0, 1100.0, 1000.0, 950.0, 1050.0, 1000.0], [1600.0] * 6, [300.0] * 6)
    adapted = _scores([1200.0, 1500.0, 1350.0, 1250.0, 1400.0, 1300.0], [1600.0] * 6,
                      [100.0, 110.0, 90.0, 95.0, 105.0, 100.0])
    verdict = compare(original, adapted)
    for scale, gain, error in ((1.0, verdict.original_risk - verdict.adapted_risk, verdict.standard_error),
                               (CONSERVATIVE_VARIANCE, verdict.conservative_gain, verdict.conservative_standard_error),
                               (STRONGER_VARIANCE, verdict.stronger_noise_gain, verdict.stronger_noise_standard_error)):
        difference = adapted.risk(scale) - original.risk(scale)
        assert gain == pytest.approx(-float(difference.mean()), rel=1e-6)
        assert error == pytest.approx(float(difference.std() / math.sqrt(6)), rel=1e-6)


def test_a_gain_that_rests_on_the_noise_estimate_is_rejected():
    # the adapted copy smooths more (divergence 200 HU^2 lower) and departs further from the scan (data 330
    # higher): with the estimated noise it wins by 70 HU^2, with 0.8 of it by 70 - 0.4 * 200 = -10
    tiles = 8
    spread = torch.tensor([5.0, -5.0, 3.0, -3.0, 4.0, -4.0, 2.0, -2.0])
    original = Scores(torch.full((tiles,), 1000.0), torch.full((tiles,), 1600.0), torch.full((tiles,), 400.0))
    adapted = Scores(1330.0 + spread, torch.full((tiles,), 1600.0), torch.full((tiles,), 200.0))
    verdict = compare(original, adapted)
    assert verdict.original_risk - verdict.adapted_risk == pytest.approx(70.0)
    assert verdict.original_risk - verdict.adapted_risk > SIGNIFICANCE * verdict.standard_error
    assert verdict.conservative_gain == pytest.approx(-10.0)
    assert math.isfinite(verdict.conservative_standard_error) and verdict.conservative_standard_error > 0
    assert not verdict.use_adapted
    # with the same margin at the weaker noise (a copy that did not smooth more), it is kept
    kept = compare(original, Scores(930.0 + spread, torch.full((tiles,), 1600.0), torch.full((tiles,), 400.0)))
    assert kept.use_adapted and kept.conservative_gain == pytest.approx(70.0)


def test_a_gain_that_needs_the_noise_to_be_no_stronger_than_estimated_is_rejected():
    # the adapted copy leaves noise in: it stays 300 HU^2 closer to the scan, but its divergence is 120 HU^2
    # higher, so its gain is 300 - 240 s at s x the estimated variance: +60 at 1, +108 at the weaker noise,
    # -48 at 1.45 (the noise model underestimated real chest noise by more than that on 14 % of the pairs)
    tiles = 8
    spread = torch.tensor([5.0, -5.0, 3.0, -3.0, 4.0, -4.0, 2.0, -2.0])
    variance = torch.full((tiles,), 1600.0)
    original = Scores(torch.full((tiles,), 1000.0), variance, torch.full((tiles,), 900.0))
    verdict = compare(original, Scores(700.0 + spread, variance, torch.full((tiles,), 1020.0)))
    assert verdict.original_risk - verdict.adapted_risk == pytest.approx(60.0)
    assert verdict.original_risk - verdict.adapted_risk > SIGNIFICANCE * verdict.standard_error
    assert verdict.conservative_gain == pytest.approx(108.0)
    assert verdict.stronger_noise_gain == pytest.approx(60.0 - 0.45 * 240.0)
    assert not verdict.use_adapted
    # a copy whose divergence rose by only 60 HU^2 still wins with the stronger noise, and is kept
    kept = compare(original, Scores(700.0 + spread, variance, torch.full((tiles,), 960.0)))
    assert kept.use_adapted and kept.stronger_noise_gain == pytest.approx(300.0 - 1.45 * 120.0)


def test_a_decrease_that_drives_the_risk_below_zero_is_not_credible():
    # Per tile the copy is 100 +- 60 HU^2 better, significantly so at both noise scales, but the original's
    # risk (40 HU^2) is within the test's uncertainty of zero: the copy's SURE risk would be negative, which
    # no squared error can be, so the noise model is wrong for this scan and the original is kept.
    tiles = 8
    spread = 60.0 * torch.tensor([1.0, -1.0, 1.0, -1.0, 1.0, -1.0, 1.0, -1.0])
    original = Scores(torch.full((tiles,), 1000.0), torch.full((tiles,), 1600.0), torch.full((tiles,), 320.0))
    adapted = Scores(900.0 + spread, torch.full((tiles,), 1600.0), torch.full((tiles,), 320.0))
    verdict = compare(original, adapted)
    assert verdict.original_risk == pytest.approx(40.0) and verdict.adapted_risk == pytest.approx(-60.0)
    assert verdict.original_risk - verdict.adapted_risk > SIGNIFICANCE * verdict.standard_error
    assert verdict.conservative_gain > SIGNIFICANCE * verdict.conservative_standard_error
    assert verdict.gain_db <= 0.0
    assert not verdict.use_adapted
    # the same per-tile decrease from an original risk well above the uncertainty is kept
    resolvable = compare(Scores(torch.full((tiles,), 1400.0), torch.full((tiles,), 1600.0), torch.full((tiles,), 320.0)),
                         Scores(1300.0 + spread, torch.full((tiles,), 1600.0), torch.full((tiles,), 320.0)))
    assert resolvable.use_adapted and resolvable.gain_db > 0.0


class _Shrink(torch.nn.Module):
    """f(y) = a y + (1 - a) c in HU (the window's normalization is affine, so also in its units)."""

    def __init__(self, share: float, centre_hu: float):
        super().__init__()
        self.share, self.centre = share, window_of(self).normalize(torch.tensor(centre_hu))

    def forward(self, x):
        return self.share * x + (1.0 - self.share) * self.centre


class _RowMean(torch.nn.Module):
    """Averages along rows: removes white noise, lets row-constant (streak-like) noise through untouched."""

    def forward(self, x):
        return x.mean(dim=-1, keepdim=True).expand_as(x)


def _streaks(tiles, size, std, seed):
    rows = torch.randn((tiles, size, 1), generator=torch.Generator().manual_seed(seed))
    return (rows * std).expand(tiles, size, size).contiguous()


def test_a_copy_that_passes_the_scans_own_noise_is_caught_by_the_real_noise_probes():
    # The scan's noise is streaks (constant along rows); the noise model, wrongly, white. The copy (a row
    # mean) removes white noise and passes the streaks: synthetic probes see it remove almost everything
    # and SURE prefers it to the original (which halves all noise), though its true error is 4x larger.
    # The original's residual on the neighbouring tiles is streaks too, and with those probes it loses.
    tiles, size, std, tissue = 12, 32, 30.0, 40.0
    scans = tissue + _streaks(tiles, size, std, 0)
    synthetic = std * torch.randn((tiles, PROBES, size, size), generator=torch.Generator().manual_seed(1))
    held = HeldOut(scans, synthetic, torch.ones((tiles, 1, size, size)), torch.full((tiles,), std**2),
                   neighbours=tissue + _streaks(tiles, size, std, 2))
    original, copy = _Shrink(0.5, tissue), _RowMean()
    cpu = torch.device("cpu")
    synthetic_only = compare(score(original, held, cpu), score(copy, held, cpu))
    assert synthetic_only.use_adapted  # what the safeguard did before it probed with the scan's own noise

    probed = with_real_probes(held, original, cpu)
    assert torch.allclose(probed.real_probes, 0.5 * (held.neighbours - tissue), atol=1e-3)
    before, after = score(original, probed, cpu), score(copy, probed, cpu)
    assert torch.allclose(before.real_pass, torch.full((tiles,), 0.5), atol=1e-3)
    assert torch.allclose(after.real_pass, torch.ones(tiles), atol=1e-3)
    verdict = compare(before, after)
    assert verdict.real_noise_gain == pytest.approx(-(std**2) * 0.75, rel=0.2)
    assert not verdict.use_adapted
    # a copy that shrinks every kind of noise further is still kept
    assert compare(before, score(_Shrink(0.2, tissue), probed, cpu)).use_adapted
