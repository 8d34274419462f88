"""Read and write CT volumes: DICOM series or file, NIfTI, NRRD, MHA/MHD.

Arrays are float32 HU shaped (Z, Y, X); :class:`VolumeGeometry` carries ITK's spacing,
origin and direction. SimpleITK reads (sorting slices by position, applying rescale
slope/intercept); pydicom writes derived DICOM series. Writing never overwrites unless
asked and goes through a temporary name in the destination folder, then a rename.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from .atomic import atomic_output_file
from .errors import InvalidInputError, OutputExistsError

IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")


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


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def _sitk():
    import SimpleITK as sitk

    return sitk


def _series_in_folder(folder: Path) -> dict[str, list[str]]:
    sitk = _sitk()
    return {uid: list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid))
            for uid in sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))}


def _describe_series(uid: str, files: list[str]) -> str:
    import pydicom

    description = pydicom.dcmread(files[0], stop_before_pixels=True).get("SeriesDescription", "")
    return f"{uid} ({len(files)} files, '{description}')"


def dicom_series_files(folder: str | Path, series_uid: str | None = None) -> list[str]:
    """Files of the one (or the chosen) DICOM series in ``folder``, sorted by slice position."""
    folder = Path(folder)
    series = _series_in_folder(folder)
    if not series:
        raise InvalidInputError(f"{folder} holds no DICOM series; give a DICOM folder or a NIfTI/NRRD/MHA file.")
    if series_uid is not None:
        if series_uid not in series:
            raise InvalidInputError(f"Series {series_uid} is not in {folder}; found: {', '.join(series)}.")
        return series[series_uid]
    if len(series) > 1:
        found = "; ".join(_describe_series(uid, files) for uid, files in series.items())
        raise InvalidInputError(
            f"{folder} holds {len(series)} DICOM series: {found}. Choose one with series_uid=... "
            "or put each series in its own folder."
        )
    return next(iter(series.values()))


def read_ct(path: str | Path, series_uid: str | None = None) -> tuple[np.ndarray, VolumeGeometry]:
    """(float32 HU array (Z, Y, X), geometry) from a DICOM folder or file, NIfTI, NRRD or MHA."""
    sitk = _sitk()
    path = Path(path)
    if not path.exists():
        raise InvalidInputError(f"{path} does not exist.")
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
    """Write a (Z, Y, X) or (Y, X) array (dtype kept) as NIfTI, NRRD or MHA, atomically."""
    sitk = _sitk()
    path = Path(path)
    if _suffix(path) not in IMAGE_SUFFIXES or _suffix(path) in (".mhd", ".nhdr"):
        raise InvalidInputError(
            f"Cannot write {path.name}: use .nii, .nii.gz, .nrrd or .mha (or write_dicom_series for DICOM)."
        )
    array = np.asarray(array_hu)
    if array.ndim not in (2, 3):
        raise InvalidInputError(f"write_ct needs a 2D or 3D array, got shape {array.shape}.")
    image = sitk.GetImageFromArray(array if array.ndim == 3 else array[None])
    geometry.apply_to(image)
    with atomic_output_file(path, overwrite=overwrite, suffix=".tmp" + _suffix(path)) as temporary:
        sitk.WriteImage(image, str(temporary), True)
    return path


def write_dicom_series(
    array_hu: np.ndarray,
    source: str | Path,
    output_folder: str | Path,
    series_description_suffix: str = " (TSCDenoise denoised)",
    overwrite: bool = False,
    source_series_uid: str | None = None,
) -> Path:
    """Write ``array_hu`` (Z, Y, X) as a derived DICOM series copying the source series' tags.

    Patient, study, geometry and slice tags come from the matching source slice (same order as
    :func:`read_ct`); the series gets new UIDs and is marked DERIVED. Pixels are int16 with
    rescale slope 1 and intercept 0. The series is written into a temporary sibling folder
    that is renamed into place only when complete.
    """
    output_folder = Path(output_folder)
    files = dicom_series_files(source, source_series_uid)
    array = np.asarray(array_hu)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or array.shape[0] != len(files):
        raise InvalidInputError(
            f"The array has shape {array.shape} but the source series has {len(files)} slices; "
            "write the array that was read from this series."
        )
    with _staged_folder(output_folder, overwrite) as staging:
        _write_derived_slices(array, files, staging, series_description_suffix)
    return output_folder


def write_new_dicom_series(
    array_hu: np.ndarray,
    geometry: VolumeGeometry,
    output_folder: str | Path,
    series_description: str = "TSCDenoise",
    overwrite: bool = False,
) -> Path:
    """Write ``array_hu`` (Z, Y, X) as a new CT DICOM series (one file per slice) when no DICOM source exists.

    Geometry (LPS, any direction) goes to ImagePositionPatient / ImageOrientationPatient / PixelSpacing;
    patient and study are placeholders with new UIDs. Pixels are int16 HU (slope 1, intercept 0).
    """
    output_folder = Path(output_folder)
    array = np.asarray(array_hu)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise InvalidInputError(f"A DICOM series needs a 2D or 3D array, got shape {array.shape}.")
    with _staged_folder(output_folder, overwrite) as staging:
        _write_new_slices(array, geometry, staging, series_description)
    return output_folder


@contextmanager
def _staged_folder(output_folder: Path, overwrite: bool) -> Iterator[Path]:
    """A temporary sibling folder that replaces `output_folder` only if the block completes."""
    if output_folder.exists() and any(output_folder.iterdir()) and not overwrite:
        raise OutputExistsError(f"{output_folder} exists and is not empty; choose a new folder or pass overwrite=True.")
    output_folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_folder.name}.", dir=output_folder.parent))
    try:
        yield staging
        if output_folder.exists():
            shutil.rmtree(output_folder)
        os.replace(staging, output_folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _write_new_slices(array: np.ndarray, geometry: VolumeGeometry, folder: Path, description: str) -> None:
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    from .version import __version__

    pixels = np.clip(np.round(array), -32768, 32767).astype(np.int16)
    direction = np.asarray(geometry.direction, dtype=float).reshape(3, 3)  # columns: the x, y, z axes in LPS
    spacing_x, spacing_y, spacing_z = (float(v) for v in geometry.spacing)
    origin = np.asarray(geometry.origin, dtype=float)
    study_uid, series_uid, frame_uid = generate_uid(), generate_uid(), generate_uid()
    for index in range(pixels.shape[0]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        dataset = Dataset()
        dataset.file_meta = meta
        dataset.SOPClassUID = CTImageStorage
        dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        dataset.StudyInstanceUID, dataset.SeriesInstanceUID, dataset.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        dataset.PatientName, dataset.PatientID = "Anonymous", "TSCDenoise"
        dataset.Modality = "CT"
        dataset.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
        dataset.SeriesDescription = description[:64]
        dataset.DerivationDescription = f"Written by TSCDenoise {__version__}"
        dataset.SeriesNumber, dataset.InstanceNumber = 1, index + 1
        position = origin + direction[:, 2] * spacing_z * index
        dataset.ImagePositionPatient = [f"{v:.6f}" for v in position]
        dataset.ImageOrientationPatient = [f"{v:.6f}" for v in (*direction[:, 0], *direction[:, 1])]
        dataset.PixelSpacing = [f"{spacing_y:.6f}", f"{spacing_x:.6f}"]  # row spacing (y), then column spacing (x)
        dataset.SliceThickness = f"{spacing_z:.6f}"
        dataset.Rows, dataset.Columns = pixels.shape[1], pixels.shape[2]
        dataset.SamplesPerPixel = 1
        dataset.PhotometricInterpretation = "MONOCHROME2"
        dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit, dataset.PixelRepresentation = 16, 16, 15, 1
        dataset.RescaleSlope, dataset.RescaleIntercept, dataset.RescaleType = 1, 0, "HU"
        dataset.WindowCenter, dataset.WindowWidth = 40, 400
        dataset.PixelData = pixels[index].tobytes()
        dataset["PixelData"].VR = "OW"
        pydicom.dcmwrite(folder / f"slice_{index:04d}.dcm", dataset, enforce_file_format=True)


def _write_derived_slices(array: np.ndarray, files: Sequence[str], folder: Path, suffix: str) -> None:
    import pydicom
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    from .version import __version__

    series_uid = generate_uid()
    pixels = np.clip(np.round(array), -32768, 32767).astype(np.int16)
    for index, file in enumerate(files):
        dataset = pydicom.dcmread(file)
        if dataset.Rows != pixels.shape[1] or dataset.Columns != pixels.shape[2]:
            raise InvalidInputError(
                f"Slice {index} of the source is {dataset.Rows}x{dataset.Columns} but the array's slices are "
                f"{pixels.shape[1]}x{pixels.shape[2]}."
            )
        dataset.remove_private_tags()
        for keyword in ("SmallestImagePixelValue", "LargestImagePixelValue", "WindowCenterWidthExplanation"):
            if keyword in dataset:
                delattr(dataset, keyword)
        sop_uid = generate_uid()
        dataset.SOPInstanceUID = sop_uid
        dataset.file_meta.MediaStorageSOPInstanceUID = sop_uid
        dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        dataset.SeriesInstanceUID = series_uid
        dataset.SeriesNumber = int(dataset.get("SeriesNumber", 0) or 0) + 1000
        dataset.SeriesDescription = (str(dataset.get("SeriesDescription", "")) + suffix)[:64]
        dataset.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
        dataset.DerivationDescription = f"Denoised with TSCDenoise {__version__} (TSC-Net)"[:1024]
        dataset.SamplesPerPixel = 1
        dataset.PhotometricInterpretation = "MONOCHROME2"
        dataset.BitsAllocated = 16
        dataset.BitsStored = 16
        dataset.HighBit = 15
        dataset.PixelRepresentation = 1
        dataset.RescaleSlope = 1
        dataset.RescaleIntercept = 0
        dataset.PixelData = pixels[index].tobytes()
        dataset["PixelData"].VR = "OW"
        pydicom.dcmwrite(folder / f"slice_{index:04d}.dcm", dataset, enforce_file_format=True)
