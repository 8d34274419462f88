import math

import numpy as np
import pytest

from TSCDenoiseLib.errors import InvalidInputError
from TSCDenoiseLib.training.acquisition import (FBP_FILTERS, Acquisition, AcquisitionDistribution, body_around, resample_slices,
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


def test_body_around_a_crop_is_body_sized_and_leaves_the_crop_area_empty():
    body, spacing = body_around((60, 70), 0.5, 340.0, aspect=0.7)
    assert spacing == 1.0
    centre = body.shape[0] // 2
    assert body[centre, centre] == -1000.0  # the crop's own area is left to the crop
    row = body[centre]
    assert np.sum(row > -500) == pytest.approx(340 - 35, abs=3)  # 34 cm wide minus the 3.5 cm hole
    column = body[:, body.shape[1] // 2 - 30]  # 30 mm left of the centre, beside the hole
    assert np.sum(column > -500) == pytest.approx(0.7 * 340 * np.sqrt(1 - (30 / 170) ** 2), abs=3)


def test_surrounding_line_integrals_give_the_noise_of_the_crop_pasted_into_the_body():
    """The fast path (crop projected alone + the body's line integrals) against the crop pasted into a
    full-body canvas and simulated whole: the same noise level in the crop."""
    from TSCDenoiseLib.training.simulation import LowDoseParameters, LowDoseSimulator

    crop = np.full((48, 48), 40.0, np.float32)
    crop[10:20, 10:30] = -800.0  # some lung
    simulator = LowDoseSimulator(LowDoseParameters(dose_fraction=0.25), threads=1)
    body, body_spacing = body_around(crop.shape, 1.0, 300.0, aspect=0.75)
    surrounding = simulator.line_integrals(body, body_spacing)
    fast = [simulator.simulate_slice(crop, 1.0, np.random.default_rng(s), surrounding) - crop for s in range(3)]
    canvas = np.where(body > -500, 30.0, -1000.0).astype(np.float32)
    top = (canvas.shape[0] - 48) // 2
    canvas[top:top + 48, top:top + 48] = crop
    full = [simulator.simulate_slice(canvas, 1.0, np.random.default_rng(s))[top:top + 48, top:top + 48] - crop
            for s in range(3)]
    assert np.std(fast) == pytest.approx(np.std(full), rel=0.1)
    alone = simulator.simulate_slice(crop, 1.0, np.random.default_rng(0)) - crop
    assert np.std(fast) > 3 * np.std(alone)  # the body matters


def test_body_around_a_crop_raises_the_noise_like_a_real_patient():
    crop = np.full((1, 64, 64), 40.0, np.float32)
    small = simulate_acquisition(crop, 1.0, Acquisition(0.25, "ram-lak", 1.0, None), seed=3)
    body = simulate_acquisition(crop, 1.0, Acquisition(0.25, "ram-lak", 1.0, 360.0), seed=3)
    noise_small = np.std(small[1] - small[0])
    noise_body = np.std(body[1] - body[0])
    assert noise_body > 3 * noise_small  # 36 cm of water attenuates far more than 6 cm
    again = simulate_acquisition(crop, 1.0, Acquisition(0.25, "ram-lak", 1.0, 360.0), seed=3)
    assert np.array_equal(again[1], body[1])


def test_reference_dose_is_drawn_only_when_asked_and_leaves_other_draws_unchanged():
    plain = [AcquisitionDistribution().draw(np.random.default_rng(5)) for _ in range(3)]
    assert all(d.reference_dose_fraction is None for d in plain)
    assert "reference_dose_fraction" not in plain[0].as_dict()
    textured = AcquisitionDistribution(reference_dose_range=(0.2, 1.0), reference_noise_probability=0.5)
    rng = np.random.default_rng(5)
    draws = [textured.draw(rng) for _ in range(400)]
    assert draws[0].dose_fraction == plain[0].dose_fraction  # the reference is drawn after the rest
    references = np.array([d.reference_dose_fraction for d in draws if d.reference_dose_fraction is not None])
    assert 0.4 < len(references) / len(draws) < 0.6
    assert references.min() >= 0.2 - 1e-4 and references.max() <= 1.0 + 1e-4
    with pytest.raises(InvalidInputError, match="reference_dose_range"):
        AcquisitionDistribution(reference_dose_range=(0.5, 0.2))


def test_a_reference_dose_puts_noise_in_the_target_and_more_in_the_low_dose():
    slab = np.full((2, 64, 64), 40.0, np.float32)
    clean_target, clean_low = simulate_acquisition(slab, 1.0, Acquisition(0.25, "ram-lak", 1.0, 300.0), seed=4)
    target, low = simulate_acquisition(slab, 1.0, Acquisition(0.25, "ram-lak", 1.0, 300.0, 0.3), seed=4)
    assert np.array_equal(clean_target, slab)  # no reference dose: the source is the target
    target_noise = np.std(target - slab)
    added = np.std(low - target)
    assert target_noise > 0.3 * np.std(clean_low - slab)  # clinical-like grain in the target
    # the low dose adds the noise of 0.25 x 0.3 of the flux: (1 / 0.3) ** 0.5 = 1.8 x the unaltered addition
    assert added == pytest.approx(np.std(clean_low - slab) * (1 / 0.3) ** 0.5, rel=0.15)
    assert abs(np.corrcoef((target - slab).ravel(), (low - target).ravel())[0, 1]) < 0.1  # independent draws
