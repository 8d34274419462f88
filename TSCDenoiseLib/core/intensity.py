"""The HU window that maps CT numbers to the network's [0, 1] intensity range and back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, TypeVar, Union

import numpy as np
import torch

from ..errors import InvalidInputError

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)

DEFAULT_HU_WINDOW = (-1024.0, 3072.0)


@dataclass(frozen=True)
class HUWindow:
    """Linear map of [low, high] HU onto [0, 1]; values outside are clipped by `normalize`."""

    low: float = DEFAULT_HU_WINDOW[0]
    high: float = DEFAULT_HU_WINDOW[1]

    def __post_init__(self) -> None:
        if not (np.isfinite(self.low) and np.isfinite(self.high) and self.high > self.low):
            raise InvalidInputError(
                f"HU window [{self.low}, {self.high}] is invalid: it needs finite bounds with high > low, "
                "e.g. [-1024, 3072]."
            )

    @classmethod
    def from_any(cls, window: Union["HUWindow", Sequence[float], None]) -> "HUWindow":
        """Accept a HUWindow, a (low, high) pair, or None for the default window."""
        if window is None:
            return cls()
        if isinstance(window, HUWindow):
            return window
        low, high = (float(v) for v in window)
        return cls(low, high)

    @property
    def width(self) -> float:
        return self.high - self.low

    def as_tuple(self) -> tuple:
        return (float(self.low), float(self.high))

    def normalize(self, hu: ArrayT, clip: bool = True) -> ArrayT:
        """HU -> [0, 1] (clipped to the window unless clip=False)."""
        scaled = (hu - self.low) / self.width
        if not clip:
            return scaled
        if isinstance(scaled, torch.Tensor):
            return scaled.clamp_(0.0, 1.0)
        return np.clip(scaled, 0.0, 1.0, out=scaled)

    def denormalize(self, x: ArrayT) -> ArrayT:
        """[0, 1] -> HU."""
        return x * self.width + self.low
