"""DICOM series checks before reading: damaged files, slices of another size, and where the slices lie.

GDCM (under SimpleITK) leaves out a file it cannot parse without a word, reads a series with a
missing slice, uneven gaps, duplicate positions or a gantry tilt onto one averaged spacing, and
stops with a traceback on a slice of another size. Here every file of the folder is looked at with
pydicom and the slice positions (ImagePositionPatient projected on the slice normal) are measured.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import InvalidInputError

# Storage SOP classes of images a CT folder may hold (CT, MR, PET, secondary capture) and their enhanced or
# multi-frame children (the class UID followed by more components). RT objects (1.2.840.10008.5.1.4.1.1.481.x)
# share the MR class's leading characters, so a class matches only whole components.
_IMAGE_SOP_CLASSES = ("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.4", "1.2.840.10008.5.1.4.1.1.128",
                      "1.2.840.10008.5.1.4.1.1.130", "1.2.840.10008.5.1.4.1.1.7")
_PIXEL_DATA = 0x7FE00010
_DEFER_BYTES = 4096  # leave pixel data unread (its length is checked against the file's size)
_DAMAGED_FIX = "restore it from the archive or PACS, or move it out of the folder to denoise the other slices"


@dataclass(frozen=True)
class SliceLayout:
    """Where the slices of a series lie, along the slice normal: what cannot go into one regular grid."""

    problem: str | None  # None: a regular grid; else one sentence saying what is irregular
    duplicate: bool = False  # two slices at one position (never valid)
    positions: np.ndarray | None = field(default=None, compare=False)  # ImagePositionPatient per file (N, 3)
    orientation: np.ndarray | None = field(default=None, compare=False)  # row and column directions (6,)
    spacing: float = 0.0  # the usual gap between neighbouring slices, mm


def readable_or_refuse(path: Path) -> None:
    """Refuse `path` (file or folder) when this user may not read it, saying so rather than "does not exist"."""
    try:
        is_dir = path.is_dir()
        path.stat()
    except PermissionError as error:
        raise InvalidInputError(
            f"{path} cannot be read: permission denied on a folder above it; ask for read access or copy it "
            "somewhere you can read."
        ) from error
    except FileNotFoundError as error:
        raise InvalidInputError(f"{path} does not exist.") from error
    wanted = os.R_OK | (os.X_OK if is_dir else 0)
    if not os.access(path, wanted):
        kind = "folder" if is_dir else "file"
        raise InvalidInputError(
            f"{path} cannot be read: permission denied on the {kind}; ask for read access (e.g. chmod u+r) or copy "
            "it somewhere you can read."
        )


def check_folder_files(folder: Path, series_files: Sequence[str], chosen: Sequence[str]) -> list:
    """Refuse a folder holding a damaged or unreadable DICOM image; the datasets of `chosen`, in its order.

    Args:
        folder: the DICOM folder.
        series_files: every file GDCM put in some series of the folder.
        chosen: the files of the series to be read.

    Returns:
        The pydicom datasets of `chosen` (pixel data read, so their length is checked).

    Raises:
        InvalidInputError: naming the first damaged or unreadable file and the fix.
    """
    import pydicom

    in_series = {os.path.normpath(f) for f in series_files}
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or not entry.is_file() or os.path.normpath(entry) in in_series:
            continue
        if not os.access(entry, os.R_OK):
            raise InvalidInputError(f"{entry} in the DICOM folder cannot be read: permission denied; ask for read "
                                    "access (e.g. chmod u+r) or move it out of the folder.")
        problem = _damage_outside_series(entry, pydicom)
        if problem:
            raise InvalidInputError(f"{entry} is a damaged DICOM file ({problem}); {_DAMAGED_FIX}.")
    datasets = []
    for file in chosen:
        try:
            with warnings.catch_warnings():  # odd but harmless values: GDCM reads them, no noise on stderr
                warnings.simplefilter("ignore")
                dataset = pydicom.dcmread(file, defer_size=_DEFER_BYTES, force=True)  # GDCM took it: no preamble needed
        except Exception as error:  # pydicom raises many types on damaged files
            raise InvalidInputError(f"{file} is a damaged DICOM file ({error}); {_DAMAGED_FIX}.") from error
        problem = _pixel_data_problem(dataset, file)
        if problem:
            raise InvalidInputError(f"{file} is a damaged DICOM file ({problem}); {_DAMAGED_FIX}.")
        datasets.append(dataset)
    return datasets


def _damage_outside_series(path: Path, pydicom) -> str | None:
    """Why a file that GDCM left out of every series is a damaged image, or None if it is not an image."""
    with open(path, "rb") as file:
        preamble = file.read(132)
    if not preamble:
        return "the file is empty"
    if preamble[128:132] != b"DICM":
        if path.suffix.lower() in (".dcm", ".dicom", ".ima"):
            return "no DICOM header: the file is cut short or overwritten"
        return None  # not DICOM (notes, thumbnails)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dataset = pydicom.dcmread(path, defer_size=_DEFER_BYTES)
    except Exception as error:
        return f"pydicom cannot parse it: {error}"
    meta = getattr(dataset, "file_meta", None) or {}
    sop_class = str(dataset.get("SOPClassUID", "") or meta.get("MediaStorageSOPClassUID", ""))
    if not sop_class.startswith("1.2.840.10008."):
        return "no valid SOP class: its header is corrupt"
    if "PixelData" not in dataset and "Rows" not in dataset and not _is_image_class(sop_class):
        return None  # DICOMDIR, structured report, ...
    return _pixel_data_problem(dataset, path) or "an image that the DICOM reader cannot parse"


def _pixel_data_length(dataset, path) -> int:
    """Bytes of pixel data the file really holds, without reading a deferred (large) value."""
    try:
        element = dataset.get_item(_PIXEL_DATA, keep_deferred=True)
    except TypeError:  # pydicom < 3 has no keep_deferred: read the value
        element = dataset.get_item(_PIXEL_DATA)
    value = element.value
    if value is None and getattr(element, "value_tell", None) is not None:
        return max(0, min(int(element.length), os.path.getsize(path) - int(element.value_tell)))
    return len(value or b"")


def _pixel_data_problem(dataset, path) -> str | None:
    if "PixelData" not in dataset:
        return "no pixel data: the file ends before its image" if "Rows" in dataset or _is_image(dataset) else None
    syntax = dataset.file_meta.get("TransferSyntaxUID") if hasattr(dataset, "file_meta") else None
    if syntax is not None and syntax.is_compressed:
        return None
    try:
        expected = (int(dataset.Rows) * int(dataset.Columns) * int(dataset.get("SamplesPerPixel", 1) or 1)
                    * int(dataset.BitsAllocated) // 8 * int(dataset.get("NumberOfFrames", 1) or 1))
    except (AttributeError, TypeError, ValueError):
        return "Rows, Columns or BitsAllocated missing"
    have = _pixel_data_length(dataset, path)
    return f"truncated: its pixel data hold {have} of {expected} bytes" if have < expected else None


def _is_image_class(sop_class: str) -> bool:
    return any(sop_class == uid or sop_class.startswith(uid + ".") for uid in _IMAGE_SOP_CLASSES)


def _is_image(dataset) -> bool:
    meta = getattr(dataset, "file_meta", None) or {}
    return _is_image_class(str(dataset.get("SOPClassUID", "") or meta.get("MediaStorageSOPClassUID", "")))


def check_slice_sizes(files: Sequence[str], datasets: Sequence) -> None:
    """Refuse a series whose slices differ in size, naming the odd file."""
    sizes = [(int(ds.Rows), int(ds.Columns)) for ds in datasets]
    common = max(set(sizes), key=sizes.count)
    for file, size in zip(files, sizes):
        if size != common:
            raise InvalidInputError(
                f"{file} is {size[0]}x{size[1]} pixels but the other slices of its series are {common[0]}x{common[1]}; "
                "it belongs to another series or reconstruction: move it out of the folder."
            )


def slice_layout(files: Sequence[str], datasets: Sequence) -> SliceLayout:
    """Whether the slices lie on one regular grid along their normal (no gap, no tilt, no duplicate).

    Positions are ImagePositionPatient projected on the normal of ImageOrientationPatient; in-plane
    offsets that grow along the normal are a gantry tilt (shear). A series without positions (or of
    one slice) passes.
    """
    if len(datasets) < 2 or any("ImagePositionPatient" not in ds or "ImageOrientationPatient" not in ds
                                for ds in datasets):
        return SliceLayout(None)
    orientations = np.array([[float(v) for v in ds.ImageOrientationPatient] for ds in datasets])
    if np.abs(orientations - orientations[0]).max() > 1e-3:
        odd = next(f for f, o in zip(files, orientations) if np.abs(o - orientations[0]).max() > 1e-3)
        return SliceLayout(f"the slices have different orientations ({Path(odd).name} differs from "
                           f"{Path(files[0]).name})")
    row, column = orientations[0][:3], orientations[0][3:]
    normal = np.cross(row, column)
    normal /= np.linalg.norm(normal)
    positions = np.array([[float(v) for v in ds.ImagePositionPatient] for ds in datasets])
    positions_in_file_order = positions
    distance = positions @ normal
    order = np.argsort(distance, kind="stable")
    names = [Path(files[i]).name for i in order]
    distance, positions = distance[order], positions[order]
    gaps = np.diff(distance)
    close = np.flatnonzero(gaps < 1e-2)
    if close.size:
        i = int(close[0])
        return SliceLayout(f"{names[i]} and {names[i + 1]} lie at the same position ({distance[i]:.2f} mm along the "
                           "slice normal): the folder mixes two acquisitions or holds a copied slice; keep one of "
                           "them", duplicate=True)
    nominal = float(np.median(gaps))
    tolerance = max(1e-3, 1e-2 * nominal)
    measured = dict(positions=positions_in_file_order, orientation=orientations[0], spacing=nominal)
    worst = int(np.argmax(np.abs(gaps - nominal)))
    if abs(gaps[worst] - nominal) > tolerance:
        ratio = gaps[worst] / nominal
        if ratio > 1.5 and abs(ratio - round(ratio)) * nominal <= tolerance:
            lost = int(round(ratio)) - 1
            return SliceLayout(f"{lost} slice{'s' if lost > 1 else ''} missing: {names[worst]} and {names[worst + 1]} "
                               f"are {gaps[worst]:g} mm apart where the others are {nominal:g} mm apart", **measured)
        return SliceLayout(f"slices not evenly spaced: gaps from {gaps.min():g} to {gaps.max():g} mm (e.g. "
                           f"{gaps[worst]:g} mm between {names[worst]} and {names[worst + 1]})", **measured)
    in_plane = (positions - positions[0]) - np.outer(distance - distance[0], normal)
    pixel = min(float(v) for v in datasets[0].get("PixelSpacing", [1.0, 1.0]))
    if np.linalg.norm(in_plane, axis=1).max() > max(1e-2, 0.05 * pixel):
        span = distance[-1] - distance[0]
        shear = np.linalg.norm(in_plane[-1]) / span if span > 0 else 0.0
        return SliceLayout(f"tilted gantry: each slice is shifted in its plane by {shear * nominal:.3g} mm from the "
                           f"last, a {np.degrees(np.arctan(shear)):.1f}° tilt from the slice normal", **measured)
    return SliceLayout(None)


def is_dicom_file(path: Path) -> bool:
    """Whether `path` starts like a DICOM Part 10 file ("DICM" after the 128-byte preamble)."""
    with open(path, "rb") as file:
        return file.read(132)[128:132] == b"DICM"


def check_dicom_file(path: Path) -> None:
    """Refuse a single DICOM image file that pydicom cannot parse or whose pixel data are cut short."""
    import pydicom

    try:
        dataset = pydicom.dcmread(path, defer_size=_DEFER_BYTES)
    except Exception as error:  # pydicom raises many types on damaged files
        raise InvalidInputError(f"{path} is a damaged DICOM file ({error}); restore it from the archive or PACS.") from error
    problem = _pixel_data_problem(dataset, path)
    if problem:
        raise InvalidInputError(f"{path} is a damaged DICOM file ({problem}); restore it from the archive or PACS.")
