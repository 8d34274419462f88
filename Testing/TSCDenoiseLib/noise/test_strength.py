"""The automatic strength: read from the scan's noise texture, scaled by the model's k, 1.0 where it cannot
apply, and the default of denoise_volume."""

import numpy as np
import pytest
import torch

from TSCDenoiseLib.core.inference import denoise_volume
from TSCDenoiseLib.core.volume_checks import validate_strength
from TSCDenoiseLib.errors import InvalidInputError, InvalidVolumeError
from TSCDenoiseLib.noise.strength import DEFAULT_INDEX_PER_STD, METADATA_KEY, choose_strength, resolve_strength
from TSCDenoiseLib.training.phantom import make_phantom

SPACING = (1.0, 1.0, 2.0)


def _noisy(kernel, std=30.0, seed=1):
    """A torso phantom plus Gaussian noise of std `std` HU filtered by `kernel` (None: white)."""
    clean = make_phantom((3, 128, 128), kind="torso", spacing=SPACING, seed=2)
    white = torch.randn(clean.shape, generator=torch.Generator().manual_seed(seed))
    if kernel is not None:
        k = torch.tensor(kernel, dtype=torch.float32)
        k = (k / k.pow(2).sum().sqrt()).view(1, 1, *k.shape)
        white = torch.nn.functional.conv2d(white[:, None], k, padding=k.shape[-1] // 2)[:, 0]
    return (clean + std * white.numpy()).astype(np.float32)


SMOOTH = [[0.0, 1.0, 0.0], [1.0, 4.0, 1.0], [0.0, 1.0, 0.0]]  # neighbour correlation 0.4, as a smooth FBP kernel


def test_sharp_noise_gets_a_lower_strength_than_smooth_noise_of_the_same_std(tiny_noise_map_net):
    white = choose_strength(_noisy(None), tiny_noise_map_net)
    smooth = choose_strength(_noisy(SMOOTH), tiny_noise_map_net)
    # for white noise the Immerkaer index is the std itself, so the strength is k
    assert white.index_to_std == pytest.approx(1.0, rel=0.15)
    assert white.strength == pytest.approx(DEFAULT_INDEX_PER_STD * white.index_to_std, abs=1e-3)
    # smooth noise has a smaller index per unit std: the network would under-read it, so more strength
    assert smooth.index_to_std > 1.5 * white.index_to_std and smooth.strength > 1.5 * white.strength
    assert white.describe().startswith(f"strength auto: {white.strength:.2f} (")


def test_the_models_recorded_k_scales_the_strength(tiny_noise_map_net):
    scan = _noisy(SMOOTH)
    default = choose_strength(scan, tiny_noise_map_net)
    tiny_noise_map_net.checkpoint_metadata = {METADATA_KEY: 0.8}
    recorded = choose_strength(scan, tiny_noise_map_net)
    assert recorded.index_per_std == 0.8 and default.index_per_std == DEFAULT_INDEX_PER_STD
    assert recorded.strength == pytest.approx(default.strength * 0.8 / DEFAULT_INDEX_PER_STD, rel=1e-3)


def test_strength_is_one_without_a_noise_map_or_without_flat_tissue(tiny_net, tiny_noise_map_net):
    assert choose_strength(_noisy(None), tiny_net).strength == 1.0
    air_and_bone = np.where(np.arange(64)[None, :, None] < 32, -1000.0, 1200.0) * np.ones((2, 64, 64))
    air_and_bone += np.random.default_rng(0).normal(0, 20, air_and_bone.shape)
    choice = choose_strength(air_and_bone.astype(np.float32), tiny_noise_map_net)
    assert choice.strength == 1.0 and choice.index_to_std is None and "flat soft tissue" in choice.reason


def test_denoise_volume_defaults_to_the_automatic_strength(tiny_noise_map_net, tiny_net):
    scan = _noisy(SMOOTH)[:2, :64, :64]
    chosen = choose_strength(scan, tiny_noise_map_net).strength
    assert chosen != 1.0
    default = denoise_volume(scan, tiny_noise_map_net, device="cpu")
    assert np.array_equal(default, denoise_volume(scan, tiny_noise_map_net, device="cpu", strength=chosen))
    assert not np.array_equal(default, denoise_volume(scan, tiny_noise_map_net, device="cpu", strength=1.0))
    # a 2D slice is one slice; a model without a noise map runs at its own level
    assert np.array_equal(denoise_volume(scan[0], tiny_noise_map_net, device="cpu"),
                          denoise_volume(scan[0], tiny_noise_map_net, device="cpu",
                                         strength=choose_strength(scan[0], tiny_noise_map_net).strength))
    assert np.array_equal(denoise_volume(scan, tiny_net, device="cpu"),
                          denoise_volume(scan, tiny_net, device="cpu", strength=1.0))


@pytest.mark.parametrize("text", ["auto", "AUTO", " Auto "])
def test_auto_is_accepted_in_any_case(text, tiny_net):
    assert validate_strength(text, tiny_net) == "auto"


@pytest.mark.parametrize("bad", ["automatic", "", None, "0.5"])
def test_anything_else_than_auto_or_a_number_is_refused_with_the_choices(bad):
    with pytest.raises(InvalidInputError, match="strength must be 'auto' .* or a number from 0.25 to 2"):
        validate_strength(bad)


def test_resolve_strength_says_what_auto_chose_and_checks_the_volume_first(tiny_noise_map_net):
    heard = []
    scan = _noisy(SMOOTH)
    value = resolve_strength("auto", scan, tiny_noise_map_net, notify=heard.append)
    assert value == choose_strength(scan, tiny_noise_map_net).strength
    assert heard == [choose_strength(scan, tiny_noise_map_net).describe()]
    assert resolve_strength(0.5, scan, tiny_noise_map_net, notify=heard.append) == 0.5 and len(heard) == 1
    with pytest.raises(InvalidVolumeError, match="NaN"):
        resolve_strength("auto", np.full((2, 16, 16), np.nan, np.float32), tiny_noise_map_net)
