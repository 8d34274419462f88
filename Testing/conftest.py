"""Shared fixtures: small, seeded networks so the suite stays fast on a CPU."""

import pytest
import torch

from TSCDenoiseLib.networks import TSCNet

TINY_CONFIG = dict(base_channels=8, num_attention_blocks=1, num_dems=1, attention_reduction=4)


@pytest.fixture
def tiny_config() -> dict:
    return dict(TINY_CONFIG)


@pytest.fixture
def tiny_net() -> TSCNet:
    torch.manual_seed(0)
    return TSCNet(**TINY_CONFIG).eval()


@pytest.fixture
def tiny_noise_map_net() -> TSCNet:
    """A tiny network with the noise-map input (as the default model), for the strength option."""
    torch.manual_seed(0)
    return TSCNet(**TINY_CONFIG, noise_map=True).eval()
