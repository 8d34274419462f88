"""HU patches to the network's normalized input and back: the same mapping as `core.inference`."""

from __future__ import annotations

import torch
from torch import nn

from ..core.intensity import HUWindow
from .pairs import TISSUE_HU


def window_of(model: nn.Module) -> HUWindow:
    """The model's HU window (the default one when the model carries none)."""
    return HUWindow.from_any(getattr(model, "hu_window", None))


def network_input(hu: torch.Tensor, window: HUWindow) -> torch.Tensor:
    """(N, S, S) HU -> (N, 1, S, S) normalized and clipped to the window, as inference feeds the network."""
    return window.normalize(hu.clamp(window.low, window.high), clip=False).unsqueeze(1)


def network_target(hu: torch.Tensor, window: HUWindow) -> torch.Tensor:
    """(N, S, S) HU -> (N, 1, S, S) normalized, NOT clipped: a noisy target must keep its zero-mean noise."""
    return window.normalize(hu, clip=False).unsqueeze(1)


def tissue_weights(scan_hu: torch.Tensor) -> torch.Tensor:
    """(N, 1, S, S) loss weights: 1 on tissue, 0 in air and padding (no signal there, and the clip at the
    window's floor makes the noise one-sided)."""
    return (scan_hu > TISSUE_HU).float().unsqueeze(1)


def masked_mse(prediction: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Per-sample mean squared error over the weighted pixels, shape (N,)."""
    squared = (prediction - target) ** 2 * weights
    return squared.sum(dim=(1, 2, 3)) / weights.sum(dim=(1, 2, 3)).clamp_min(1.0)
