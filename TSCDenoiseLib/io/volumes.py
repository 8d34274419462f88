"""Read CT volumes (DICOM series or file, NIfTI, NRRD, MHA/MHD) and write image files.

Arrays are float32 HU shaped (Z, Y, X); :class:`VolumeGeometry` carries ITK's spacing,
origin and direction. SimpleITK reads (sorting slices by position, applying rescale
slope/intercept); DICOM series are written by `.dicom`. Writing never overwrites unless
asked and goes through a temporary name in the destination folder, then a rename.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np

from ..core.atomic import atomic_output_file, check_output
from ..errors import InvalidInputError
from .dicom import dicom_series_files
from .geometry import VolumeGeometry

IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")



def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def _sitk():
    import SimpleITK as sitk

    return sitk


def read_ct(path: str | Path, series_uid: str | None = None) -> tuple[np.ndarray, VolumeGeometry]:
    """(float32 HU array (Z, Y, X), geometry) from a DICOM folder or file, NIfTI, NRRD or MHA."""
    sitk = _sitk()
    path = Path(path)
    if not path.exists():
        raise InvalidInputError(f"{path} does not exist.")
    if not os.access(path, os.R_OK | (os.X_OK if path.is_dir() else 0)):
        raise InvalidInputError(f"{path} cannot be read (permission denied); check its permissions or copy it.")
    if path.is_dir():
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(dicom_series_files(path, series_uid))
        image = reader.Execute()
    else:
        try:
            image = sitk.ReadImage(str(path))
        except RuntimeError as error:
            raise InvalidInputError(
                f"Cannot read {path} as an image ({str(error).strip().splitlines()[-1]}); "
                f"give a DICOM folder or file, or one of {', '.join(IMAGE_SUFFIXES)}."
            ) from error
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InvalidInputError(
            f"{path} has {image.GetNumberOfComponentsPerPixel()} components per pixel (colour or vector image); "
            "CT needs one scalar per voxel: export the original grayscale series."
        )
    if image.GetDimension() == 2:
        image = sitk.JoinSeries(image)
    if image.GetDimension() != 3:
        raise InvalidInputError(f"{path} is {image.GetDimension()}D; give a 2D or 3D CT (split 4D series first).")
    array = sitk.GetArrayFromImage(image).astype(np.float32, copy=False)
    return array, VolumeGeometry.from_sitk(image)


def write_ct(array_hu: np.ndarray, geometry: VolumeGeometry, path: str | Path, overwrite: bool = False) -> Path:
    """Write a (Z, Y, X) or (Y, X) array (dtype kept) as NIfTI, NRRD or MHA, atomically and verified.

    Args:
        array_hu: the image in HU.
        geometry: its placement (spacing, origin, direction).
        path: the output file; the format comes from its suffix.
        overwrite: replace an existing file (never a folder).

    Returns:
        `path`, once the file was read back equal to `array_hu` and renamed into place.

    Raises:
        InvalidInputError: unknown suffix or wrong shape.
        OutputExistsError: `path` exists (and not `overwrite`), or is a folder.
        OutputWriteError: the file could not be written completely (full disk, short write); nothing is left.
    """
    sitk = _sitk()
    path = Path(path)
    if _suffix(path) not in IMAGE_SUFFIXES or _suffix(path) in (".mhd", ".nhdr"):
        raise InvalidInputError(
            f"Cannot write {path.name}: use .nii, .nii.gz, .nrrd or .mha (or write_dicom_series for DICOM)."
        )
    array = np.asarray(array_hu)
    if array.ndim not in (2, 3):
        raise InvalidInputError(f"write_ct needs a 2D or 3D array, got shape {array.shape}.")
    check_output(path, overwrite, kind="file")
    volume = array if array.ndim == 3 else array[None]
    image = sitk.GetImageFromArray(volume)
    geometry.apply_to(image)
    with atomic_output_file(path, overwrite=overwrite, suffix=".tmp" + _suffix(path), size_hint=array.nbytes,
                            verify=lambda written: _verify_image(written, volume, image)) as temporary:
        try:
            sitk.WriteImage(image, str(temporary), True)
        except RuntimeError as exc:  # ITK reports short writes as RuntimeError with its C++ context
            raise OSError(errno.EIO, _itk_reason(exc), str(path)) from None
    return path


def _verify_image(path: Path, expected: np.ndarray, header) -> None:
    """Read the written file back: its geometry must be `header`'s and its voxels `expected` (a truncated
    NIfTI reads back with its full header and zero-filled data, so the voxels are compared)."""
    sitk = _sitk()
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise OSError(errno.EIO, f"the written file cannot be read back ({_itk_reason(exc)})", str(path)) from None
    for name in ("GetSpacing", "GetOrigin", "GetDirection"):
        if not np.allclose(getattr(image, name)(), getattr(header, name)(), rtol=1e-5, atol=1e-4):
            raise OSError(errno.EIO, f"the written file reads back with another geometry ({name[3:].lower()})",
                          str(path))
    written = sitk.GetArrayViewFromImage(image)  # a view: `image` must stay alive while it is used
    if written.shape != expected.shape or not np.array_equal(written, expected, equal_nan=expected.dtype.kind == "f"):
        raise OSError(errno.EIO, "the written file reads back incomplete", str(path))


def _itk_reason(exc: BaseException) -> str:
    """The informative line of an ITK exception (its last 'Reason' or ERROR line, not the C++ location)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("Reason:"):
            return line.removeprefix("Reason:").strip()
    return lines[-1] if lines else type(exc).__name__

