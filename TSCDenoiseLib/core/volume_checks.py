"""Checks of what the engine is given, before it touches it: the array is a CT in HU, the model is a network."""

from __future__ import annotations

from typing import Any, Union

import numpy as np

from ..errors import InvalidInputError, InvalidVolumeError

# Lowest/highest values a CT in HU plausibly holds: padding outside the field of view is often -3024
# or -32768; dense metal saturates near the top of int16 or beyond on extended-range scanners.
HU_FLOOR = -32768.0
HU_CEILING = 65535.0
_CHUNK_VOXELS = 1 << 24


def validate_model(model: Any) -> None:
    """Raise InvalidInputError unless `model` is a network (a torch Module), e.g. from `load_model(path)`."""
    from torch import nn

    if not isinstance(model, nn.Module):
        hint = (f"load the checkpoint first: model = load_model({str(model)!r})" if isinstance(model, (str, bytes))
                or hasattr(model, "__fspath__") else "e.g. model = load_model(path), or load_model() for the default")
        raise InvalidInputError(f"model must be a network from TSCDenoiseLib.load_model, got {type(model).__name__}; "
                                f"{hint}.")


STRENGTH_RANGE = (0.25, 2.0)
AUTO_STRENGTH = "auto"


def is_auto_strength(strength: Any) -> bool:
    """True for "auto" in any case and padding (the strength chosen from the scan's noise texture)."""
    return isinstance(strength, str) and strength.strip().lower() == AUTO_STRENGTH


def validate_strength(strength: Any, model: Any = None) -> Union[float, str]:
    """`strength` as a float if it is a usable denoising strength (for `model`, when given), or "auto".

    Raises:
        InvalidInputError: neither "auto" nor a number in STRENGTH_RANGE, or a number other than 1.0 for a
            model without a noise-map input.
    """
    if is_auto_strength(strength):
        return AUTO_STRENGTH  # any model: without a noise-map input, auto is 1.0
    low, high = STRENGTH_RANGE
    if isinstance(strength, bool) or not isinstance(strength, (int, float, np.integer, np.floating)) \
            or not low <= float(strength) <= high:
        raise InvalidInputError(f"strength must be 'auto' (from the scan's noise texture) or a number from {low:g} "
                                f"to {high:g} (1.0: the model's own level; below 1 keeps more texture, above 1 "
                                f"smooths more), got {strength!r}.")
    strength = float(strength)
    if strength != 1.0 and model is not None:
        from ..networks.tscnet import has_noise_map

        if not has_noise_map(model):
            raise InvalidInputError(f"strength {strength:g} needs a model with a noise-map input, and this model has "
                                    "no noise-map input; use the default model, or strength 'auto' or 1.0.")
    return strength


def parse_strength(text: str) -> Union[float, str]:
    """A command line's strength: "auto" or the number written (its range is checked by `validate_strength`).

    Raises:
        InvalidInputError: neither "auto" nor a number (one line, as for the other options).
    """
    if is_auto_strength(text):
        return AUTO_STRENGTH
    try:
        return float(text)
    except ValueError:
        raise InvalidInputError(f"--strength must be 'auto' or a number from {STRENGTH_RANGE[0]:g} to "
                                f"{STRENGTH_RANGE[1]:g}, got {text!r}.") from None


def validate_ct_volume(volume: np.ndarray, check_hu: bool = True) -> np.ndarray:
    """`volume` if it is a 2D/3D real CT in HU (in native byte order: a big-endian array comes back as a
    native copy); else raise InvalidVolumeError."""
    if not isinstance(volume, np.ndarray):
        raise InvalidVolumeError(
            f"Expected a numpy array in HU, got {type(volume).__name__}. Convert it first, e.g. "
            "np.asarray(image) or slicer.util.arrayFromVolume(node)."
        )
    if volume.dtype == np.bool_ or not (np.issubdtype(volume.dtype, np.integer) or np.issubdtype(volume.dtype, np.floating)):
        raise InvalidVolumeError(
            f"The volume has dtype {volume.dtype}; a CT needs real numbers in HU (integer or float). "
            "Label maps, masks, complex or RGB data cannot be denoised."
        )
    if volume.dtype.kind == "f" and volume.dtype.itemsize > 8:
        raise InvalidVolumeError(
            f"The volume has dtype {volume.dtype} (extended precision), which PyTorch cannot compute with; "
            "convert it first, e.g. volume.astype(np.float32)."
        )
    if not volume.dtype.isnative:
        volume = volume.astype(volume.dtype.newbyteorder("="))  # PyTorch reads native byte order only
    if volume.ndim not in (2, 3):
        raise InvalidVolumeError(
            f"Expected a 3D volume (Z, Y, X) or a 2D slice (Y, X), got shape {volume.shape}. "
            "Denoise each volume of a time series or multi-channel image separately."
        )
    if volume.size == 0:
        raise InvalidVolumeError(f"The volume is empty (shape {volume.shape}).")
    low, high, bad = _range_and_nonfinite(volume)
    if bad:
        raise InvalidVolumeError(
            f"The volume holds {bad} NaN or infinite values. Replace them first (e.g. with -1024 HU, air)."
        )
    if check_hu:
        _check_hu_range(low, high)
    return volume


def _range_and_nonfinite(volume: np.ndarray):
    """(min, max, count of non-finite values), chunked so no full-size temporary is made."""
    flat = volume.reshape(-1)
    if np.issubdtype(volume.dtype, np.integer):
        return float(flat.min()), float(flat.max()), 0
    low, high, bad = np.inf, -np.inf, 0
    for start in range(0, flat.size, _CHUNK_VOXELS):
        chunk = flat[start:start + _CHUNK_VOXELS]
        finite = np.isfinite(chunk)
        bad += int(chunk.size - np.count_nonzero(finite))
        if bad == 0:
            low, high = min(low, float(chunk.min())), max(high, float(chunk.max()))
    return low, high, bad


def _check_hu_range(low: float, high: float) -> None:
    hint = " If you are sure this is CT in HU, skip this check: --no-check-hu (API: check_hu=False)."
    if low < HU_FLOOR or high > HU_CEILING:
        raise InvalidVolumeError(
            f"Values lie in [{low:g}, {high:g}], beyond any CT scale ({HU_FLOOR:g} to {HU_CEILING:g} HU). "
            "Check the rescale slope/intercept of the image." + hint
        )
    if low >= -1.0 and high <= 1.0:
        raise InvalidVolumeError(
            f"Values lie in [{low:g}, {high:g}]: this looks like normalized intensities, not Hounsfield units. "
            "Pass the CT in HU (air about -1000, water 0, bone above 300)." + hint
        )
    if low >= 0.0:
        raise InvalidVolumeError(
            f"Values lie in [{low:g}, {high:g}] with nothing below 0: a CT in HU has air near -1000. This looks "
            "like MR, or CT stored values before the rescale intercept (e.g. 0..4095); convert to HU first "
            "(HU = stored * RescaleSlope + RescaleIntercept)." + hint
        )
