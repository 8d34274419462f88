import pytest
import torch

from TSCDenoiseLib.networks.deform_conv import (
    ModulatedDeformConv2d,
    deform_conv2d,
    deform_conv2d_torch,
    resolve_backend,
    torchvision_deform_conv2d,
)

needs_torchvision = pytest.mark.skipif(torchvision_deform_conv2d() is None, reason="torchvision not importable")

CASES = [
    # n, c, h, w, out, kernel, stride, padding, dilation, offset groups
    (2, 8, 13, 17, 6, 3, 1, 1, 1, 1),
    (2, 8, 12, 12, 4, 3, 2, 1, 1, 2),
    (1, 4, 9, 7, 5, 3, 1, 2, 2, 4),
    (2, 6, 10, 11, 3, 1, 1, 0, 1, 1),
]


def _inputs(n, c, h, w, o, k, stride, pad, dil, groups, seed=0):
    g = torch.Generator().manual_seed(seed)
    out_h = (h + 2 * pad - dil * (k - 1) - 1) // stride + 1
    out_w = (w + 2 * pad - dil * (k - 1) - 1) // stride + 1
    x = torch.randn(n, c, h, w, generator=g)
    weight = torch.randn(o, c, k, k, generator=g)
    bias = torch.randn(o, generator=g)
    # offsets of several pixels send taps outside the image too: the zero-padding rule is exercised
    offset = torch.randn(n, 2 * groups * k * k, out_h, out_w, generator=g) * 3
    mask = torch.rand(n, groups * k * k, out_h, out_w, generator=g)
    return [t.requires_grad_() for t in (x, offset, weight, bias, mask)]


@needs_torchvision
@pytest.mark.parametrize("case", CASES)
def test_torch_backend_matches_torchvision_outputs_and_gradients(case):
    n, c, h, w, o, k, stride, pad, dil, groups = case
    x, offset, weight, bias, mask = _inputs(*case)
    kwargs = dict(stride=stride, padding=pad, dilation=dil, mask=mask)
    reference = torchvision_deform_conv2d()(x, offset, weight, bias, **kwargs)
    ours = deform_conv2d_torch(x, offset, weight, bias, **kwargs)
    torch.testing.assert_close(ours, reference, atol=1e-4, rtol=1e-4)
    upstream = torch.randn_like(reference)
    grads_ref = torch.autograd.grad(reference, (x, offset, weight, bias, mask), upstream)
    grads_ours = torch.autograd.grad(ours, (x, offset, weight, bias, mask), upstream)
    for name, a, b in zip(("x", "offset", "weight", "bias", "mask"), grads_ours, grads_ref):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4, msg=lambda m: f"grad of {name}: {m}")


def test_zero_offsets_and_unit_mask_equal_a_plain_convolution():
    x, _, weight, bias, _ = _inputs(2, 5, 11, 9, 4, 3, 1, 1, 1, 1)
    offset = torch.zeros(2, 18, 11, 9)
    mask = torch.ones(2, 9, 11, 9)
    expected = torch.nn.functional.conv2d(x, weight, bias, padding=1)
    torch.testing.assert_close(deform_conv2d_torch(x, offset, weight, bias, padding=1, mask=mask), expected)


def test_integer_offset_shifts_the_sampling_grid():
    x = torch.arange(1 * 1 * 6 * 6, dtype=torch.float32).view(1, 1, 6, 6)
    weight = torch.ones(1, 1, 1, 1)
    offset = torch.zeros(1, 2, 6, 6)
    offset[:, 1] = 1.0  # every tap samples one pixel to the right; the last column falls outside -> 0
    out = deform_conv2d_torch(x, offset, weight)
    torch.testing.assert_close(out[0, 0, :, :-1], x[0, 0, :, 1:])
    assert torch.all(out[0, 0, :, -1] == 0)


def test_auto_backend_uses_pure_torch_on_cpu_and_respects_explicit_choice():
    assert resolve_backend("auto", torch.device("cpu")) == "torch"
    assert resolve_backend("torch", torch.device("cuda")) == "torch"
    with pytest.raises(ValueError, match="Unknown deformable-convolution backend"):
        resolve_backend("cudnn", torch.device("cpu"))


@needs_torchvision
def test_layer_gives_same_result_with_either_backend():
    torch.manual_seed(0)
    layer = ModulatedDeformConv2d(6, 4)
    torch.nn.init.normal_(layer.offset_mask.weight, std=0.5)  # non-trivial offsets and masks
    x = torch.randn(2, 6, 10, 12)
    layer.backend = "torch"
    a = layer(x)
    layer.backend = "torchvision"
    b = layer(x)
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_dispatcher_runs_pure_torch_backend_when_asked():
    x, offset, weight, bias, mask = _inputs(1, 2, 5, 5, 3, 3, 1, 1, 1, 1)
    out = deform_conv2d(x, offset, weight, bias, padding=1, mask=mask, backend="torch")
    torch.testing.assert_close(out, deform_conv2d_torch(x, offset, weight, bias, padding=1, mask=mask))


@needs_torchvision
def test_chunked_columns_match_torchvision(monkeypatch):
    """A column budget below one sample's taps splits the taps (and samples) into chunks: same result."""
    import TSCDenoiseLib.networks.deform_conv as dcn

    case = (3, 8, 13, 17, 6, 3, 1, 1, 1, 2)
    x, offset, weight, bias, mask = _inputs(*case)
    expected = torchvision_deform_conv2d()(x, offset, weight, bias, padding=1, mask=mask)
    monkeypatch.setattr(dcn, "COLUMN_BUDGET_BYTES", 8 * 13 * 17 * 4 * 2)  # two taps of one sample per chunk
    got = deform_conv2d_torch(x, offset, weight, bias, 1, 1, 1, mask)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    got.sum().backward()
    assert x.grad is not None and offset.grad is not None and mask.grad is not None


def test_bf16_autocast_keeps_sampling_positions_exact():
    """Under bf16 autocast (bf16 features and offsets, as the offset conv gives them) the positions stay
    fp32: far from the origin (x ~ 190 px, where bf16's step is 1 px) the result stays as close to fp32
    as the bf16 GEMM allows (2e-3 here) instead of being sampled whole pixels off (8e-2 with bf16 positions)."""
    g = torch.Generator().manual_seed(0)
    x = torch.sin(torch.arange(200.0) / 4).expand(1, 4, 12, 200).contiguous()  # smooth: errors come from positions
    offset = torch.rand(1, 18, 12, 200, generator=g) * 0.9 + 0.05  # fractional: bf16 positions round them away
    weight = torch.rand(4, 4, 3, 3, generator=g) / 36
    exact = deform_conv2d_torch(x, offset, weight, None, 1, 1, 1, None)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        reduced = deform_conv2d_torch(x.bfloat16(), offset.bfloat16(), weight, None, 1, 1, 1, None)
    error = (reduced.float() - exact).abs()[..., 150:]
    assert error.max() < 0.01, f"max error {error.max():.4f} (output scale {exact.abs().max():.2f})"


def test_cpu_model_does_not_import_torchvision():
    """Building a TSCNet and running it on the CPU leaves torchvision unimported (seconds at start-up)."""
    import subprocess
    import sys

    code = ("import sys, torch\n"
            "if torch.cuda.is_available(): print('cuda'); raise SystemExit\n"
            "from TSCDenoiseLib.networks import TSCNet\n"
            "TSCNet(base_channels=4, num_attention_blocks=1, num_dems=1, attention_reduction=2)(torch.rand(1, 1, 8, 8))\n"
            "print('torchvision' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    if result.stdout.strip() == "cuda":
        pytest.skip("a CUDA GPU is visible: torchvision is imported for it")
    assert result.stdout.strip() == "False"
