import numpy as np
import pytest
import torch

from TSCDenoiseLib.errors import DenoiseCancelled, InvalidVolumeError
from TSCDenoiseLib.core.inference import denoise_volume, estimate_slice_bytes, resolve_slab_size
from TSCDenoiseLib.core.intensity import HUWindow


def _ct(shape=(7, 23, 30), seed=0, dtype=np.float32):
    """A small CT-like volume in HU: air around a noisy water disc with a bone insert."""
    rng = np.random.default_rng(seed)
    z, y, x = shape
    yy, xx = np.mgrid[:y, :x]
    disc = (yy - y / 2) ** 2 + (xx - x / 2) ** 2 < (min(y, x) / 2.5) ** 2
    volume = np.where(disc, 0.0, -1000.0)[None].repeat(z, 0)
    volume[:, y // 2 - 2 : y // 2 + 2, x // 2 - 2 : x // 2 + 2] = 1200.0
    return (volume + rng.normal(0, 40, shape)).astype(dtype)


def _slice_by_slice(volume, model):
    window = HUWindow.from_any(getattr(model, "hu_window", None))
    x = torch.from_numpy(volume.astype(np.float32))
    clipped = x.clamp(window.low, window.high)
    with torch.no_grad():
        out = torch.stack([model(window.normalize(s.clone(), clip=False)[None, None])[0, 0] for s in clipped])
    return (window.denormalize(out) + (x - clipped)).numpy()


def test_equals_the_model_applied_slice_by_slice(tiny_net):
    volume = _ct()  # amp=False: the exact fp32 path (amp=True may compute in bf16 on this CPU)
    np.testing.assert_allclose(denoise_volume(volume, tiny_net, slab_size=3, device="cpu", amp=False),
                               _slice_by_slice(volume, tiny_net), atol=1e-3, rtol=0)


@pytest.mark.parametrize("slab", [1, 2, 5, 7, 100])
def test_result_does_not_depend_on_slab_size(tiny_net, slab):
    volume = _ct()
    reference = denoise_volume(volume, tiny_net, slab_size=4, device="cpu")
    np.testing.assert_allclose(denoise_volume(volume, tiny_net, slab_size=slab, device="cpu"), reference,
                               atol=1e-5 * 4096, rtol=0)  # 1e-5 of the [0, 1] range, i.e. 0.04 HU


def test_input_is_left_unchanged_and_output_is_a_new_array(tiny_net):
    volume = _ct()
    before = volume.copy()
    out = denoise_volume(volume, tiny_net, device="cpu")
    np.testing.assert_array_equal(volume, before)
    assert not np.shares_memory(out, volume)
    assert not np.array_equal(out, volume)


def test_out_receives_the_result_in_place(tiny_net):
    volume = _ct(dtype=np.int16)
    expected = denoise_volume(volume, tiny_net, slab_size=2, device="cpu")
    out = np.full_like(volume, -5)
    returned = denoise_volume(volume, tiny_net, slab_size=2, device="cpu", out=out)
    assert returned is out
    np.testing.assert_array_equal(out, expected)
    plane = np.empty((23, 30), np.int16)
    assert denoise_volume(volume[3], tiny_net, device="cpu", out=plane) is plane
    np.testing.assert_array_equal(plane, expected[3])


@pytest.mark.parametrize("make_out, match", [
    (lambda v: np.empty(v.shape, np.float32), "shape and dtype"),
    (lambda v: np.empty(v.shape[1:], v.dtype), "shape and dtype"),
    (lambda v: np.empty(v.shape[::-1], v.dtype).T, "C-contiguous"),
    (lambda v: v, "shares memory"),
])
def test_bad_out_is_refused_before_any_work(tiny_net, make_out, match):
    volume = _ct(dtype=np.int16)
    before = volume.copy()
    with pytest.raises(InvalidVolumeError, match=match):
        denoise_volume(volume, tiny_net, device="cpu", out=make_out(volume))
    np.testing.assert_array_equal(volume, before)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int16, np.int32])
def test_output_keeps_shape_and_dtype(tiny_net, dtype):
    volume = _ct(dtype=dtype)
    out = denoise_volume(volume, tiny_net, device="cpu")
    assert out.shape == volume.shape and out.dtype == volume.dtype
    if dtype in (np.int16, np.int32):  # integer output = rounded float result
        reference = denoise_volume(volume.astype(np.float32), tiny_net, device="cpu")
        assert np.abs(out - reference).max() <= 0.5 + 1e-3


def test_int16_output_is_clipped_not_wrapped(tiny_config):
    from TSCDenoiseLib.networks import TSCNet

    torch.manual_seed(0)
    net = TSCNet(**tiny_config).eval()
    torch.nn.init.zeros_(net.head.weight)
    torch.nn.init.constant_(net.head.bias, -100.0)  # predicted "noise" of -100 -> output far above range
    volume = _ct(dtype=np.int16)
    out = denoise_volume(volume, net, device="cpu")
    assert out.min() >= -32768 and out.max() == 32767  # saturates instead of wrapping negative


def test_a_2d_slice_is_one_slice(tiny_net):
    volume = _ct()
    out = denoise_volume(volume[3], tiny_net, device="cpu")
    assert out.shape == volume.shape[1:]
    np.testing.assert_allclose(out, denoise_volume(volume, tiny_net, device="cpu")[3], atol=1e-3)


def test_values_outside_the_window_keep_their_hu(tiny_net):
    volume = _ct()
    volume[:, 0, 0] = -3024.0  # padding outside the field of view
    volume[:, 1, 1] = 8000.0  # metal beyond the window
    out = denoise_volume(volume, tiny_net, device="cpu")
    assert np.all(out[:, 0, 0] < -2000) and np.all(out[:, 1, 1] > 7000)


def test_cancel_stops_with_denoise_cancelled(tiny_net):
    calls = []

    def cancel():
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(DenoiseCancelled, match="cancelled after 4 of 7"):
        denoise_volume(_ct(), tiny_net, slab_size=2, device="cpu", cancel=cancel)


def test_progress_is_monotonic_and_ends_at_total(tiny_net):
    seen = []
    denoise_volume(_ct(), tiny_net, slab_size=3, device="cpu", progress=lambda done, total: seen.append((done, total)))
    assert seen == [(3, 7), (6, 7), (7, 7)]


def test_model_is_not_moved_or_switched_to_eval(tiny_net):
    tiny_net.train()
    denoise_volume(_ct(), tiny_net, device="cpu")
    assert tiny_net.training


@pytest.mark.parametrize(
    "volume,match",
    [
        (np.zeros((2, 3, 8, 8), np.float32) - 500, "3D volume"),
        (np.zeros((0, 8, 8), np.float32), "empty"),
        (np.full((2, 8, 8), np.nan, np.float32), "NaN"),
        (np.ones((2, 8, 8), bool), "dtype bool"),
        (np.ones((2, 8, 8), np.complex64), "dtype complex64"),
        (np.random.default_rng(0).random((2, 8, 8)).astype(np.float32), "normalized intensities"),
        (np.random.default_rng(0).integers(0, 4095, (2, 8, 8)).astype(np.uint16), "like MR"),
        (np.full((2, 8, 8), -1e6, np.float32), "beyond any CT scale"),
        ([[0.0, -1000.0]], "numpy array"),
    ],
)
def test_bad_input_gets_a_clear_error(tiny_net, volume, match):
    with pytest.raises(InvalidVolumeError, match=match):
        denoise_volume(volume, tiny_net, device="cpu")


def test_hu_check_can_be_skipped_for_unusual_but_valid_ct(tiny_net):
    soft_tissue_only = np.full((2, 12, 12), 40.0, np.float32)  # a crop with no air at all
    with pytest.raises(InvalidVolumeError):
        denoise_volume(soft_tissue_only, tiny_net, device="cpu")
    assert denoise_volume(soft_tissue_only, tiny_net, device="cpu", check_hu=False).shape == (2, 12, 12)


@pytest.mark.parametrize("slab", [0, -3, 2.5, "big", True])
def test_bad_slab_size_is_rejected(tiny_net, slab):
    with pytest.raises(InvalidVolumeError, match="slab_size"):
        denoise_volume(_ct(), tiny_net, slab_size=slab, device="cpu")


def test_auto_slab_size_fits_the_budget(tiny_net):
    per_slice = estimate_slice_bytes(tiny_net, 512, 512)
    auto = resolve_slab_size("auto", (300, 512, 512), torch.device("cpu"), tiny_net, amp=True)
    assert 1 <= auto <= 64 and auto * per_slice <= 256 << 20 or auto == 1
    assert resolve_slab_size("auto", (3, 512, 512), torch.device("cpu"), tiny_net, amp=True) <= 3


# --- precision: amp=True takes bf16 on CPUs with bf16 instructions; amp=False is the exact fp32 path ---


@pytest.fixture(scope="module")
def real_ct_crop():
    """(low-dose, normal-dose) int16 HU: 2 slices x 96 x 96 of the bundled Cranium sample (real CT)."""
    import SimpleITK as sitk

    from TSCDenoiseLib.core.resources import SAMPLE_NORMAL_DOSE_FILE, sample_path

    low = sitk.GetArrayFromImage(sitk.ReadImage(str(sample_path())))
    normal = sitk.GetArrayFromImage(sitk.ReadImage(str(sample_path(SAMPLE_NORMAL_DOSE_FILE))))
    crop = (slice(8, 10), slice(80, 176), slice(80, 176))
    return low[crop].astype(np.int16), normal[crop].astype(np.int16)


@pytest.fixture(scope="module")
def default_model():
    from TSCDenoiseLib.core.checkpoint import load_model

    return load_model(device="cpu")


@pytest.fixture
def bf16_cpu(monkeypatch):
    """Make the CPU count as bf16-capable, so the bf16 path runs here whatever the CPU (bf16 is exact
    in its arithmetic everywhere; only its speed depends on the instructions)."""
    from TSCDenoiseLib.core import device

    monkeypatch.setattr(device, "cpu_prefers_bf16", lambda: True)


def test_bf16_path_keeps_the_quality_of_fp32_on_real_ct(real_ct_crop, default_model, bf16_cpu):
    from TSCDenoiseLib.core.metrics import psnr

    low, normal = real_ct_crop
    volume = low.astype(np.float32)  # float output: the bf16 differences are not hidden by rounding to 1 HU
    fp32 = denoise_volume(volume, default_model, device="cpu", amp=False)
    bf16 = denoise_volume(volume, default_model, device="cpu", amp=True)
    assert not np.array_equal(bf16, fp32), "amp=True did not take the bf16 path"
    diff = np.abs(bf16.astype(np.float64) - fp32)
    assert diff.mean() <= 0.5, f"mean |bf16 - fp32| = {diff.mean():.3f} HU"
    for index in range(volume.shape[0]):
        delta = psnr(bf16[index], normal[index]) - psnr(fp32[index], normal[index])
        assert abs(delta) <= 0.05, f"slice {index}: PSNR changed by {delta:.3f} dB"
    assert psnr(fp32, normal) > psnr(low, normal)  # the model does denoise this crop (the check is not vacuous)


def test_amp_false_is_the_exact_fp32_path(real_ct_crop, default_model, bf16_cpu):
    low, _ = real_ct_crop
    volume = low.astype(np.float32)
    window = HUWindow.from_any(default_model.hu_window)
    x = torch.from_numpy(volume)
    clipped = x.clamp(window.low, window.high)
    with torch.inference_mode():
        y = default_model(window.normalize(clipped, clip=False).unsqueeze(1))
    expected = (window.denormalize(y.squeeze(1)) + (x - clipped)).numpy()
    np.testing.assert_array_equal(denoise_volume(volume, default_model, device="cpu", amp=False), expected)


def test_autocast_dtype_follows_the_cpu_capability(monkeypatch):
    from TSCDenoiseLib.core import device

    cpu = torch.device("cpu")
    assert device.autocast_dtype(cpu, amp=False) is None
    monkeypatch.setattr(device, "cpu_prefers_bf16", lambda: False)
    assert device.autocast_dtype(cpu, amp=True) is None
    monkeypatch.setattr(device, "cpu_prefers_bf16", lambda: True)
    assert device.autocast_dtype(cpu, amp=True) is torch.bfloat16
    assert device.autocast_dtype(torch.device("mps"), amp=True) is None


def test_bf16_capability_matches_the_cpu_flags():
    from TSCDenoiseLib.core.device import cpu_has_amx, cpu_has_fast_bf16, cpu_prefers_bf16, _cpu_flags

    flags = _cpu_flags()
    if not flags:
        pytest.skip("no /proc/cpuinfo flags on this system")
    mkldnn = torch.backends.mkldnn.is_available()
    assert cpu_has_amx() == (mkldnn and "amx_tile" in flags)
    assert cpu_has_fast_bf16() == (mkldnn and bool(flags & {"avx512_bf16", "amx_bf16", "amx_tile"}))
    assert cpu_prefers_bf16() == cpu_has_amx()  # AVX512-BF16 alone measured slower than fp32 channels-last


def test_fast_path_without_bf16_is_fp32_channels_last(real_ct_crop, default_model, monkeypatch):
    """amp=True on a CPU where bf16 does not pay: fp32 in channels-last layout, same values as NCHW fp32."""
    from TSCDenoiseLib.core import device

    monkeypatch.setattr(device, "cpu_prefers_bf16", lambda: False)
    volume = real_ct_crop[0].astype(np.float32)
    fast = denoise_volume(volume, default_model, device="cpu", amp=True)
    exact = denoise_volume(volume, default_model, device="cpu", amp=False)
    np.testing.assert_allclose(fast, exact, atol=0.01, rtol=0)  # HU: summation order only


def test_fast_path_follows_weight_changes_between_calls(tiny_net, monkeypatch):
    """The channels-last copy kept between calls is renewed when the caller changes the weights."""
    from TSCDenoiseLib.core import device

    monkeypatch.setattr(device, "cpu_prefers_bf16", lambda: False)  # fp32 channels-last: comparable to amp=False
    volume = _ct()
    first = denoise_volume(volume, tiny_net, device="cpu")
    with torch.no_grad():
        tiny_net.head.bias.add_(0.01)  # +41 HU everywhere in the window
    second = denoise_volume(volume, tiny_net, device="cpu")
    np.testing.assert_allclose(second, denoise_volume(volume, tiny_net, device="cpu", amp=False), atol=0.5, rtol=0)
    assert np.abs(second - first).mean() > 10


# --- strength: how much to denoise (the noise index a noise-map model sees, times strength) -----------------

from TSCDenoiseLib.errors import InvalidInputError  # noqa: E402


@pytest.mark.parametrize("amp", [False, True])
def test_strength_one_is_bitwise_the_default_result(real_ct_crop, default_model, amp):
    volume = real_ct_crop[0]
    default = denoise_volume(volume, default_model, device="cpu", amp=amp)
    np.testing.assert_array_equal(denoise_volume(volume, default_model, device="cpu", amp=amp, strength=1.0), default)
    assert not np.array_equal(denoise_volume(volume, default_model, device="cpu", amp=amp, strength=0.7), default)


def test_a_larger_strength_removes_more_from_a_noisy_phantom(default_model):
    """Measured on 12 phantom cases (simulated low dose at 10-25 % and 40 HU white noise, with and without
    texture): std(input - output) in flat soft tissue rose with strength in every one. (The residual against
    the clean phantom did NOT fall with strength: out of its training range the network also blurs the organ
    edges and adds its own structure, so "removes more" is what is asserted.)"""
    from TSCDenoiseLib.core.metrics import flat_soft_tissue_mask
    from TSCDenoiseLib.training.phantom import make_phantom

    clean = make_phantom((3, 96, 96), kind="torso", spacing=(3.5, 3.5, 2.0), seed=3)
    noisy = (clean + np.random.default_rng(0).normal(0, 40, clean.shape)).astype(np.float32)
    flat = flat_soft_tissue_mask(clean)
    assert flat.sum() > 1000
    removed = {s: float(np.std((noisy - denoise_volume(noisy, default_model, device="cpu", strength=s))[flat]))
               for s in (0.5, 1.0, 1.5)}
    assert removed[0.5] + 2.0 < removed[1.0] < removed[1.5] - 2.0, removed  # measured 38.1, 45.2, 50.9 HU


@pytest.mark.parametrize("amp", [False, True])
def test_strength_is_applied_during_the_run_and_undone_after_it_even_when_it_raises(default_model, amp):
    from TSCDenoiseLib.core import inference

    state = {k: v.clone() for k, v in default_model.state_dict().items()}
    seen = []
    volume = _ct((3, 24, 24))
    own_level = denoise_volume(volume, default_model, device="cpu", amp=amp, strength=1.0)

    def runner():  # amp=False on the CPU runs the caller's model itself; amp=True its cached channels-last copy
        return inference._CHANNELS_LAST_COPIES[default_model][1] if amp else default_model

    with pytest.raises(DenoiseCancelled):
        denoise_volume(volume, default_model, device="cpu", amp=amp, slab_size=1, strength=0.5,
                       progress=lambda done, total: seen.append(runner().noise_map_strength), cancel=lambda: bool(seen))
    assert seen == [0.5]
    assert runner().noise_map_strength == 1.0 and default_model.noise_map_strength == 1.0
    assert all(torch.equal(v, state[k]) for k, v in default_model.state_dict().items())
    np.testing.assert_array_equal(denoise_volume(volume, default_model, device="cpu", amp=amp, strength=1.0), own_level)


@pytest.mark.parametrize("strength", [0.2, 2.5, float("nan"), float("inf"), "1", True, None])
def test_a_strength_out_of_range_is_one_clear_error(default_model, strength):
    with pytest.raises(InvalidInputError, match=r"strength must be 'auto' \(from the scan's noise texture\) or a number "
                                                r"from 0.25 to 2"):
        denoise_volume(_ct((1, 16, 16)), default_model, device="cpu", strength=strength)


def test_strength_other_than_one_needs_a_noise_map_model(tiny_net):
    volume = _ct((2, 16, 16))
    with pytest.raises(InvalidInputError, match="no noise-map input; use the default model, or strength 'auto' or 1.0"):
        denoise_volume(volume, tiny_net, device="cpu", strength=0.8)
    np.testing.assert_array_equal(denoise_volume(volume, tiny_net, device="cpu", strength=1.0),
                                  denoise_volume(volume, tiny_net, device="cpu"))


@pytest.mark.parametrize("strength", [0.25, 2.0])
def test_the_range_ends_are_accepted_and_change_the_result(tiny_noise_map_net, strength):
    volume = _ct((2, 16, 16))
    assert not np.array_equal(denoise_volume(volume, tiny_noise_map_net, device="cpu", strength=strength),
                              denoise_volume(volume, tiny_noise_map_net, device="cpu"))
