import pytest
import torch

from TSCDenoiseLib.networks import ENCODER_FEATURE_NAMES, FEATURE_NAMES, TSCNet


@pytest.mark.parametrize("height,width", [(32, 32), (37, 53), (5, 3), (64, 30)])
def test_output_has_input_shape_and_dtype_for_any_size(tiny_net, height, width):
    x = torch.rand(2, 1, height, width)
    with torch.no_grad():
        y = tiny_net(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert torch.isfinite(y).all()


def test_forward_features_returns_the_image_and_named_features(tiny_net, tiny_config):
    x = torch.rand(1, 1, 21, 30)
    with torch.no_grad():
        image, features = tiny_net.forward_features(x)
        torch.testing.assert_close(image, tiny_net(x))
    assert len(features) == len(tiny_net.feature_names) == len(FEATURE_NAMES)
    c = tiny_config["base_channels"]
    expected_channels = dict(stem=c, down1=2 * c, down2=4 * c, attention=4 * c, dem=4 * c, up1=2 * c, up2=c)
    for name, feature in zip(FEATURE_NAMES, features):
        assert feature.shape[1] == expected_channels[name], name
    assert features[0].shape[-2:] == (24, 32)  # padded to a multiple of 4
    assert features[2].shape[-2:] == (6, 8)


def test_encode_equals_the_first_five_features(tiny_net):
    x = torch.rand(2, 1, 16, 20)
    with torch.no_grad():
        _, features = tiny_net.forward_features(x)
        encoded = tiny_net.encode(x)
    assert len(encoded) == len(ENCODER_FEATURE_NAMES) == 5
    for a, b in zip(encoded, features[:5]):
        torch.testing.assert_close(a, b)


def test_residual_learning_output_is_input_minus_predicted_noise(tiny_config):
    torch.manual_seed(1)
    net = TSCNet(**tiny_config)
    torch.nn.init.zeros_(net.head.weight)
    torch.nn.init.zeros_(net.head.bias)
    x = torch.rand(1, 1, 13, 14)
    torch.testing.assert_close(net(x), x)  # zero predicted noise -> identity


def test_teacher_and_student_share_architecture_but_not_weights(tiny_config):
    torch.manual_seed(0)
    teacher = TSCNet(**tiny_config)
    student = TSCNet(**teacher.config)
    assert teacher.config == student.config
    t_state, s_state = teacher.state_dict(), student.state_dict()
    assert list(t_state) == list(s_state)
    assert all(t_state[k].shape == s_state[k].shape for k in t_state)
    assert any(not torch.equal(t_state[k], s_state[k]) for k in t_state)
    # no parameter object is shared: training the student leaves the teacher untouched
    assert not {id(p) for p in teacher.parameters()} & {id(p) for p in student.parameters()}
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    optimizer = torch.optim.SGD(student.parameters(), lr=0.1)
    student(torch.rand(1, 1, 16, 16)).mean().backward()
    optimizer.step()
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())


def test_config_rebuilds_an_identical_network(tiny_net):
    clone = TSCNet(**tiny_net.config)
    clone.load_state_dict(tiny_net.state_dict())
    x = torch.rand(1, 1, 12, 12)
    with torch.no_grad():
        torch.testing.assert_close(clone(x), tiny_net(x))


def test_config_values_change_the_architecture():
    small = TSCNet(base_channels=4, num_attention_blocks=1, num_dems=0)
    big = TSCNet(base_channels=4, num_attention_blocks=3, num_dems=2)
    assert len(small.attention) == 1 and len(small.dems) == 0
    assert len(big.attention) == 3 and len(big.dems) == 2
    assert sum(p.numel() for p in big.parameters()) > sum(p.numel() for p in small.parameters())


def test_dcn_backend_switch_keeps_the_output(tiny_net):
    pytest.importorskip("torchvision")
    torch.nn.init.normal_(tiny_net.dems[0].deform_conv.offset_mask.weight, std=0.3)
    x = torch.rand(1, 1, 16, 16)
    with torch.no_grad():
        tiny_net.set_dcn_backend("torch")
        a = tiny_net(x)
        tiny_net.set_dcn_backend("torchvision")
        b = tiny_net(x)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_rejects_non_4d_input(tiny_net):
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        tiny_net(torch.rand(1, 16, 16))


def test_noise_map_channel_tells_the_network_the_slices_noise_level(tiny_config):
    torch.manual_seed(0)
    net = TSCNet(**{**tiny_config, "noise_map": True}).eval()
    with torch.no_grad():
        net.stem[0].weight[:, 1] = 1.0  # make the noise channel matter
        clean = torch.full((1, 1, 32, 32), 0.25)
        noisy = clean + 0.02 * torch.randn(1, 1, 32, 32)
        features = [net.encode(x)[0] for x in (clean, noisy)]
        single = net(noisy)
        batched = net(torch.cat([clean, noisy]))
    # The stem of a noisy slice differs from the clean one's by more than its pixels' difference explains.
    assert (features[1] - features[0]).mean() > 0.5
    assert torch.allclose(batched[1:], single, atol=1e-6)  # each slice gets its own level, not the batch's


def test_bias_free_network_has_no_additive_bias_but_the_sampling_offsets(tiny_config):
    net = TSCNet(**{**tiny_config, "bias": False})
    biases = [name for name, _ in net.named_parameters() if name.endswith("bias")]
    assert biases and all(name.endswith("offset_mask.bias") for name in biases)
    assert TSCNet(**net.config).config == net.config
    with torch.no_grad():  # no bias: zero in, zero noise estimate out
        assert not net(torch.zeros(1, 1, 16, 16)).any()


def test_noise_map_strength_scales_the_noise_input_for_one_block_and_is_restored_after_an_error(tiny_noise_map_net):
    from TSCDenoiseLib.networks.tscnet import has_noise_map, noise_map_strength

    net = tiny_noise_map_net
    x = torch.rand(2, 1, 16, 16) * 0.1 + 0.25
    with torch.no_grad():
        plain = net(x)
        with noise_map_strength(net, 1.5):
            assert net.noise_map_strength == 1.5
            stronger = net(x)
        assert net.noise_map_strength == 1.0
        torch.testing.assert_close(net(x), plain, rtol=0, atol=0)
        with pytest.raises(RuntimeError, match="boom"):
            with noise_map_strength(net, 0.5):
                raise RuntimeError("boom")
        assert net.noise_map_strength == 1.0
        channels = []  # the noise channel the stem sees: the noise index times the strength
        hook = net.stem.register_forward_hook(lambda module, inputs, output: channels.append(inputs[0][:, 1]))
        net(x)
        with noise_map_strength(net, 2.0):
            net(x)
        hook.remove()
    assert not torch.equal(stronger, plain)
    assert torch.all(channels[0][0] == channels[0][0, 0, 0]) and channels[0].min() > 0  # one positive value a slice
    torch.testing.assert_close(channels[1], 2.0 * channels[0])
    assert has_noise_map(net) and not has_noise_map(TSCNet(base_channels=4, num_attention_blocks=0, num_dems=0))
    assert "noise_map_strength" not in net.state_dict()  # never saved in a checkpoint
    other = torch.nn.Conv2d(1, 1, 3)  # a network without the attribute gets none left behind
    with noise_map_strength(other, 1.0):
        assert other.noise_map_strength == 1.0
    assert not hasattr(other, "noise_map_strength")
