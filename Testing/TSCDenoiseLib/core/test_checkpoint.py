import os

import pytest
import torch

from TSCDenoiseLib.core.checkpoint import FORMAT_VERSION, initialize_from, load_model, read_checkpoint, save_model
from TSCDenoiseLib.errors import CheckpointError, OutputExistsError
from TSCDenoiseLib.core.intensity import HUWindow
from TSCDenoiseLib.networks import TSCNet


def test_round_trip_is_exact(tiny_net, tmp_path):
    path = save_model(tiny_net, tmp_path / "student.pt", role="student", hu_window=(-1000, 2000), epoch=7)
    loaded = load_model(path, device="cpu")
    assert loaded.config == tiny_net.config
    original = tiny_net.state_dict()
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, original[key]), key
    assert loaded.hu_window == HUWindow(-1000, 2000)
    assert loaded.role == "student" and loaded.checkpoint_metadata == {"epoch": 7}
    assert not loaded.training
    x = torch.rand(1, 1, 20, 20)
    with torch.no_grad():
        assert torch.equal(loaded(x), tiny_net(x))


def test_save_refuses_to_overwrite_unless_asked(tiny_net, tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(b"precious")
    with pytest.raises(OutputExistsError, match="overwrite=True"):
        save_model(tiny_net, path)
    assert path.read_bytes() == b"precious"
    save_model(tiny_net, path, overwrite=True)
    assert read_checkpoint(path)["format_version"] == FORMAT_VERSION
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]  # no temporary file left behind


class _Payload:
    """Unpickling this would create a marker file: a stand-in for malicious code in a checkpoint."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_checkpoint_holding_a_pickled_object_is_refused_without_running_it(tiny_net, tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    payload = {"format": "tscdenoise-checkpoint", "format_version": FORMAT_VERSION, "network": "TSCNet",
               "config": tiny_net.config, "hu_window": [-1024, 3072], "role": "student",
               "state_dict": tiny_net.state_dict(), "metadata": {"x": _Payload(str(marker))}}
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="Refusing to load"):
        load_model(path, device="cpu")
    assert not marker.exists()


def test_corrupt_and_truncated_files_give_a_clear_error(tiny_net, tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(os.urandom(256))
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_model(garbage, device="cpu")
    good = save_model(tiny_net, tmp_path / "good.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_model(truncated, device="cpu")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "nope.pt", device="cpu")


def test_plain_state_dict_and_wrong_version_are_rejected(tiny_net, tmp_path):
    plain = tmp_path / "plain.pt"
    torch.save(tiny_net.state_dict(), plain)
    with pytest.raises(CheckpointError, match="not a TSCDenoise checkpoint"):
        load_model(plain, device="cpu")
    future = tmp_path / "future.pt"
    payload = read_checkpoint(save_model(tiny_net, tmp_path / "now.pt"))
    payload["format_version"] = FORMAT_VERSION + 1
    torch.save(payload, future)
    with pytest.raises(CheckpointError, match=f"format version {FORMAT_VERSION + 1}"):
        load_model(future, device="cpu")


def test_config_weights_mismatch_is_reported(tiny_net, tmp_path):
    payload = read_checkpoint(save_model(tiny_net, tmp_path / "a.pt"))
    payload["config"]["base_channels"] = 16
    mismatched = tmp_path / "mismatched.pt"
    torch.save(payload, mismatched)
    with pytest.raises(CheckpointError, match="do not match the network config"):
        load_model(mismatched, device="cpu")


def test_missing_default_weights_say_what_to_do(monkeypatch, tmp_path):
    import TSCDenoiseLib.core.resources as resources

    monkeypatch.setattr(resources, "DEFAULT_MODEL_CANDIDATES", (tmp_path / "model.pt",))
    with pytest.raises(resources.DefaultModelMissingError, match="Pass the path of a checkpoint"):
        load_model(None, device="cpu")
    save_model(TSCNet(base_channels=4, num_attention_blocks=1, num_dems=1), tmp_path / "model.pt")
    assert load_model(None, device="cpu").config["base_channels"] == 4


def test_initialize_from_copies_weights_of_the_same_network_only(tiny_net, tiny_config, tmp_path):
    path = save_model(tiny_net, tmp_path / "start.pt")
    fresh = TSCNet(**tiny_config)
    assert initialize_from(fresh, None) is fresh
    assert initialize_from(fresh, path) is fresh
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), tiny_net.state_dict().values()))
    with pytest.raises(CheckpointError, match="same network"):
        initialize_from(TSCNet(**{**tiny_config, "residual": False}), path)


def test_warm_start_adds_a_noise_map_channel_without_changing_the_output(tiny_net, tiny_config, tmp_path):
    path = save_model(tiny_net, tmp_path / "plain.pt")
    conditioned = initialize_from(TSCNet(**{**tiny_config, "noise_map": True}), path).eval()
    assert conditioned.stem[0].weight.shape[1] == 2 and not conditioned.stem[0].weight[:, 1].any()
    slices = 0.25 + 0.02 * torch.randn(2, 1, 24, 20)
    with torch.no_grad():
        assert torch.equal(conditioned(slices), tiny_net(slices))
    loaded = load_model(save_model(conditioned, tmp_path / "conditioned.pt"), device="cpu")
    assert loaded.config["noise_map"] is True
    with torch.no_grad():
        assert torch.equal(loaded(slices), conditioned(slices))


def test_warm_start_into_a_bias_free_network_keeps_every_weight_but_the_biases(tiny_net, tiny_config, tmp_path):
    path = save_model(tiny_net, tmp_path / "plain.pt")
    bias_free = initialize_from(TSCNet(**{**tiny_config, "bias": False}), path)
    source = tiny_net.state_dict()
    for name, weights in bias_free.state_dict().items():
        assert torch.equal(weights, source[name])
    assert {n for n in source if n.endswith(".bias")} - set(bias_free.state_dict())
    with pytest.raises(CheckpointError, match="same network"):  # other config changes still refused
        initialize_from(TSCNet(**{**tiny_config, "noise_map": True, "base_channels": tiny_config["base_channels"] * 2}), path)


def test_half_precision_storage_halves_the_file_and_loads_as_float32(tiny_net, tmp_path):
    full = save_model(tiny_net, tmp_path / "full.pt")
    half = save_model(tiny_net, tmp_path / "half.pt", half_precision=True)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    assert all(v.dtype == torch.float16 for v in read_checkpoint(half)["state_dict"].values() if v.is_floating_point())
    model = load_model(half, device="cpu")
    assert all(p.dtype == torch.float32 for p in model.parameters())
    slices = torch.rand(1, 1, 24, 24)
    with torch.no_grad():
        assert (model(slices) - tiny_net(slices)).abs().max() < 1e-2  # only the weights' rounding differs
    warm = initialize_from(TSCNet(**tiny_net.config), half)
    assert all(p.dtype == torch.float32 for p in warm.parameters())
