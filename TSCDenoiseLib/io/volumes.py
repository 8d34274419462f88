"""Read CT volumes (DICOM series or file, NIfTI, NRRD, MHA/MHD) and write image files.

Arrays are float32 HU shaped (Z, Y, X); :class:`VolumeGeometry` carries ITK's spacing,
origin and direction. SimpleITK reads (sorting slices by position, applying rescale
slope/intercept); DICOM series are written by `.dicom`. Writing never overwrites unless
asked and goes through a temporary name in the destination folder, then a rename.
"""

from __future__ import annotations

import errno
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ..core.atomic import atomic_output_file, check_output
from ..errors import InvalidInputError
from .dicom import checked_series_files, simpleitk
from .file_checks import check_image_file, nonfinite_message, read_nifti_voxels
from .series_checks import check_dicom_file, is_dicom_file, readable_or_refuse
from .geometry import VolumeGeometry
from .resample import resample_to_regular_grid

IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")



def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


@contextmanager
def _itk_warnings_off(sitk) -> Iterator[None]:
    """Keep ITK's multi-line warnings off stderr: the checks here say what matters, in one line."""
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)


IRREGULAR_SLICES = ("refuse", "keep", "resample")


def read_ct(
    path: str | Path,
    series_uid: str | None = None,
    irregular_slices: str = "refuse",
    notify: Callable[[str], None] | None = None,
) -> tuple[np.ndarray, VolumeGeometry]:
    """(float32 HU array (Z, Y, X), geometry) from a DICOM folder or file, NIfTI, NRRD or MHA.

    Damaged or incomplete input is refused, never read as a wrong volume: a truncated file, NaN or
    infinite values, a damaged or unreadable DICOM file, slices of another size, two slices at one
    position, and (by default) a series whose slices do not lie on one regular grid (a missing slice,
    uneven gaps, a gantry tilt), which one spacing and direction cannot place.

    Args:
        path: DICOM folder or file, .nii/.nii.gz/.nrrd/.nhdr/.mha/.mhd file.
        series_uid: the series to read when a DICOM folder holds several.
        irregular_slices: what to do with a DICOM series off a regular grid: "refuse" (default);
            "resample" it onto a regular, untilted grid at its usual slice gap (linear interpolation;
            slices in a gap are interpolated); or "keep" the slices as they are, in position order, with a
            geometry that does not place them: only for callers that keep each slice's own position (a
            derived DICOM series, `write_dicom_series`).
        notify: hears what was resampled, in one line.

    Returns:
        The volume in HU and its geometry.

    Raises:
        InvalidInputError: the input is missing, unreadable, damaged or incomplete (the message names the fix).
    """
    if irregular_slices not in IRREGULAR_SLICES:
        raise InvalidInputError(f"irregular_slices must be one of {', '.join(IRREGULAR_SLICES)}, got {irregular_slices!r}.")
    sitk = simpleitk()
    path = Path(path)
    readable_or_refuse(path)
    with _itk_warnings_off(sitk):
        if path.is_dir():
            image, layout = _read_series(sitk, path, series_uid, irregular_slices)
            if layout.problem and irregular_slices == "resample":
                return _resampled(sitk, path, image, layout, notify)
        elif _suffix(path) in (".nii", ".nii.gz"):
            plain = _read_plain_nifti(sitk, path)
            if plain is not None:
                return plain
            image = _read_file(sitk, path, checked=True)
        else:
            image = _read_file(sitk, path)
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
    if image.GetPixelID() in (sitk.sitkFloat32, sitk.sitkFloat64):
        nonfinite = int(array.size - np.count_nonzero(np.isfinite(array)))
        if nonfinite:
            raise InvalidInputError(nonfinite_message(path, nonfinite))
    return array, VolumeGeometry.from_sitk(image)


def _read_series(sitk, folder: Path, series_uid: str | None, irregular_slices: str):
    """The series as one SimpleITK image (slices in position order) and where its slices lie."""
    files, layout = checked_series_files(folder, series_uid)
    if layout.problem and (layout.duplicate or irregular_slices == "refuse"
                           or (irregular_slices == "resample" and layout.positions is None)):
        fix = "" if layout.duplicate or layout.positions is None else (
            ". A NIfTI/NRRD/MHA volume has one regular grid, so these slices would land at wrong positions: write "
            "a DICOM folder instead (an output name without suffix; it keeps each slice's position), or resample "
            "it onto a regular grid (tscdenoise denoise --resample; read_ct(..., irregular_slices=\"resample\"))")
        raise InvalidInputError(f"{folder}: {layout.problem}{fix}.")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    try:
        return reader.Execute(), layout
    except RuntimeError as error:
        raise InvalidInputError(f"Cannot read the DICOM series in {folder} ({_itk_reason(error)}); check that its "
                                "files are intact and belong to one series.") from error


def _resampled(sitk, folder: Path, image, layout, notify) -> tuple[np.ndarray, VolumeGeometry]:
    if image.GetNumberOfComponentsPerPixel() != 1 or image.GetDimension() != 3:
        raise InvalidInputError(f"{folder} is not a scalar 3D series; it cannot be resampled.")
    array = sitk.GetArrayFromImage(image).astype(np.float32, copy=False)
    volume, geometry = resample_to_regular_grid(array, layout.positions, layout.orientation,
                                                image.GetSpacing()[:2], layout.spacing)
    if notify is not None:
        notify(f"{folder}: {layout.problem}; resampled onto a regular {layout.spacing:g} mm grid "
               f"({array.shape[0]} slices -> {volume.shape[0]})")
    return volume, geometry


def _read_plain_nifti(sitk, path: Path) -> tuple[np.ndarray, VolumeGeometry] | None:
    """(array, geometry) of a plain 3D scalar NIfTI, its voxels kept from the check (one decompression).

    None for any other NIfTI (2D, 4D, vector, ...), checked already: SimpleITK then reads it.
    """
    voxels = read_nifti_voxels(path)
    if voxels is None:
        return None
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as error:
        raise InvalidInputError(f"Cannot read the header of {path} ({_itk_reason(error)}); check that it is a "
                                "NIfTI file, or save the volume again.") from error
    if reader.GetDimension() != 3 or reader.GetNumberOfComponents() != 1 or tuple(reader.GetSize()) != voxels.shape[::-1]:
        return None
    return voxels, VolumeGeometry.from_sitk(reader)


def _read_file(sitk, path: Path, checked: bool = False):
    if not checked:
        check_image_file(path)
    if is_dicom_file(path):
        check_dicom_file(path)
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as error:
        raise InvalidInputError(
            f"Cannot read {path} as an image: it is damaged, truncated or not an image ({_itk_reason(error)}); "
            f"give a DICOM folder or file, or one of {', '.join(IMAGE_SUFFIXES)}."
        ) from error


def _itk_reason(error: BaseException) -> str:
    """The useful line of an ITK exception: its "Reason:" (e.g. No space left on device), else its last line;
    never ITK's "Reason: No such file or directory", which is a stale errno."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    useful = [line for line in lines if "No such file or directory" not in line] or lines
    reasons = [line.removeprefix("Reason:").strip() for line in useful if line.startswith("Reason:")]
    return reasons[-1] if reasons else useful[-1] if useful else "unknown error"


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
    sitk = simpleitk()
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
    sitk = simpleitk()
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
