"""The per-slice noise index a noise-conditioned TSC-Net feeds itself."""

import torch

from TSCDenoiseLib.networks.noise_level import estimate_noise_level


def _flat(std: float, size: int = 128, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return 0.25 + std * torch.randn(1, 1, size, size, generator=generator)


def test_white_noise_std_is_recovered_within_ten_percent():
    for std in (0.002, 0.01, 0.03):
        assert abs(estimate_noise_level(_flat(std)).item() / std - 1) < 0.1


def test_an_edge_does_not_raise_the_estimate():
    image = _flat(0.01)
    image[..., 64:] += 0.1  # a 400 HU step inside the band's neighbourhood
    assert abs(estimate_noise_level(image).item() / 0.01 - 1) < 0.1


def test_pixels_outside_the_band_are_ignored_and_each_slice_is_its_own():
    quiet, noisy = _flat(0.005), _flat(0.02, seed=1)
    noisy[..., :64] = 0.9 + 0.2 * torch.rand(1, 1, 128, 64)  # bone-bright, very rough: outside the band
    levels = estimate_noise_level(torch.cat([quiet, noisy]))
    assert abs(levels[0].item() / 0.005 - 1) < 0.1 and abs(levels[1].item() / 0.02 - 1) < 0.1
    assert estimate_noise_level(torch.full((1, 1, 32, 32), 0.9)).item() == 0.0  # nothing in the band


def test_the_estimate_is_the_same_under_bf16_autocast():
    image = _flat(0.004)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = estimate_noise_level(image)
    assert under_autocast.dtype == torch.float32
    assert torch.allclose(under_autocast, estimate_noise_level(image), rtol=1e-5)
