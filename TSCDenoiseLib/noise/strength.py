"""The denoising strength a scan's noise texture calls for ("auto"), measured from the scan alone.

A noise-map network is told each slice's Immerkaer noise index, which grows with the noise std and also
with how sharp the noise is: per unit of std, sharp-kernel noise has a larger index. The network learnt
what an index means on its training pairs, where the index was about k times the noise std (k, the
median over the pairs, is `noise_index_per_std`). On a scan whose noise is sharper than that, the
network reads more noise than there is and over-smooths (measured: body and chest CT at 0.8-0.9 times,
training pairs at 0.54). The scan's NPS gives its std per unit index, so strength = k x that ratio
scales the index to the one training-like noise of the same std would have had.

Measured on 8 unseen cases x 3 doses with the default model (training/docs/benchmark/auto-strength):
+0.37 dB mean PSNR over strength 1.0, better on every body and chest case, -0.2 to -0.6 dB on a neck.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import numpy as np

from ..core.volume_checks import AUTO_STRENGTH, STRENGTH_RANGE, validate_ct_volume, validate_strength
from ..networks.noise_level import estimate_noise_level
from ..networks.tscnet import has_noise_map
from .scan_model import INDEX_BAND_HU, TISSUE_HU, estimate_noise_texture

METADATA_KEY = "noise_index_per_std"
# Median noise index / true noise std in soft tissue over the 0.4 default's training pairs (120 pairs of
# data/texture and data/wide; training/scripts/evaluate_auto_strength.py). Used for noise-map models whose
# checkpoint records no k of its own (the bundle records it since 0.4.1; the shipped default: 0.52).
DEFAULT_INDEX_PER_STD = 0.537
MIN_NOISE_STD_HU = 1.0  # pairs with less noise than this (identity pairs) say nothing about k
MAX_CALIBRATION_PAIRS = 32


@dataclass(frozen=True)
class StrengthChoice:
    """The strength chosen for one scan, with what it came from."""

    strength: float
    index_to_std: Optional[float]  # the scan's noise std per unit index; None where not measured
    index_per_std: Optional[float]  # k: the model's training index per unit std; None where nothing was scaled
    reason: str

    def describe(self) -> str:
        """One line for logs: the strength and why."""
        return f"strength auto: {self.strength:.2f} ({self.reason})"


def choose_strength(volume_hu: np.ndarray, model: Any) -> StrengthChoice:
    """The strength at which `model` denoises this scan as it denoised noise of the same std in training.

    Args:
        volume_hu: the scan (Z, Y, X) or one slice (Y, X) in HU; not modified.
        model: the network that will denoise it (its checkpoint's `noise_index_per_std`, when recorded,
            is k; else DEFAULT_INDEX_PER_STD).

    Returns:
        The choice: 1.0 (the model's own level) for a model without a noise-map input or a scan without
        flat soft tissue to measure its noise texture on; else k x the scan's std per unit index, clipped
        to STRENGTH_RANGE.
    """
    if not has_noise_map(model):
        return StrengthChoice(1.0, None, None, "the model has no noise-map input")
    return strength_for_texture(volume_hu, model_index_per_std(model))


def strength_for_texture(volume_hu: np.ndarray, index_per_std: float) -> StrengthChoice:
    """k x the scan's noise std per unit index, clipped to STRENGTH_RANGE (1.0 where it cannot be measured).

    Args:
        volume_hu: the scan (Z, Y, X) or one slice (Y, X) in HU; not modified.
        index_per_std: k, the noise index per unit std of the model's training pairs.

    Returns:
        The choice (what `choose_strength` returns for a noise-map model with that k).
    """
    volume = volume_hu[np.newaxis] if volume_hu.ndim == 2 else volume_hu
    texture = estimate_noise_texture(volume)
    if not texture.measured:
        return StrengthChoice(1.0, None, None, "too little flat soft tissue to measure the noise texture; "
                                               "the model's own level")
    strength = float(np.clip(index_per_std * texture.index_to_std, *STRENGTH_RANGE))
    return StrengthChoice(round(strength, 4), texture.index_to_std, index_per_std,
                          f"noise std per unit of noise index: {texture.index_to_std:.2f} in this scan, "
                          f"{1 / index_per_std:.2f} in the model's training data")


def model_index_per_std(model: Any) -> float:
    """k of `model`: its checkpoint's recorded noise index per unit std, else DEFAULT_INDEX_PER_STD."""
    recorded = getattr(model, "checkpoint_metadata", {}).get(METADATA_KEY)
    if isinstance(recorded, (int, float)) and not isinstance(recorded, bool) and 0.0 < float(recorded) < 10.0:
        return float(recorded)
    return DEFAULT_INDEX_PER_STD


def resolve_strength(strength: Union[str, float], volume_hu: np.ndarray, model: Any, check_hu: bool = True,
                     notify: Optional[Callable[[str], None]] = None) -> float:
    """`strength` checked for `model`, with "auto" turned into the number this scan calls for.

    Args:
        strength: "auto" or a number (see `core.volume_checks.validate_strength`).
        volume_hu: the scan (checked with `validate_ct_volume` for "auto" only).
        model: the network that will denoise it.
        check_hu: as for `validate_ct_volume`.
        notify: told the strength chosen for "auto", and why.

    Returns:
        The strength to run at.

    Raises:
        InvalidInputError: `strength` cannot be used with `model`.
        InvalidVolumeError: for "auto", the array is not a CT in HU.
    """
    strength = validate_strength(strength, model)
    if strength != AUTO_STRENGTH:
        return strength
    choice = choose_strength(validate_ct_volume(volume_hu, check_hu=check_hu), model)
    if notify is not None and has_noise_map(model):  # a model without a noise-map input has nothing to choose
        notify(choice.describe())
    return choice.strength


def measure_index_per_std(pairs: Sequence[Mapping[str, Any]],
                          max_pairs: Optional[int] = MAX_CALIBRATION_PAIRS) -> Optional[float]:
    """k of a training set: the median over its pairs of the noise index / the true noise std in soft tissue.

    A model trained on these pairs should record it as its checkpoint's `noise_index_per_std`, so that
    "auto" scales new scans to the noise these pairs taught it.

    Args:
        pairs: datalist entries with "ldct" and "ndct" CT files (paths resolved, as `read_datalist` gives).
        max_pairs: at most this many pairs, evenly spread over the list, are read (None: all).

    Returns:
        k, or None when no pair has a low-dose image with noise (e.g. low dose simulated during training).
    """
    import torch

    from ..io import read_ct

    usable = [entry for entry in pairs if entry.get("ldct") and entry.get("ndct")]
    if max_pairs is not None and len(usable) > max_pairs:
        usable = [usable[i] for i in np.linspace(0, len(usable) - 1, max_pairs).round().astype(int)]
    ratios = []
    for entry in usable:
        (ldct, _), (ndct, _) = read_ct(entry["ldct"]), read_ct(entry["ndct"])
        tissue = (ndct > TISSUE_HU[0]) & (ndct < TISSUE_HU[1])  # where the true noise (LDCT - NDCT) is measured
        std = float((ldct.astype(np.float64) - ndct)[tissue].std()) if tissue.any() else 0.0
        if std > MIN_NOISE_STD_HU:
            slices = torch.from_numpy(np.ascontiguousarray(ldct, dtype=np.float32))[:, None]
            ratios.append(float(estimate_noise_level(slices, band=INDEX_BAND_HU).mean()) / std)
    return round(float(np.median(ratios)), 4) if ratios else None
