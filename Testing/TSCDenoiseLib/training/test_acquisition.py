import math

import numpy as np
import pytest

from TSCDenoiseLib.errors import InvalidInputError
from TSCDenoiseLib.training.acquisition import (FBP_FILTERS, Acquisition, AcquisitionDistribution, embed_in_body, resample_slices,
                                                simulate_acquisition)


def test_draws_cover_the_ranges_with_log_uniform_dose():
    distribution = AcquisitionDistribution()
    rng = np.random.default_rng(0)
    draws = [distribution.draw(rng, in_body=True) for _ in range(2000)]
    doses = np.array([d.dose_fraction for d in draws])
    assert doses.min() >= 0.05 - 1e-4 and doses.max() <= 0.5 + 1e-4
    # log-uniform: as many draws below the geometric mean (~0.158) as above it; uniform would put ~25 % below
    below = np.mean(doses < math.sqrt(0.05 * 0.5))
    assert 0.45 < below < 0.55
    spacings = np.array([d.pixel_spacing_mm for d in draws])
    assert spacings.min() >= 0.4 and spacings.max() <= 1.0 and spacings.std() > 0.15
    assert {d.fbp_filter for d in draws} == set(FBP_FILTERS)
    assert all(300 <= d.body_width_mm <= 400 for d in draws)
    assert distribution.draw(np.random.default_rng(1)).body_width_mm is None


def test_bad_ranges_are_refused():
    with pytest.raises(InvalidInputError, match="dose_range"):
        AcquisitionDistribution(dose_range=(0.0, 0.5))
    with pytest.raises(InvalidInputError, match="fbp_filters"):
        AcquisitionDistribution(fbp_filters=("sharpest",))


def test_resampling_changes_the_pixel_size_not_the_field_of_view():
    volume = np.zeros((2, 100, 80), np.float32)
    volume[:, 40:60, 30:50] = 100.0
    out = resample_slices(volume, 1.0, 0.5)
    assert out.shape == (2, 200, 160)
    assert out.min() >= 0.0 and out.max() <= 100.0  # spline overshoot clipped
    assert np.sum(out > 50) == pytest.approx(4 * np.sum(volume > 50), rel=0.05)


def test_crop_embedded_in_body_comes_back_unchanged():
    crop = np.random.default_rng(0).normal(0, 50, (60, 70)).astype(np.float32)
    body, region = embed_in_body(crop, 1.0, 340.0)
    assert np.array_equal(body[region], crop)
    assert body.shape[0] >= 340 and body[0, 0] == -1000.0
    centre_row = body[body.shape[0] // 2]
    assert np.sum(centre_row > -500) == pytest.approx(340, abs=3)  # 34 cm of tissue left to right


def test_body_around_a_crop_raises_the_noise_like_a_real_patient():
    crop = np.full((1, 64, 64), 40.0, np.float32)
    small = simulate_acquisition(crop, 1.0, Acquisition(0.25, "ram-lak", 1.0, None), seed=3)
    body = simulate_acquisition(crop, 1.0, Acquisition(0.25, "ram-lak", 1.0, 360.0), seed=3)
    noise_small = np.std(small[1] - small[0])
    noise_body = np.std(body[1] - body[0])
    assert noise_body > 3 * noise_small  # 36 cm of water attenuates far more than 6 cm
    again = simulate_acquisition(crop, 1.0, Acquisition(0.25, "ram-lak", 1.0, 360.0), seed=3)
    assert np.array_equal(again[1], body[1])
