"""DICOM series: find the files of one series, write a derived series of the input's or a new one.

pydicom writes; every series is staged in a hidden folder beside the destination, each file read back,
and the folder renamed into place (`core.atomic.atomic_output_folder`). `--overwrite` replaces only a
folder that holds nothing but a series TSCDenoise wrote.
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..core.atomic import atomic_output_folder, check_output
from ..errors import InvalidInputError
from .geometry import VolumeGeometry
from .series_checks import SliceLayout, check_folder_files, check_slice_sizes, slice_layout

DERIVATION_MARK = "TSCDenoise"  # in DerivationDescription of every slice we write: how a folder is known as ours
SERIES_OUTPUT = "a DICOM series"


def simpleitk():
    """SimpleITK, imported on first use (so that importing the io package stays cheap)."""
    import SimpleITK as sitk

    return sitk


def _series_in_folder(folder: Path) -> dict[str, list[str]]:
    sitk = simpleitk()
    return {uid: list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid))
            for uid in sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))}


def _describe_series(uid: str, files: list[str]) -> str:
    import pydicom

    description = pydicom.dcmread(files[0], stop_before_pixels=True).get("SeriesDescription", "")
    return f"{uid} ({len(files)} files, '{description}')"


def dicom_series_files(folder: str | Path, series_uid: str | None = None) -> list[str]:
    """Files of the one (or the chosen) DICOM series in ``folder``, sorted by slice position."""
    folder = Path(folder)
    return _choose_series(folder, _series_in_folder(folder), series_uid)


def checked_series_files(folder: str | Path, series_uid: str | None = None) -> tuple[list[str], SliceLayout]:
    """Like :func:`dicom_series_files`, after refusing damaged files and slices of another size; with the layout.

    Returns:
        The files of the series (sorted by position) and where its slices lie (:class:`SliceLayout`).

    Raises:
        InvalidInputError: no series, several without a choice, a damaged or unreadable file in the folder,
            or slices of different sizes (each message names the file and the fix).
    """
    folder = Path(folder)
    series = _series_in_folder(folder)
    files = _choose_series(folder, series, series_uid)
    datasets = check_folder_files(folder, [f for group in series.values() for f in group], files)
    check_slice_sizes(files, datasets)
    return files, slice_layout(files, datasets)


def _choose_series(folder: Path, series: dict[str, list[str]], series_uid: str | None) -> list[str]:
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
    output_folder = check_dicom_output(output_folder, overwrite, inputs=[source])
    files = dicom_series_files(source, source_series_uid)
    array = np.asarray(array_hu)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or array.shape[0] != len(files):
        raise InvalidInputError(
            f"The array has shape {array.shape} but the source series has {len(files)} slices; "
            "write the array that was read from this series."
        )
    with _staged_series(output_folder, overwrite, [source], array) as staging:
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
    output_folder = check_dicom_output(output_folder, overwrite)
    array = np.asarray(array_hu)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise InvalidInputError(f"A DICOM series needs a 2D or 3D array, got shape {array.shape}.")
    with _staged_series(output_folder, overwrite, [], array) as staging:
        _write_new_slices(array, geometry, staging, series_description)
    return output_folder


def check_dicom_output(folder: str | Path, overwrite: bool, inputs: Iterable[str | Path] = ()) -> Path:
    """`check_output` for a DICOM series folder: an existing one is replaced only if TSCDenoise wrote it."""
    return check_output(folder, overwrite, kind="folder", inputs=inputs, owned=is_tscdenoise_series,
                        what=SERIES_OUTPUT)


def is_tscdenoise_series(folder: Path) -> bool:
    """Whether `folder` holds nothing but the DICOM files of one series that TSCDenoise wrote."""
    import pydicom

    series = set()
    for entry in folder.iterdir():
        if not entry.is_file() or entry.is_symlink():
            return False
        try:
            dataset = pydicom.dcmread(entry, stop_before_pixels=True)
        except Exception:  # not DICOM (pydicom raises several types): not a file we wrote
            return False
        if DERIVATION_MARK not in str(dataset.get("DerivationDescription", "")):
            return False
        series.add(dataset.get("SeriesInstanceUID"))
    return len(series) <= 1


def _staged_series(folder: Path, overwrite: bool, inputs: Sequence, array: np.ndarray):
    """The staging folder of a series; every slice is read back and compared before the rename."""
    return atomic_output_folder(folder, overwrite, inputs=inputs, owned=is_tscdenoise_series, what=SERIES_OUTPUT,
                                verify=lambda staging: _verify_slices(staging, _int16_pixels(array)),
                                size_hint=array.size * 2)


def _int16_pixels(array: np.ndarray) -> np.ndarray:
    return np.clip(np.round(array), -32768, 32767).astype(np.int16)


def _verify_slices(folder: Path, pixels: np.ndarray) -> None:
    """Every slice file exists, parses, and holds exactly the pixels written (else an OSError: a short write)."""
    import pydicom

    for index in range(pixels.shape[0]):
        path = folder / f"slice_{index:04d}.dcm"
        try:
            stored = pydicom.dcmread(path).PixelData
        except OSError:
            raise
        except Exception as exc:
            raise OSError(errno.EIO, f"{path.name} reads back incomplete ({exc})", str(path)) from None
        if stored != pixels[index].tobytes():
            raise OSError(errno.EIO, f"{path.name} reads back with other pixels than were written", str(path))


def _write_new_slices(array: np.ndarray, geometry: VolumeGeometry, folder: Path, description: str) -> None:
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    from ..version import __version__

    pixels = _int16_pixels(array)
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

    from ..version import __version__

    series_uid = generate_uid()
    pixels = _int16_pixels(array)
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
