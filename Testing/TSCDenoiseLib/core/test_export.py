import numpy as np
import pytest
import torch

from TSCDenoiseLib.errors import OutputExistsError
from TSCDenoiseLib.core.export import ExportError, export_model, load_exported

SHAPES = [(1, 1, 32, 32), (3, 1, 40, 24), (2, 1, 37, 29)]


@pytest.fixture
def deforming_net(tiny_net):
    torch.nn.init.normal_(tiny_net.dems[0].deform_conv.offset_mask.weight, std=0.3)  # non-trivial offsets
    return tiny_net


@pytest.mark.slow
def test_torch_export_gives_the_same_output_on_other_shapes(deforming_net, tmp_path):
    path = export_model(deforming_net, tmp_path / "model.pt2", example_shape=(2, 1, 30, 30))
    exported = load_exported(path)
    for shape in SHAPES:
        x = torch.rand(*shape)
        with torch.no_grad():
            torch.testing.assert_close(exported(x), deforming_net(x), atol=1e-5, rtol=1e-5)
    assert deforming_net.dems[0].deform_conv.backend == "auto"  # the runtime backend is restored
    with pytest.raises(OutputExistsError):
        export_model(deforming_net, path)


@pytest.mark.slow
def test_onnx_export_runs_in_onnxruntime_with_the_same_output(deforming_net, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    path = export_model(deforming_net, tmp_path / "model.onnx", format="onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for shape in [(1, 1, 32, 32), (3, 1, 40, 24)]:  # the graph takes multiples of 4
        x = torch.rand(*shape)
        (y,) = session.run(None, {"slices": x.numpy()})
        with torch.no_grad():
            np.testing.assert_allclose(y, deforming_net(x).numpy(), atol=1e-5)
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_unknown_format_is_rejected(tiny_net, tmp_path):
    with pytest.raises(ExportError, match="torch_export"):
        export_model(tiny_net, tmp_path / "m.tflite", format="tflite")
    assert not (tmp_path / "m.tflite").exists()


@pytest.mark.slow
def test_torchscript_export_gives_the_same_output_on_other_shapes(deforming_net, tmp_path):
    path = export_model(deforming_net, tmp_path / "model.ts", format="torchscript", example_shape=(2, 1, 32, 32))
    exported = load_exported(path)
    for shape in SHAPES:
        x = torch.rand(*shape)
        with torch.no_grad():
            torch.testing.assert_close(exported(x), deforming_net(x), atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_a_fresh_network_traces_in_a_fresh_process():
    """Importing torchvision inside the first forward used to break torch.jit.trace (ckpt_export, CLI export)."""
    import subprocess
    import sys

    code = ("import torch; from TSCDenoiseLib.networks import TSCNet; "
            "net = TSCNet(base_channels=8, num_attention_blocks=1, num_dems=1, attention_reduction=4).eval(); "
            "torch.no_grad().__enter__(); torch.jit.trace(net, torch.rand(2, 1, 64, 64), check_trace=False)")
    result = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-500:]


@pytest.mark.slow
def test_noise_conditioned_network_exports_to_onnx_with_each_slices_own_level(tiny_config, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from TSCDenoiseLib.networks import TSCNet

    torch.manual_seed(0)
    net = TSCNet(**{**tiny_config, "noise_map": True}).eval()
    with torch.no_grad():
        net.stem[0].weight[:, 1] = 0.5  # the noise channel must matter for the check to mean anything
    path = export_model(net, tmp_path / "model.onnx", format="onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    quiet, noisy = 0.25 + 0.002 * torch.randn(1, 1, 40, 24), 0.25 + 0.03 * torch.randn(1, 1, 40, 24)
    x = torch.cat([quiet, noisy])
    (y,) = session.run(None, {"slices": x.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(y, net(x).numpy(), atol=1e-5)
        np.testing.assert_allclose(y[1:], net(noisy).numpy(), atol=1e-5)  # not the batch's level


@pytest.mark.slow
def test_export_is_the_model_at_strength_one_and_leaves_its_setting_alone(tiny_noise_map_net, tmp_path):
    from TSCDenoiseLib.networks.tscnet import noise_map_strength

    net = tiny_noise_map_net
    net.noise_map_strength = 0.5  # set by hand: the export must not bake it in
    path = export_model(net, tmp_path / "model.pt2", example_shape=(2, 1, 32, 32))
    assert net.noise_map_strength == 0.5
    x = 0.25 + 0.03 * torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        exported = load_exported(path)(x)
        half = net(x)
        with noise_map_strength(net, 1.0):
            torch.testing.assert_close(exported, net(x), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(exported, half, atol=1e-4)
