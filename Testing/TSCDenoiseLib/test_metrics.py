"""Image-quality figures: values that can be worked out by hand."""

import numpy as np
import pytest

from TSCDenoiseLib.metrics import flat_soft_tissue_mask, noise_std, psnr, rmse


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
