"""Draw the extension and module icons from the procedural head phantom.

    python Resources/make_icons.py

One axial slice of the synthetic head of ``TSCDenoiseLib.training.phantom.make_phantom`` (mid-brain, with the
lateral ventricles), cropped to a square around the head, brain window: the left half is its
simulated low-dose scan (``TSCDenoiseLib.training.simulation``, quarter dose, projection-domain noise, so
it has the texture of real CT noise), the right half the phantom itself (normal dose), split by a
thin amber line. Nearest-neighbour sampling, so that each icon pixel is a pixel of the slice and the
noise is not averaged away. Writes ``Resources/TSCDenoise.png`` (128 x 128, the extension icon,
EXTENSION_ICONURL) and ``TSCDenoise/Resources/Icons/TSCDenoise.png`` (64 x 64, the module icon).
The phantom and the noise are seeded and the simulation runs on one thread, numpy draws the icons
and zlib writes the PNGs (no extra dependency, no timestamp), so a rerun gives the same bytes.
No patient or third-party data is used: the icons are made from the project's own procedural
phantom and are covered by the project's license (Apache-2.0).
"""

from __future__ import annotations

import struct
import sys
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from TSCDenoiseLib.training.phantom import make_phantom  # noqa: E402
from TSCDenoiseLib.training.simulation import LowDoseParameters, LowDoseSimulator  # noqa: E402

ICONS = {ROOT / "Resources" / "TSCDenoise.png": 128, ROOT / "TSCDenoise" / "Resources" / "Icons" / "TSCDenoise.png": 64}
WINDOW = (-20.0, 100.0)  # HU: level 40, width 120 (brain)
SLICE_SIZE = 256  # pixels of the phantom slice (square)
PIXEL_SPACING_MM = 0.8
Z_START = 0.5  # along the head, skull base 0 -> vertex 1: mid-brain, ventricles in view
TEXTURE_HU = 4.0  # the phantom's tissue texture: a clean-looking normal-dose half
DOSE = 0.25  # dose fraction of the noisy half
SEED = 0
BODY_HU = -500.0  # above: the head
MARGIN = 0.04  # of the head's extent, on each side
DIVIDER_RGB = (255, 176, 0)


def phantom_pair() -> tuple[np.ndarray, np.ndarray]:
    """(low dose, normal dose) HU slices of the procedural head, (SLICE_SIZE, SLICE_SIZE) each."""
    spacing = (PIXEL_SPACING_MM, PIXEL_SPACING_MM, 2.0)
    ndct = make_phantom((1, SLICE_SIZE, SLICE_SIZE), kind="head", spacing=spacing, seed=SEED,
                        texture_hu=TEXTURE_HU, z_start=Z_START)[0]
    # simulate_low_dose(ndct, dose=DOSE, seed=SEED, pixel_spacing=...) on one thread: the projector
    # splits the views over its threads, so a fixed count keeps the sums, and the bytes, the same
    # on any machine.
    simulator = LowDoseSimulator(LowDoseParameters(dose_fraction=DOSE), threads=1)
    ldct = simulator.simulate_slice(ndct, PIXEL_SPACING_MM, np.random.default_rng(SEED))
    return ldct, ndct


def square_around_head(image: np.ndarray) -> tuple[slice, slice]:
    """Square (rows, columns) holding the head plus a margin (clipped to the image)."""
    ys, xs = np.nonzero(image > BODY_HU)
    side = int(round(max(ys.max() - ys.min(), xs.max() - xs.min()) * (1 + 2 * MARGIN)))
    side = min(side, *image.shape)
    top = int(np.clip(round((ys.min() + ys.max() - side) / 2), 0, image.shape[0] - side))
    left = int(np.clip(round((xs.min() + xs.max() - side) / 2), 0, image.shape[1] - side))
    return slice(top, top + side), slice(left, left + side)


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour resampling of a square image to (size, size)."""
    index = ((np.arange(size) + 0.5) * image.shape[0] / size).astype(int)
    return image[np.ix_(index, index)]


def to_gray(hu: np.ndarray) -> np.ndarray:
    low, high = WINDOW
    return np.round(np.clip((hu - low) / (high - low), 0.0, 1.0) * 255).astype(np.uint8)


def icon(ldct: np.ndarray, ndct: np.ndarray, size: int) -> np.ndarray:
    """(size, size, 3) uint8: low dose on the left, normal dose on the right, divider in between."""
    gray = np.where(np.arange(size)[None, :] < size // 2, to_gray(resize(ldct, size)), to_gray(resize(ndct, size)))
    rgb = np.repeat(gray[:, :, None], 3, axis=2)
    width = max(1, size // 64)
    rgb[:, size // 2 - width // 2 - width % 2 : size // 2 + width // 2] = DIVIDER_RGB
    return rgb


def write_png(rgb: np.ndarray, path: Path) -> None:
    """8-bit RGB PNG with no ancillary chunks (no timestamp): same pixels, same bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    height, width, _ = rgb.shape
    rows = b"".join(b"\x00" + row.tobytes() for row in np.ascontiguousarray(rgb, dtype=np.uint8))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b"")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png)


def main() -> None:
    ldct, ndct = phantom_pair()
    rows, columns = square_around_head(ndct)  # row 0 is the front of the head (sinuses at the base)
    ldct_square, ndct_square = ldct[rows, columns], ndct[rows, columns]
    for path, size in ICONS.items():
        write_png(icon(ldct_square, ndct_square, size), path)
        print(f"Wrote {path.relative_to(ROOT)} ({size} x {size}, {path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
