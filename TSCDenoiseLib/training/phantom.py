"""Procedural anthropomorphic CT phantoms (head and torso) in HU, seeded and reproducible.

A second, clearly synthetic training source beside the one real head CT: a body outline with
a fat layer, muscle, organs with realistic mean HU and fine correlated texture, a spine and
ribs, lungs with branching vessels (torso), and skull, grey/white matter and ventricles (head).
Ellipse sizes drift smoothly along z, so neighbouring slices look like neighbouring anatomy.
"""

from __future__ import annotations

from typing import Literal, Sequence

import numpy as np

from ..errors import InvalidInputError

Kind = Literal["torso", "head"]

# Mean HU of the tissues (non-contrast CT).
HU = {
    "air": -1000.0, "lung": -850.0, "fat": -100.0, "csf": 8.0, "white_matter": 28.0, "grey_matter": 40.0,
    "muscle": 45.0, "kidney": 32.0, "spleen": 48.0, "liver": 60.0, "blood": 42.0,
    "cancellous_bone": 250.0, "cortical_bone": 1200.0,
}


class _Canvas:
    """Physical (mm) coordinates of one slice and helpers that paint shapes onto it."""

    def __init__(self, rows: int, columns: int, spacing_xy: Sequence[float]) -> None:
        y = (np.arange(rows) - (rows - 1) / 2) * spacing_xy[1]
        x = (np.arange(columns) - (columns - 1) / 2) * spacing_xy[0]
        self.y, self.x = np.meshgrid(y, x, indexing="ij")

    def ellipse(self, cx: float, cy: float, ax: float, ay: float, angle: float = 0.0) -> np.ndarray:
        c, s = np.cos(angle), np.sin(angle)
        dx, dy = self.x - cx, self.y - cy
        u, v = c * dx + s * dy, -s * dx + c * dy
        return (u / ax) ** 2 + (v / ay) ** 2 <= 1.0


def _texture(shape: tuple, spacing: Sequence[float], rng: np.random.Generator, amplitude: float, scale_mm: float):
    """Zero-mean correlated texture (Gaussian-filtered white noise) with std ``amplitude`` HU."""
    from scipy.ndimage import gaussian_filter

    sigma = [scale_mm / spacing[2], scale_mm / spacing[1], scale_mm / spacing[0]]
    field = gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma=sigma, mode="wrap")
    return field * (amplitude / max(float(field.std()), 1e-6))


def _vessel_tree(canvas: _Canvas, cx: float, cy: float, length: float, angle: float, width: float,
                 depth: int, rng: np.random.Generator, out: np.ndarray) -> None:
    """Paint a branching vessel tree (capsules halving in width) into the boolean ``out``."""
    if depth == 0 or width < 0.6:
        return
    ex, ey = cx + length * np.cos(angle), cy + length * np.sin(angle)
    t = np.clip(((canvas.x - cx) * (ex - cx) + (canvas.y - cy) * (ey - cy)) / (length**2), 0.0, 1.0)
    distance = np.hypot(canvas.x - (cx + t * (ex - cx)), canvas.y - (cy + t * (ey - cy)))
    out |= distance <= width / 2
    for turn in (-1, 1):
        _vessel_tree(canvas, ex, ey, length * rng.uniform(0.6, 0.8), angle + turn * rng.uniform(0.3, 0.7),
                     width * 0.7, depth - 1, rng, out)


def _torso_slice(canvas: _Canvas, t: float, rng: np.random.Generator, params: dict) -> tuple[np.ndarray, np.ndarray]:
    """One torso slice (HU) and its soft-organ mask; ``t`` in [0, 1] runs from abdomen to chest."""
    image = np.full(canvas.x.shape, HU["air"], np.float32)
    width, depth = params["width"] * (1 + 0.05 * np.sin(np.pi * t)), params["depth"]
    image[canvas.ellipse(0, 0, width, depth)] = HU["fat"]
    fat = params["fat_mm"]
    image[canvas.ellipse(0, 0, width - fat, depth - fat)] = HU["muscle"]
    inner = canvas.ellipse(0, -0.05 * depth, width - fat - 12, depth - fat - 12)
    image[inner] = HU["fat"] + 40  # visceral fat and bowel, averaged
    organs = np.zeros_like(inner)
    if t > 0.55:  # chest: lungs with vessels, heart
        for side in (-1, 1):
            lung = canvas.ellipse(side * 0.45 * width, -0.05 * depth, 0.38 * width, 0.72 * depth)
            image[lung & inner] = HU["lung"]
            vessels = np.zeros_like(lung)
            _vessel_tree(canvas, side * 0.15 * width, -0.1 * depth, 0.25 * width, np.pi / 2 - side * np.pi / 2
                         + rng.uniform(-0.3, 0.3), 5.0, 5, rng, vessels)
            image[vessels & lung & inner] = HU["blood"] - 20
        heart = canvas.ellipse(0.1 * width, -0.2 * depth, 0.3 * width, 0.45 * depth, angle=0.4)
        image[heart & inner] = HU["blood"]
        organs |= heart & inner
    else:  # abdomen: liver, spleen, kidneys, aorta
        shapes = [
            ("liver", (-0.35 * width, -0.15 * depth, 0.45 * width, 0.55 * depth, 0.2)),
            ("spleen", (0.55 * width, 0.05 * depth, 0.18 * width, 0.3 * depth, -0.4)),
            ("kidney", (-0.35 * width, 0.45 * depth, 0.12 * width, 0.2 * depth, 0.5)),
            ("kidney", (0.35 * width, 0.45 * depth, 0.12 * width, 0.2 * depth, -0.5)),
        ]
        for tissue, (cx, cy, ax, ay, angle) in shapes:
            organ = canvas.ellipse(cx, cy, ax * (1 - 0.3 * t), ay * (1 - 0.3 * t), angle) & inner
            image[organ] = HU[tissue]
            organs |= organ
    aorta = canvas.ellipse(0.08 * width, 0.38 * depth, 11, 11)
    image[aorta] = HU["blood"]
    vertebra = canvas.ellipse(0, 0.62 * depth, 20, 17)
    image[vertebra] = HU["cortical_bone"]
    image[canvas.ellipse(0, 0.62 * depth, 16, 13)] = HU["cancellous_bone"]
    image[canvas.ellipse(0, 0.85 * depth, 9, 8)] = HU["cortical_bone"]  # spinous process
    if t > 0.4:  # ribs: small bone ellipses around the body wall
        for angle in np.linspace(0.35 * np.pi, 1.65 * np.pi, 10) + 0.15 * t:
            cx, cy = 0.9 * (width - fat) * np.cos(angle), 0.9 * (depth - fat) * np.sin(angle)
            image[canvas.ellipse(cx, cy, 6, 4, angle)] = HU["cortical_bone"]
    return image, organs


def _head_slice(canvas: _Canvas, t: float, rng: np.random.Generator, params: dict) -> tuple[np.ndarray, np.ndarray]:
    """One head slice (HU) and its brain mask; ``t`` in [0, 1] runs from skull base to vertex."""
    image = np.full(canvas.x.shape, HU["air"], np.float32)
    shrink = np.sqrt(max(1e-3, 1 - (1.2 * (t - 0.35)) ** 2)) if t > 0.35 else 1.0
    ax, ay = params["width"] * shrink, params["depth"] * shrink
    image[canvas.ellipse(0, 0, ax, ay)] = HU["muscle"] - 10  # scalp
    image[canvas.ellipse(0, 0, ax - 5, ay - 5)] = HU["cortical_bone"]
    image[canvas.ellipse(0, 0, ax - 8, ay - 8)] = HU["cancellous_bone"] + 300  # diploe
    image[canvas.ellipse(0, 0, ax - 11, ay - 11)] = HU["cortical_bone"]
    brain = canvas.ellipse(0, 0, ax - 13, ay - 13)
    image[brain] = HU["grey_matter"]
    image[canvas.ellipse(0, 0, 0.7 * (ax - 13), 0.75 * (ay - 13)) & brain] = HU["white_matter"]
    if 0.3 < t < 0.75:
        for side in (-1, 1):
            image[canvas.ellipse(side * 9, -10, 5, 22, side * 0.2) & brain] = HU["csf"]
    if t < 0.25:  # sinuses and orbits at the skull base
        for side in (-1, 1):
            image[canvas.ellipse(side * 18, -0.75 * ay, 12, 9)] = HU["air"]
    return image, brain


def make_phantom(
    shape: Sequence[int] = (16, 256, 256),
    kind: Kind = "torso",
    spacing: Sequence[float] = (0.8, 0.8, 2.0),
    seed: int | None = None,
    texture_hu: float = 12.0,
    z_start: float | None = None,
) -> np.ndarray:
    """A (Z, Y, X) float32 phantom in HU; ``spacing`` is (x, y, z) in mm; same seed -> same phantom.

    ``z_start`` in [0, 1] places the first slice along the body (torso: abdomen 0 -> chest 1;
    head: skull base 0 -> vertex 1); None draws it from the seed. The slices advance 1/150 per mm.
    """
    if kind not in ("torso", "head"):
        raise InvalidInputError(f"kind must be 'torso' or 'head', got {kind!r}.")
    if len(shape) != 3 or min(shape) < 1:
        raise InvalidInputError(f"shape must be (Z, Y, X) with positive sizes, got {tuple(shape)}.")
    rng = np.random.default_rng(seed)
    field_x, field_y = shape[2] * spacing[0], shape[1] * spacing[1]
    if kind == "torso":
        params = {"width": rng.uniform(0.36, 0.46) * field_x, "depth": rng.uniform(0.26, 0.34) * field_y,
                  "fat_mm": rng.uniform(8, 25)}
        start = rng.uniform(0.0, 0.8) if z_start is None else float(z_start)
    else:
        params = {"width": rng.uniform(0.28, 0.34) * field_x, "depth": rng.uniform(0.34, 0.40) * field_y}
        start = rng.uniform(0.0, 0.5) if z_start is None else float(z_start)
    canvas = _Canvas(shape[1], shape[2], spacing)
    slices, masks = [], []
    for z in range(shape[0]):
        t = float(np.clip(start + z * spacing[2] / 150.0, 0.0, 1.0))
        slice_rng = np.random.default_rng(rng.integers(2**63))
        image, soft = (_torso_slice if kind == "torso" else _head_slice)(canvas, t, slice_rng, params)
        slices.append(image)
        masks.append(soft)
    volume = np.stack(slices)
    tissue = (volume > -300) & (volume < 300)
    volume += _texture(volume.shape, spacing, rng, texture_hu, scale_mm=1.5) * tissue
    organs = np.stack(masks)
    volume += _texture(volume.shape, spacing, rng, 0.5 * texture_hu, scale_mm=4.0) * organs
    return volume.astype(np.float32)
