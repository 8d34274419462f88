"""`adapt_model`: fine-tune a copy of a denoiser on the scan in front of the user, self-supervised, within a
time budget, and keep it only if a held-out, reference-free criterion says it is better."""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from typing import Callable, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from ..core.device import resolve_device
from ..core.volume_checks import AUTO_STRENGTH, validate_ct_volume, validate_model, validate_strength
from ..errors import DenoiseCancelled, InvalidInputError
from .finetune import TrainSettings, fine_tune
from ..noise.scan_model import estimate_noise_model
from ..noise.strength import choose_strength
from .pairs import STRATEGIES, make_split
from .report import AdaptationReport
from .safeguard import compare, held_out_tiles, score, with_real_probes

THIN_SLICE_MM = 1.5  # adjacent slices share anatomy closely enough at or below this thickness
SCORING_MARGIN = 1.3  # the adapted model's scoring is predicted from the original's, with this margin
ProgressFn = Callable[[int, int], None]
PROGRESS_TOTAL = 1000
PATCHES_ACROSS = 8


def adapt_model(
    volume_hu: np.ndarray,
    model: nn.Module,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    budget_s: float = 300.0,
    seed: int = 0,
    progress: Optional[ProgressFn] = None,
    cancel: Optional[Callable[[], bool]] = None,
    strategy: str = "auto",
    steps: Optional[int] = None,
    device: Union[str, torch.device] = "auto",
    settings: Optional[TrainSettings] = None,
    safeguard: bool = True,
    strength: Union[str, float] = "auto",
) -> Tuple[nn.Module, AdaptationReport]:
    """Fine-tune a copy of `model` on this scan alone and return the better of it and `model`.

    Args:
        volume_hu: the scan (Z, Y, X) or one slice (Y, X) in HU; never modified.
        model: the denoiser (an `nn.Module` mapping normalized (N, 1, H, W) slices to the same shape, with
            `hu_window`); its weights are never changed: a deep copy is trained.
        spacing: voxel spacing (x, y, z) in mm, as `io.read_ct`'s geometry gives it.
        budget_s: wall-clock ceiling for everything (noise estimate, training, the safeguard's scoring);
            training ends at `settings.max_steps` (2 by default) or `steps` if the budget lasts that long.
        seed: the random seed of patches and synthetic noise; the same seed and number of steps give the
            same model.
        progress: `progress(done, total)`, total being 1000, as the budget (or `steps`, or the step cap) is
            used up.
        cancel: polled before every step; True stops and raises `DenoiseCancelled`.
        strategy: "auto" (r2r), or one of "r2r", "noisier", "adjacent" (slices <= 1.5 mm, 3 or more).
        steps: train exactly this many steps, instead of `settings.max_steps` (still stopped by the budget).
        device: where to train ("auto", "cpu", "cuda", ...).
        settings: patch size, batch, learning rate, r2r's alpha, the output anchor's weight, the step cap
            (`TrainSettings`); `strategy` wins over its strategy field.
        safeguard: False returns the adapted copy whatever the held-out verdict (for evaluations; the
            report still gives the verdict).
        strength: the noise-map strength the returned model will denoise at (`denoise_volume`'s; "auto",
            the default as there, is chosen on this scan): the copy is trained, and both models are judged,
            at it, so the safeguard compares them as they will be used (trained at 1.0 and run at "auto", a
            copy lost up to 1.9 dB against the original on the unseen cases; training/docs/adaptation). The
            returned model itself runs at its own level (1.0) unless the caller sets the strength again.

    Returns:
        (model, report): the adapted copy (eval mode) when the safeguard found it better on the held-out
        tiles, else `model` itself; the report says which, and why.

    Raises:
        InvalidVolumeError: the array is not a CT in HU.
        InvalidInputError: bad `budget_s`, `strategy`, `steps`, anchor weight or step cap, or a scan too small
            for patches.
        DenoiseCancelled: `cancel()` returned True; `model` is unchanged.
    """
    started = time.monotonic()
    validate_model(model)
    strength = validate_strength(strength, model)
    volume = validate_ct_volume(volume_hu)
    volume = volume[np.newaxis] if volume.ndim == 2 else volume
    if strength == AUTO_STRENGTH:
        strength = choose_strength(volume, model).strength
    settings = _checked(settings or TrainSettings(), strategy, volume.shape, spacing, budget_s, steps)
    limit = steps if steps is not None else settings.max_steps
    deadline = started + float(budget_s)
    target = resolve_device(device)
    report_progress = _progress(progress, started, budget_s, limit)

    noise = estimate_noise_model(volume, (float(spacing[1]), float(spacing[0])))
    split = make_split(volume.shape, settings.patch)
    held = held_out_tiles(volume, split, noise, torch.Generator().manual_seed(seed * 1000 + 1))
    common = dict(strategy=settings.strategy, budget_s=float(budget_s), seed=int(seed),
                  settings={k: v for k, v in vars(settings).items()}, held_out_tiles=held.tiles,
                  noise_std_hu=noise.median_std_hu, noise_rois=noise.rois_used, strength=strength)
    if held.tiles < 2:
        return model, AdaptationReport("original", steps=0, seconds=time.monotonic() - started, training_seconds=0.0,
                                       reason="too little tissue in the held-out part to judge an adapted model",
                                       verdict="original", **common)
    trainee = copy.deepcopy(model).to(target)
    trainee.noise_map_strength = strength  # the copy learns, and both are judged, at the final pass's strength
    scoring_started = time.monotonic()
    held = with_real_probes(held, trainee, target)  # the copy is still identical to `model`
    original_scores = score(trainee, held, target)
    scoring_seconds = time.monotonic() - scoring_started
    report_progress(0)
    training_started = time.monotonic()
    taken = fine_tune(trainee, volume, noise, split, settings, target, seed,
                      deadline - SCORING_MARGIN * scoring_seconds, limit, cancel, report_progress)
    training_seconds = time.monotonic() - training_started
    if cancel is not None and cancel():
        raise DenoiseCancelled(f"Adaptation cancelled after {taken} steps; the original model is unchanged.")
    if taken == 0:
        return model, AdaptationReport("original", steps=0, seconds=time.monotonic() - started,
                                       training_seconds=training_seconds,
                                       reason=f"the budget of {budget_s:g} s left no time to train",
                                       verdict="original", **common)
    verdict = compare(original_scores, score(trainee, held, target))
    if progress is not None:
        progress(PROGRESS_TOTAL, PROGRESS_TOTAL)
    keep = verdict.use_adapted or not safeguard
    chosen = trainee.eval() if keep else model
    if keep:
        _carry_attributes(model, trainee)
        trainee.noise_map_strength = 1.0  # back to its own level, as any model it returns
    reason = "" if verdict.use_adapted else (
        "worse on held-out tiles" if verdict.adapted_risk >= verdict.original_risk else
        "its gain rests on the noise estimate: it loses if the noise is 10 % weaker"
        if verdict.conservative_gain <= 0 else
        "its gain rests on the noise estimate: it loses if the noise is 20 % stronger"
        if verdict.stronger_noise_gain <= 0 else
        "it lets through noise of the scan's own kind: it loses when probed with it"
        if verdict.real_noise_gain <= 0 else
        "no significant held-out gain")
    return chosen, AdaptationReport(
        "adapted" if keep else "original", steps=taken, seconds=time.monotonic() - started,
        training_seconds=training_seconds, original_risk=verdict.original_risk, adapted_risk=verdict.adapted_risk,
        standard_error=verdict.standard_error, original_rmse_hu=verdict.original_rmse_hu,
        adapted_rmse_hu=verdict.adapted_rmse_hu, gain_db=verdict.gain_db, conservative_gain=verdict.conservative_gain,
        conservative_standard_error=verdict.conservative_standard_error,
        stronger_noise_gain=verdict.stronger_noise_gain,
        stronger_noise_standard_error=verdict.stronger_noise_standard_error,
        real_noise_gain=verdict.real_noise_gain, real_noise_standard_error=verdict.real_noise_standard_error,
        reason=reason,
        verdict="adapted" if verdict.use_adapted else "original", **common)


def choose_strategy(shape: Sequence[int], spacing: Sequence[float]) -> str:
    """The strategy "auto" stands for (r2r: it needs only the scan's noise, any slice thickness)."""
    return "r2r"


def _checked(settings: TrainSettings, strategy: str, shape: Sequence[int], spacing: Sequence[float],
             budget_s: float, steps: Optional[int]) -> TrainSettings:
    if isinstance(budget_s, bool) or not isinstance(budget_s, (int, float)) or not budget_s > 0:
        raise InvalidInputError(f"The adaptation budget must be a positive number of seconds, got {budget_s!r}.")
    for name, count in (("steps", steps), ("max_steps", settings.max_steps)):
        if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
            raise InvalidInputError(f"{name} must be a positive integer or None, got {count!r}.")
    if strategy == "auto":
        strategy = choose_strategy(shape, spacing)
    if strategy not in STRATEGIES:
        raise InvalidInputError(f"Unknown adaptation strategy {strategy!r}; use auto or one of {', '.join(STRATEGIES)}.")
    if strategy == "adjacent" and (shape[0] < 3 or float(spacing[2]) > THIN_SLICE_MM):
        raise InvalidInputError(
            f"Adjacent-slice adaptation needs 3 or more slices of at most {THIN_SLICE_MM} mm "
            f"(this scan: {shape[0]} slices of {float(spacing[2]):g} mm); use strategy r2r.")
    # 8 tiles across, a quarter of them held out, so small slices (a 128^2 crop, a 256^2 head) still hold
    # enough held-out tissue to judge the adapted model
    patch = min(settings.patch, shape[1] // PATCHES_ACROSS, shape[2] // PATCHES_ACROSS)
    if patch < 16:
        raise InvalidInputError(f"The scan's slices ({shape[1]} x {shape[2]}) are too small to adapt to "
                                f"({16 * PATCHES_ACROSS} x {16 * PATCHES_ACROSS} at least).")
    anchor = settings.anchor_weight
    if isinstance(anchor, bool) or not isinstance(anchor, (int, float)) or not (math.isfinite(anchor) and anchor >= 0):
        raise InvalidInputError(f"anchor_weight must be a finite number >= 0 (0 = no anchor), got {anchor!r}.")
    return dataclasses.replace(settings, strategy=strategy, patch=patch)


def _progress(progress: Optional[ProgressFn], started: float, budget_s: float, steps: Optional[int],
              clock: Callable[[], float] = time.monotonic) -> Callable[[int], None]:
    """A per-step callback reporting the larger of the time (on `clock`, from `started`) and the step
    fraction, in thousandths."""
    if progress is None:
        return lambda step: None

    def report(step: int) -> None:
        fraction = (clock() - started) / budget_s
        if steps is not None:
            fraction = max(fraction, step / steps)
        progress(int(min(fraction, 0.999) * PROGRESS_TOTAL), PROGRESS_TOTAL)

    return report


def _carry_attributes(original: nn.Module, adapted: nn.Module) -> None:
    """The original's device and gradient flags on the adapted copy (deepcopy kept hu_window and role)."""
    parameters = list(original.parameters())
    if parameters:
        adapted.to(parameters[0].device)
    for mine, theirs in zip(adapted.parameters(), parameters):
        mine.requires_grad_(theirs.requires_grad)
