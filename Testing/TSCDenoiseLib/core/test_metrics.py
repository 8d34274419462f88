"""Image-quality figures: values that can be worked out by hand."""

from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from TSCDenoiseLib.io import read_ct
from TSCDenoiseLib.core.metrics import (
    SquareRoi,
    edge_gradient_ratio,
    find_flat_tissue_rois,
    flat_soft_tissue_mask,
    noise_power_spectrum,
    noise_power_spectrum_2d,
    noise_std,
    nps_summary,
    nps_variance,
    psnr,
    rmse,
)

SAMPLE = Path(__file__).resolve().parents[3] / "Resources" / "SampleData" / "cranium"


def test_rmse_and_noise_std_of_known_differences():
    reference = np.zeros((4, 8, 8), np.int16)
    image = np.full((4, 8, 8), 3.0, np.float32)
    assert rmse(image, reference) == pytest.approx(3.0)
    mask = np.zeros_like(reference, bool)
    mask[0] = True
    image[0, :, :4] = -1.0
    assert rmse(image, reference, mask) == pytest.approx(np.sqrt((16 + 16 * 9) / 32) / 1, rel=1e-6)
    assert noise_std(image, reference, mask) == pytest.approx(2.0)  # values -1 and 3, half each: std 2


def test_psnr_uses_the_window_as_data_range_and_clips():
    reference = np.zeros((16, 16), np.float32)
    image = reference + 4.0
    assert psnr(image, reference) == pytest.approx(20 * np.log10(400 / 4))
    assert psnr(reference, reference) == float("inf")
    outside = reference - 1000.0
    # both clip to -160 HU outside the window, so only the in-window error counts
    assert psnr(outside - 50.0, outside) == float("inf")


def test_flat_mask_keeps_only_tissue_away_from_edges():
    reference = np.full((1, 32, 32), -1000.0, np.float32)
    reference[0, 8:24, 8:24] = 40.0
    flat = flat_soft_tissue_mask(reference, margin=3)
    assert flat[0, 11:21, 11:21].all()
    assert not flat[0, 8:11].any() and not flat[0, :, 21:].any()
    assert flat.sum() == 10 * 10


# --- texture-aware figures: ROI finder, noise power spectrum, edge sharpness ---------------------

SIGMA = 10.0  # HU of the synthetic white noise


def _white_noise(shape=(16, 128, 128), seed=0):
    return np.random.default_rng(seed).normal(0.0, SIGMA, shape)


def _grid_rois(shape=(16, 128, 128), size=32):
    return [SquareRoi(z, y, x, size) for z in range(shape[0])
            for y in range(0, shape[1] - size + 1, size) for x in range(0, shape[2] - size + 1, size)]


def _overlap(a, b):
    return a.z == b.z and abs(a.y - b.y) < a.size and abs(a.x - b.x) < a.size


def test_white_noise_has_a_flat_nps_at_sigma_squared_times_pixel_area():
    noise, rois = _white_noise(), _grid_rois()
    freqs, nps = noise_power_spectrum(noise, rois, 1.0)
    np.testing.assert_allclose(freqs, np.arange(17) / 32)  # rings every 1/32 cycles/mm up to Nyquist
    assert nps[0] == pytest.approx(0.0, abs=1e-9)  # the ROI mean is removed
    print(f"white NPS / sigma²: {np.round(nps[1:] / SIGMA**2, 3)}")
    assert np.abs(nps[1:] / nps[1:].mean() - 1).max() < 0.10
    assert nps[1:].mean() == pytest.approx(SIGMA**2 * 1.0 * 1.0, rel=0.03)


def test_nps_integral_is_the_noise_variance():
    noise, rois = _white_noise(), _grid_rois()
    smooth = gaussian_filter(noise, (0, 1.5, 1.5))
    for field in (noise, smooth):
        detrended = np.stack([field[roi.index()] - field[roi.index()].mean() for roi in rois])
        nps_2d = noise_power_spectrum_2d(field, rois, (0.7, 0.7))
        # Parseval: exact (up to rounding) for the mean-detrended ROIs
        assert nps_variance(nps_2d, (0.7, 0.7)) == pytest.approx(np.mean(detrended**2), rel=1e-9)
    assert nps_variance(noise_power_spectrum_2d(noise, rois), 1.0) == pytest.approx(SIGMA**2, rel=0.02)
    # the radial integral covers the Nyquist disc: all of smoothed noise, π/4 of white noise's square
    smooth_variance = np.mean([np.var(smooth[roi.index()]) for roi in rois])
    assert nps_summary(*noise_power_spectrum(smooth, rois)).variance == pytest.approx(smooth_variance, rel=0.05)
    white_disc = nps_summary(*noise_power_spectrum(noise, rois)).variance
    assert white_disc == pytest.approx(np.pi / 4 * SIGMA**2 * (16.5 / 16) ** 2, rel=0.03)


def test_smoothed_noise_follows_the_gaussian_transfer_function():
    noise, rois = _white_noise(), _grid_rois()
    s = 1.5  # pixels
    freqs, nps = noise_power_spectrum(gaussian_filter(noise, (0, s, s)), rois, 1.0)
    white = nps_summary(*noise_power_spectrum(noise, rois, 1.0))
    smooth = nps_summary(freqs, nps)
    assert smooth.peak_frequency == pytest.approx(1 / 32)  # the first ring after zero frequency
    assert smooth.mean_frequency < 0.4 * white.mean_frequency
    assert white.mean_frequency == pytest.approx(8.5 / 32, rel=0.03)  # flat on rings 1..16 of 1/32
    model = SIGMA**2 * np.exp(-4 * np.pi**2 * s**2 * freqs**2)
    compared = (freqs > 0) & (model > 0.05 * SIGMA**2)
    assert compared.sum() >= 4
    np.testing.assert_allclose(nps[compared], model[compared], rtol=0.2)
    slope = np.polyfit(freqs[compared] ** 2, np.log(nps[compared]), 1)[0]
    assert np.sqrt(-slope / (4 * np.pi**2)) == pytest.approx(s, rel=0.1)


def test_pixel_spacing_scales_frequencies_and_level():
    noise, rois = _white_noise((4, 64, 64)), _grid_rois((4, 64, 64))
    freqs_1, nps_1 = noise_power_spectrum(noise, rois, 1.0)
    freqs_half, nps_half = noise_power_spectrum(noise, rois, 0.5)
    np.testing.assert_allclose(freqs_half, 2 * freqs_1)
    np.testing.assert_allclose(nps_half, nps_1 / 4)
    assert nps_summary(freqs_half, nps_half).mean_frequency == pytest.approx(
        2 * nps_summary(freqs_1, nps_1).mean_frequency)
    # (Δy, Δx) = (0.5, 1) or (1, 0.5): level σ²·0.5 mm², rings 1/16 cycles/mm wide up to Nyquist 0.5
    for spacing in ((0.5, 1.0), (1.0, 0.5)):
        freqs, nps = noise_power_spectrum(noise, rois, spacing)
        np.testing.assert_allclose(freqs, np.arange(9) / 16)
        assert nps[1:].mean() == pytest.approx(SIGMA**2 * 0.5, rel=0.05)
    nps_2d = noise_power_spectrum_2d(noise, rois, (0.5, 1.0))
    assert nps_variance(nps_2d, (0.5, 1.0)) == pytest.approx(nps_variance(nps_2d * 2, 1.0))


def test_plane_detrending_removes_a_ramp_that_the_mean_leaves():
    noise, rois = _white_noise((4, 64, 64)), _grid_rois((4, 64, 64))
    ramp = noise + 3.0 * np.arange(64)[None, None, :] + 1.0 * np.arange(64)[None, :, None]
    _, by_mean = noise_power_spectrum(ramp, rois, detrend="mean")
    _, by_plane = noise_power_spectrum(ramp, rois, detrend="plane")
    _, white = noise_power_spectrum(noise, rois, detrend="plane")
    assert by_mean[1] > 10 * SIGMA**2
    np.testing.assert_allclose(by_plane, white, rtol=1e-9, atol=1e-9)
    assert np.abs(by_plane[3:] / SIGMA**2 - 1).max() < 0.25
    with pytest.raises(ValueError):
        noise_power_spectrum(noise, rois, detrend="linear")
    with pytest.raises(ValueError):
        noise_power_spectrum(noise, [SquareRoi(0, 0, 0, 32), SquareRoi(0, 32, 32, 16)])


def _disc_phantom():
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:128, 0:128]
    disc = (yy - 64) ** 2 + (xx - 64) ** 2 <= 50**2
    volume = np.where(disc, 40.0, -1000.0)[None].repeat(3, axis=0)
    volume[:, 56:72, 56:72] = 300.0  # a bone-like insert inside the disc
    return volume + rng.normal(0.0, 5.0, volume.shape), disc


def test_roi_finder_stays_inside_flat_tissue_and_away_from_edges():
    volume, disc = _disc_phantom()
    rois = find_flat_tissue_rois(volume, size=16, count=20)
    assert len(rois) == 20
    assert rois == find_flat_tissue_rois(volume, size=16, count=20)
    insert = np.zeros_like(disc)
    insert[56:72, 56:72] = True
    for roi in rois:
        window = (slice(roi.y, roi.y + 16), slice(roi.x, roi.x + 16))
        assert disc[window].all() and not insert[window].any()
        assert volume[roi.index()].std() < 7.0
    assert not any(_overlap(a, b) for i, a in enumerate(rois) for b in rois[i + 1:])
    # greedy order: the flattest first
    stds = [volume[roi.index()].std() for roi in rois]
    assert stds == sorted(stds)


def test_roi_finder_returns_an_empty_list_when_nothing_is_flat():
    volume, _ = _disc_phantom()
    assert find_flat_tissue_rois(np.full((2, 64, 64), -1000.0)) == []
    assert find_flat_tissue_rois(volume, size=16, max_std=1.0) == []  # 5 HU noise everywhere
    assert find_flat_tissue_rois(volume, size=200) == []
    many = find_flat_tissue_rois(volume, size=32, count=1000)
    assert 0 < len(many) < 1000  # as many as fit, then it stops


def test_roi_finder_on_the_sample_ct():
    reference, geometry = read_ct(SAMPLE / "ndct_test.nii.gz")
    rois = find_flat_tissue_rois(reference, size=32)
    stds = [float(reference[roi.index()].std()) for roi in rois]
    print(f"{len(rois)} ROIs on {reference.shape}: " + ", ".join(
        f"z{r.z} y{r.y} x{r.x} ({s:.1f} HU)" for r, s in zip(rois, stds)))
    assert len(rois) >= 5
    assert max(stds) < 15.0
    for roi in rois:
        assert reference[roi.index()].min() >= -150 and reference[roi.index()].max() <= 150
    assert not any(_overlap(a, b) for i, a in enumerate(rois) for b in rois[i + 1:])


def _edge_phantom():
    yy, xx = np.mgrid[0:64, 0:64]
    image = np.where((yy - 32) ** 2 + (xx - 32) ** 2 <= 24**2, 40.0, -1000.0)
    image[24:40, 24:40] = 500.0
    return np.stack([image, image.T])


def test_edge_gradient_ratio_tells_kept_blurred_and_sharpened_edges():
    reference = _edge_phantom()
    assert edge_gradient_ratio(reference, reference) == pytest.approx(1.0)
    blurred = gaussian_filter(reference, (0, 1.5, 1.5))
    sharpened = reference + 1.0 * (reference - gaussian_filter(reference, (0, 1.0, 1.0)))
    ratios = edge_gradient_ratio(blurred, reference), edge_gradient_ratio(sharpened, reference)
    print(f"edge ratio blurred {ratios[0]:.3f}, sharpened {ratios[1]:.3f}")
    assert ratios[0] < 0.8 and ratios[1] > 1.2
    noisy = reference + np.random.default_rng(2).normal(0.0, 30.0, reference.shape)
    assert edge_gradient_ratio(noisy, reference) == pytest.approx(1.0, abs=0.03)
    with pytest.raises(ValueError):
        edge_gradient_ratio(reference, np.zeros_like(reference))


def test_edge_gradient_ratio_is_not_raised_by_noise_at_faint_edges():
    yy, xx = np.mgrid[0:64, 0:64]
    reference = np.where((yy - 32) ** 2 + (xx - 32) ** 2 <= 24**2, 50.0, 0.0)[None].repeat(8, axis=0)
    noisy = reference + np.random.default_rng(0).normal(0.0, 60.0, reference.shape)
    # noise gradients as large as the edge's: their magnitudes would add about 25 %, their projections average out
    ratio = edge_gradient_ratio(noisy, reference, mask=np.ones_like(reference, bool), percentile=95.0)
    assert ratio == pytest.approx(1.0, abs=0.06)
