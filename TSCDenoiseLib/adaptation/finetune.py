"""The fine-tuning loop: self-supervised pairs from the scan, a few hundred Adam steps, stopped by a
deadline, a step count or the caller's cancel."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch
from torch import nn

from ..errors import DenoiseCancelled
from ..noise.scan_model import ScanNoiseModel
from .pairs import Split, make_pair, sample_positions
from .tensors import masked_mse, network_input, network_target, tissue_weights, window_of

SURE_PROBE_SCALE = 0.05  # the divergence's finite-difference step, as a fraction of the local noise
MICRO_BATCH = 4  # patches per forward and backward pass: a larger batch accumulates their gradients, so
# its memory stays that of 4 patches (batch 32 in one pass took 3.4x the peak memory of denoising 4 x 512^2)


@dataclass(frozen=True)
class TrainSettings:
    """How the copy is fine-tuned (recorded in the report and the adapted checkpoint)."""

    strategy: str = "r2r"
    patch: int = 64
    # 32 patches make the few steps' direction the scan's, not the draw's: at 2 steps the copies' mean over
    # the curve cases was +0.31 dB with either seed, against +0.31 / +0.13 with 4 ("Batch of the two steps")
    batch: int = 32
    learning_rate: float = 5e-5
    alpha: float = 0.5  # r2r's recorruption strength (input noise x sqrt(1 + a^2))
    # > 0 adds anchor_weight x the squared difference between the copy's and the original's outputs on the
    # scan's own patches, so the copy moves only where the self-supervised pairs outweigh what the original
    # knows. Measured with bundle 0.8.0, not the default (training/docs/adaptation, "An output anchor").
    anchor_weight: float = 0.0
    # Training stops here even with budget left, so the copy is the same on any machine: left to the
    # budget, a faster one trains it further from the original, and the copies got worse with every step
    # past a handful (training/docs/adaptation, "How far to train"). 2 was chosen on cases outside the
    # evaluation table by a rule fixed first; None: the budget alone decides.
    max_steps: Optional[int] = 2


def fine_tune(model: nn.Module, volume_hu: np.ndarray, noise: ScanNoiseModel, split: Split, settings: TrainSettings,
              device: torch.device, seed: int, deadline: float, max_steps: Optional[int],
              cancel: Optional[Callable[[], bool]], on_step: Callable[[int], None],
              clock: Callable[[], float] = time.monotonic) -> int:
    """Train `model` (in place: the caller passes a copy) until `deadline` (on `clock`) or `max_steps`.

    Args:
        clock: the time source `deadline` is on, read before every step (tests pass a fake one).

    Returns:
        The number of steps taken.

    Raises:
        DenoiseCancelled: `cancel()` returned True (polled before every step).
    """
    window = window_of(model)
    anchor = _frozen_copy(model) if settings.anchor_weight > 0 else None
    rng = np.random.default_rng([seed, 1])
    generator = torch.Generator().manual_seed(seed * 1000 + 2)
    parameters = [p for p in model.parameters()]
    for parameter in parameters:
        parameter.requires_grad_(True)
    optimizer = torch.optim.Adam(parameters, lr=settings.learning_rate)
    model.eval()  # no dropout or batch norm to train; eval keeps any such layer as the original ran it
    steps = 0
    while max_steps is None or steps < max_steps:
        if cancel is not None and cancel():
            raise DenoiseCancelled(f"Adaptation cancelled after {steps} steps; the original model is unchanged.")
        if clock() >= deadline:
            break
        positions = sample_positions(volume_hu, split, settings.strategy, settings.patch, settings.batch, rng)
        pairs = [make_pair(volume_hu, noise, settings.strategy, p, settings.patch, generator, settings.alpha)
                 for p in positions]
        inputs = torch.stack([p[0] for p in pairs]).to(device)
        targets = torch.stack([p[1] for p in pairs]).to(device)
        scans = torch.stack([torch.from_numpy(np.asarray(volume_hu[z, y:y + settings.patch, x:x + settings.patch],
                                                         dtype=np.float32)) for z, y, x in positions]).to(device)
        optimizer.zero_grad(set_to_none=True)
        for start in range(0, len(positions), MICRO_BATCH):
            part = slice(start, start + MICRO_BATCH)
            loss = _loss(model, anchor, settings, inputs[part], targets[part], scans[part], noise,
                         positions[part], window)
            (loss * (len(positions[part]) / len(positions))).backward()  # the batch mean, accumulated
        optimizer.step()
        steps += 1
        on_step(steps)
    for parameter in parameters:
        parameter.requires_grad_(False)
    return steps


def _loss(model: nn.Module, anchor: Optional[nn.Module], settings: TrainSettings, inputs: torch.Tensor,
          targets: torch.Tensor, scans: torch.Tensor, noise: ScanNoiseModel, positions, window) -> torch.Tensor:
    """The strategy's loss (plus the anchor's), averaged over these patches."""
    if settings.strategy == "sure":
        loss = _sure_loss(model, inputs, targets, noise, positions, settings.patch, window)
    else:
        prediction = model(network_input(inputs, window))
        loss = masked_mse(prediction.float(), network_target(targets, window), tissue_weights(scans)).mean()
    if anchor is not None:
        loss = loss + settings.anchor_weight * _anchor_loss(model, anchor, scans, window)
    return loss


def _frozen_copy(model: nn.Module) -> nn.Module:
    """The model as it is before fine-tuning, for the anchor (no gradients)."""
    frozen = copy.deepcopy(model).eval()
    for parameter in frozen.parameters():
        parameter.requires_grad_(False)
    return frozen


def _anchor_loss(model: nn.Module, anchor: nn.Module, scans: torch.Tensor, window) -> torch.Tensor:
    """Mean squared difference, on tissue, between the copy's and the original's outputs on the scan patches."""
    inputs = network_input(scans, window)
    with torch.no_grad():
        reference = anchor(inputs).float()
    return masked_mse(model(inputs).float(), reference, tissue_weights(scans)).mean()


def _sure_loss(model: nn.Module, scans: torch.Tensor, probes: torch.Tensor, noise: ScanNoiseModel, positions,
               size: int, window) -> torch.Tensor:
    """Monte-Carlo SURE for correlated noise, in normalized units: |f(y) - y|^2 - var + 2 b.(f(y + e b) - f(y)) / e."""
    weights = tissue_weights(scans)
    device = scans.device
    variance = torch.stack([noise.local_std(z, y, x, size) ** 2 for z, y, x in positions]).unsqueeze(1).to(device)
    scale = window.width
    denoised = model(network_input(scans, window)).float()
    moved = model(network_input(scans + SURE_PROBE_SCALE * probes, window)).float()
    y = network_target(scans, window)
    b = probes.unsqueeze(1) / scale
    risk = (denoised - y) ** 2 - variance / scale**2 + 2.0 * b * (moved - denoised) / SURE_PROBE_SCALE
    return ((risk * weights).sum(dim=(1, 2, 3)) / weights.sum(dim=(1, 2, 3)).clamp_min(1.0)).mean()
