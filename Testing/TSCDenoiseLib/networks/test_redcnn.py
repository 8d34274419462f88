"""RED-CNN baseline: shapes, shortcuts, and the checkpoint round trip it shares with TSC-Net."""

import torch

from TSCDenoiseLib.core.checkpoint import load_model, save_model
from TSCDenoiseLib.networks import REDCNN


def test_output_has_the_input_shape_for_odd_sizes():
    torch.manual_seed(0)
    net = REDCNN(channels=8).eval()
    for shape in ((1, 1, 25, 31), (2, 1, 64, 48)):
        assert net(torch.rand(shape)).shape == shape


def test_zero_weights_pass_the_input_through_the_outer_shortcut():
    net = REDCNN(channels=4)
    for p in net.parameters():
        torch.nn.init.zeros_(p)
    x = torch.rand(1, 1, 30, 30)
    torch.testing.assert_close(net(x), x)  # relu(0 + input) for inputs in [0, 1]


def test_checkpoint_round_trip_is_exact(tmp_path):
    torch.manual_seed(0)
    net = REDCNN(channels=4)
    path = save_model(net, tmp_path / "redcnn.pt", role="student")
    loaded = load_model(path, device="cpu")
    assert isinstance(loaded, REDCNN) and loaded.config == net.config
    x = torch.rand(1, 1, 32, 32)
    torch.testing.assert_close(loaded(x), net.eval()(x), rtol=0, atol=0)
