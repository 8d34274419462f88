"""Where a (Z, Y, X) array sits in patient space (ITK's conventions)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class VolumeGeometry:
    """Physical placement of a (Z, Y, X) array, in ITK's (x, y, z) order and mm."""

    spacing: tuple = (1.0, 1.0, 1.0)
    origin: tuple = (0.0, 0.0, 0.0)
    direction: tuple = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)

    @classmethod
    def from_sitk(cls, image) -> "VolumeGeometry":
        return cls(tuple(image.GetSpacing()), tuple(image.GetOrigin()), tuple(image.GetDirection()))

    def apply_to(self, image) -> None:
        image.SetSpacing([float(v) for v in self.spacing])
        image.SetOrigin([float(v) for v in self.origin])
        image.SetDirection([float(v) for v in self.direction])
