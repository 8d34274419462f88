"""Weight averaging: the moving average and the mean follow their formulas, the network itself is untouched,
and bad settings are one clear error."""

import pytest
import torch
from torch import nn

from TSCDenoiseLib.errors import InvalidInputError
from TSCDenoiseLib.training.averaging import WeightAveraging, averaged_copy, averaging_metadata, validated_network


class FakeEngine:
    """Only what ``WeightAveraging`` reads (the iteration count); its event wiring is tested through the bundle."""

    def __init__(self) -> None:
        self.state = type("State", (), {"iteration": 0})()

    def step(self) -> "FakeEngine":
        self.state.iteration += 1
        return self


def steps(network: nn.Module, count: int, seed: int = 0):
    """Move every weight by a random step, `count` times, yielding the weights after each step."""
    generator = torch.Generator().manual_seed(seed)
    for _ in range(count):
        with torch.no_grad():
            for parameter in network.parameters():
                parameter.add_(torch.randn(parameter.shape, generator=generator))
        yield [p.detach().clone() for p in network.parameters()]


def test_the_mean_is_the_equal_mean_of_the_weights_after_each_step():
    network = nn.Conv2d(1, 2, 3)
    averaged = averaged_copy(network, "mean")
    handler, engine = WeightAveraging(averaged, network), FakeEngine()
    seen = []
    for weights in steps(network, 3):
        seen.append(weights)
        handler(engine.step())
    for index, parameter in enumerate(validated_network(network, averaged).parameters()):
        torch.testing.assert_close(parameter, sum(weights[index] for weights in seen) / 3)
    # The trained network keeps its own (last) weights.
    for parameter, last in zip(network.parameters(), seen[-1]):
        assert torch.equal(parameter, last)


def test_the_moving_average_starts_at_the_first_weights_then_decays():
    network = nn.Linear(3, 2)
    averaged = averaged_copy(network, "ema", ema_decay=0.9)
    handler, engine = WeightAveraging(averaged, network), FakeEngine()
    seen = []
    for weights in steps(network, 2):
        seen.append(weights)
        handler(engine.step())
    first, second = seen
    for parameter, a, b in zip(averaged.module.parameters(), first, second):
        torch.testing.assert_close(parameter, 0.9 * a + 0.1 * b)


def test_averaging_starts_after_the_start_iteration_and_tracks_the_weights_before():
    network = nn.Linear(3, 2)
    averaged = averaged_copy(network, "mean")
    handler, engine = WeightAveraging(averaged, network, start_iteration=2), FakeEngine()
    seen = []
    for weights in steps(network, 4):
        seen.append(weights)
        handler(engine.step())
        if engine.state.iteration == 2:  # before averaging begins, the copy is the current weights
            for parameter, weight in zip(averaged.module.parameters(), weights):
                assert torch.equal(parameter, weight)
    for index, parameter in enumerate(averaged.module.parameters()):
        torch.testing.assert_close(parameter, sum(weights[index] for weights in seen[1:]) / 3)


def test_no_averaging_validates_the_network_itself():
    network = nn.Linear(2, 2)
    assert averaged_copy(network, None) is None
    assert validated_network(network, None) is network
    assert averaging_metadata(None, 0.999, 0, 0.0) == {}
    assert averaging_metadata("ema", 0.99, 3, 1e-5) == {"weight_averaging": "ema", "ema_decay": 0.99,
                                                        "averaging_start_epoch": 3, "min_learning_rate": 1e-5}
    assert "ema_decay" not in averaging_metadata("mean", 0.99, 0, 0.0)


@pytest.mark.parametrize("kind, decay, key", [("swa", 0.999, "weight_averaging"), ("ema", 1.0, "ema_decay"),
                                              ("ema", 0.0, "ema_decay")])
def test_bad_settings_are_one_error_naming_the_bundle_key(kind, decay, key):
    with pytest.raises(InvalidInputError, match=key):
        averaged_copy(nn.Linear(2, 2), kind, decay)
