"""Resample a DICOM series whose slices are off a regular grid (gaps, uneven spacing, gantry tilt) onto one.

Every output voxel is placed at its true position in patient space: along the slice normal it is
interpolated linearly between the two nearest slices, and in each slice's plane the slice is sampled
bilinearly where that point falls (which undoes a gantry tilt's shear). Points outside a slice's
field of view take the lowest value of the series (the padding outside the scan).
"""

from __future__ import annotations

import numpy as np

from .geometry import VolumeGeometry


def resample_to_regular_grid(
    array: np.ndarray, positions: np.ndarray, orientation: np.ndarray, pixel_spacing: tuple, slice_spacing: float
) -> tuple[np.ndarray, VolumeGeometry]:
    """(array, geometry) on a regular, untilted grid from slices at arbitrary positions along their normal.

    Args:
        array: (N, Y, X) slices, in the order of `positions`.
        positions: (N, 3) ImagePositionPatient of each slice (LPS, mm).
        orientation: ImageOrientationPatient (row direction, then column direction).
        pixel_spacing: (x, y) spacing within a slice, mm.
        slice_spacing: the output's gap between slices, mm.

    Returns:
        The float32 volume on the grid and its geometry (origin at the lowest slice's position; the z axis
        along the slice normal; slices from the lowest to the highest position, no extrapolation).
    """
    row, column = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    normal = np.cross(row, column)
    normal /= np.linalg.norm(normal)
    positions = np.asarray(positions, float)
    distance = positions @ normal
    order = np.argsort(distance, kind="stable")
    slices, positions, distance = np.asarray(array)[order], positions[order], distance[order]
    origin = positions[0]
    offsets = (positions - origin) - np.outer(distance - distance[0], normal)  # in-plane shift of each slice, mm
    shift_x = offsets @ row / float(pixel_spacing[0])
    shift_y = offsets @ column / float(pixel_spacing[1])
    fill = float(slices.min())
    count = int(np.floor((distance[-1] - distance[0]) / slice_spacing + 1e-6)) + 1
    targets = distance[0] + slice_spacing * np.arange(count)
    output = np.empty((count,) + slices.shape[1:], dtype=np.float32)
    for k, target in enumerate(targets):
        upper = int(np.clip(np.searchsorted(distance, target, side="right"), 1, len(distance) - 1))
        lower = upper - 1
        weight = (target - distance[lower]) / (distance[upper] - distance[lower])
        weight = float(np.clip(weight, 0.0, 1.0))
        output[k] = (1 - weight) * _sample_shifted(slices[lower], shift_x[lower], shift_y[lower], fill)
        if weight > 0:
            output[k] += weight * _sample_shifted(slices[upper], shift_x[upper], shift_y[upper], fill)
    direction = np.stack([row, column, normal], axis=1)  # columns: the x, y, z axes
    spacing = (float(pixel_spacing[0]), float(pixel_spacing[1]), float(slice_spacing))
    return output, VolumeGeometry(spacing, tuple(float(v) for v in origin), tuple(direction.reshape(-1).tolist()))


def _sample_shifted(image: np.ndarray, shift_x: float, shift_y: float, fill: float) -> np.ndarray:
    """`image` (Y, X) sampled bilinearly at (y - shift_y, x - shift_x); outside the image: `fill`."""
    image = np.asarray(image, dtype=np.float32)
    if abs(shift_x) < 1e-6 and abs(shift_y) < 1e-6:
        return image
    height, width = image.shape
    ys, xs = np.arange(height) - shift_y, np.arange(width) - shift_x
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    fy, fx = (ys - y0).astype(np.float32), (xs - x0).astype(np.float32)
    result = np.zeros_like(image)
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            rows, cols = y0 + dy, x0 + dx
            inside = ((rows >= 0) & (rows < height))[:, None] & ((cols >= 0) & (cols < width))[None, :]
            values = image[np.clip(rows, 0, height - 1)][:, np.clip(cols, 0, width - 1)]
            result += np.where(inside, values, fill) * (wy[:, None] * wx[None, :])
    return result
