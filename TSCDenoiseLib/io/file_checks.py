"""Integrity of image files before SimpleITK reads them: truncated data and NaN that the readers hide.

SimpleITK's NIfTI reader fills a short data block with zeros and turns NaN/Inf into 0 without an
error, and its MetaImage reader reports a short data block as "No such file or directory". These
checks read the file's own header, count the bytes of voxel data that are really there (decompressing
a .nii.gz once, which also checks its gzip CRC) and, for float NIfTI, count the non-finite voxels.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InvalidInputError

_CHUNK = 1 << 23
_COPY_AGAIN = "copy it again from its source (the transfer or export was cut short)"
# NIfTI datatype code -> numpy type (the float and complex ones: whose NaN/Inf the NIfTI reader zeroes).
_NIFTI_TYPES = {2: "u1", 4: "i2", 8: "i4", 16: "f4", 64: "f8", 256: "i1", 512: "u2", 768: "u4", 1024: "i8",
                1280: "u8", 32: "c8", 1792: "c16"}
_MET_SIZES = {"MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4,
              "MET_LONG": 4, "MET_ULONG": 4, "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4,
              "MET_DOUBLE": 8}


def check_image_file(path: str | os.PathLike) -> None:
    """Refuse a NIfTI or MetaImage file whose voxel data are incomplete, or a NIfTI holding NaN/Inf.

    Other formats pass unchecked (their readers report short data themselves).

    Raises:
        InvalidInputError: the file is truncated, its compression is corrupt, or it holds NaN/Inf.
    """
    path = Path(path)
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        _check_nifti(path)
    elif name.endswith((".mha", ".mhd")):
        _check_metaimage(path)


def nonfinite_message(path: Path, count: int) -> str:
    return (f"{path} holds {count} NaN or infinite values; a CT cannot be denoised with them: replace them first "
            "(e.g. with -1024 HU, air) and save the volume again.")


def _truncated(path: Path, have: int, expected: int, slice_bytes: int, slices: int) -> InvalidInputError:
    whole = max(0, have) // slice_bytes if slice_bytes else 0
    missing = f" (slices {whole + 1} to {slices} of {slices} incomplete)" if slice_bytes and slices > 1 else ""
    return InvalidInputError(
        f"{path} is truncated: it holds {max(0, have)} of the {expected} bytes of voxel data{missing}; {_COPY_AGAIN}."
    )


def _open_maybe_gzip(path: Path):
    with open(path, "rb") as file:
        magic = file.read(2)
    return gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")


@dataclass(frozen=True)
class _NiftiHeader:
    endian: str
    dim: tuple
    datatype: int
    bitpix: int
    vox_offset: int
    scl_slope: float
    scl_inter: float

    @property
    def shape(self) -> list[int] | None:
        """(x, y, z, ...) sizes, or None for an invalid header (SimpleITK then refuses it itself)."""
        ndim = int(self.dim[0])
        if not 1 <= ndim <= 7 or any(int(n) < 1 for n in self.dim[1:ndim + 1]) or self.bitpix <= 0 or self.bitpix % 8:
            return None
        return [int(n) for n in self.dim[1:ndim + 1]]


def _nifti_header(header: bytes) -> _NiftiHeader | None:
    """The fields needed here of a single-file NIfTI-1/2 header, or None when it is not one."""
    for endian in "<>":
        if len(header) >= 348 and struct.unpack(endian + "i", header[:4])[0] == 348 and header[344:347] == b"n+1":
            dim = struct.unpack(endian + "8h", header[40:56])
            datatype, bitpix = struct.unpack(endian + "2h", header[70:74])
            vox_offset, slope, inter = struct.unpack(endian + "3f", header[108:120])
            return _NiftiHeader(endian, dim, datatype, bitpix, int(vox_offset), slope, inter)
        if len(header) >= 540 and struct.unpack(endian + "i", header[:4])[0] == 540 and header[4:7] == b"n+2":
            datatype, bitpix = struct.unpack(endian + "2h", header[12:16])
            dim = struct.unpack(endian + "8q", header[16:80])
            vox_offset, = struct.unpack(endian + "q", header[168:176])
            slope, inter = struct.unpack(endian + "2d", header[176:192])
            return _NiftiHeader(endian, dim, datatype, bitpix, int(vox_offset), slope, inter)
    return None


def _check_nifti(path: Path) -> None:
    _scan_nifti(path, keep=False)


def read_nifti_voxels(path: str | os.PathLike) -> np.ndarray | None:
    """The voxels of a plain 3D scalar NIfTI file as float32 (Z, Y, X), scl_slope/scl_inter applied, checked.

    The file is decompressed once, for the checks and the values (SimpleITK then only reads the
    header, for the geometry). None for anything else (2D, 4D, vector, complex or RGB data): read those
    with SimpleITK after :func:`check_image_file`.

    Raises:
        InvalidInputError: the file is truncated, its gzip stream is broken, or it holds NaN/Inf.
    """
    return _scan_nifti(Path(path), keep=True)


def _scan_nifti(path: Path, keep: bool) -> np.ndarray | None:
    try:
        with _open_maybe_gzip(path) as stream:
            raw = stream.read(540)
            header = _nifti_header(raw)
            shape = header.shape if header else None
            if shape is None:
                return None  # not a single-file NIfTI we know, or an invalid one: SimpleITK says what it is
            kind = _NIFTI_TYPES.get(header.datatype)
            keep = (keep and len(shape) == 3 and kind is not None and np.dtype(kind).kind in "iuf"
                    and np.dtype(kind).itemsize * 8 == header.bitpix)
            expected = int(np.prod(shape, dtype=np.int64)) * (header.bitpix // 8)
            floats = np.dtype(header.endian + kind) if kind and np.dtype(kind).kind in "fc" else None
            have, nonfinite, data = _scan_data(stream, raw, header.vox_offset, expected,
                                               None if keep else floats, keep)
    except (EOFError, gzip.BadGzipFile, zlib.error) as error:
        raise InvalidInputError(
            f"{path} is truncated or damaged: its gzip stream is broken ({error}); {_COPY_AGAIN}."
        ) from error
    if have < expected:
        slices = int(np.prod(shape[2:], dtype=np.int64)) if len(shape) >= 3 else 1
        raise _truncated(path, have, expected, expected // slices, slices)
    if not keep:
        if nonfinite:
            raise InvalidInputError(nonfinite_message(path, nonfinite))
        return None
    values = np.frombuffer(data, dtype=np.dtype(header.endian + kind)).reshape(shape[::-1])
    if floats is not None:
        nonfinite = int(values.size - np.count_nonzero(np.isfinite(values)))
        if nonfinite:
            raise InvalidInputError(nonfinite_message(path, nonfinite))
    array = values.astype(np.float32)
    slope, inter = header.scl_slope, header.scl_inter
    if np.isfinite(slope) and slope != 0 and np.isfinite(inter) and (slope != 1 or inter != 0):
        array *= np.float32(slope)
        array += np.float32(inter)
    return array


def _scan_data(stream, header: bytes, offset: int, expected: int, floats: np.dtype | None,
               keep: bool) -> tuple[int, int, bytearray | None]:
    """(bytes of voxel data present, non-finite voxels counted, the data if `keep`), reading `stream` to its end."""
    data = bytearray(expected) if keep else None
    skip = max(0, offset - len(header))
    while skip:
        skipped = len(stream.read(min(skip, _CHUNK)))
        if not skipped:
            return -1, 0, data
        skip -= skipped
    have, nonfinite, remainder = 0, 0, b""
    chunk = header[offset:] if len(header) > offset else b""
    while True:
        if chunk:
            useful = chunk[: max(0, expected - have)]
            if keep:
                data[have:have + len(useful)] = useful
            elif floats is not None and useful:
                joined = remainder + useful
                whole = len(joined) - len(joined) % floats.itemsize
                values = np.frombuffer(joined[:whole], dtype=floats)
                nonfinite += int(values.size - np.count_nonzero(np.isfinite(values)))
                remainder = joined[whole:]
            have += len(chunk)
        chunk = stream.read(_CHUNK)
        if not chunk:
            return have, nonfinite, data


def _metaimage_header(path: Path) -> tuple[dict, int]:
    """MetaImage header fields and the byte offset where a LOCAL data block starts."""
    fields, offset = {}, 0
    with open(path, "rb") as file:
        for raw in file:
            offset += len(raw)
            key, _, value = raw.decode("latin-1").partition("=")
            fields[key.strip()] = value.strip()
            if key.strip() == "ElementDataFile" or offset > 1 << 16:
                break
    return fields, offset


def _check_metaimage(path: Path) -> None:
    fields, offset = _metaimage_header(path)
    element = _MET_SIZES.get(fields.get("ElementType", ""))
    data_file = fields.get("ElementDataFile", "")
    try:
        shape = [int(v) for v in fields.get("DimSize", "").split()]
        channels = int(fields.get("ElementNumberOfChannels", "1"))
    except ValueError:
        return
    if not element or not shape or min(shape) < 1 or data_file.upper() == "LIST" or "%" in data_file:
        return  # a layout we do not check: SimpleITK reads or refuses it itself
    expected = int(np.prod(shape, dtype=np.int64)) * channels * element
    slice_bytes = expected // shape[2] if len(shape) >= 3 else expected
    slices = int(np.prod(shape[2:], dtype=np.int64)) if len(shape) >= 3 else 1
    if data_file.upper() == "LOCAL":
        source, start = path, offset
    else:
        source = path.parent / data_file
        if not source.is_file():
            raise InvalidInputError(f"{path} names its voxel data file {source}, which does not exist; "
                                    "keep the .mhd and its data file together.")
        header_size = int(fields.get("HeaderSize", "0") or 0)
        start = max(0, header_size)
    if fields.get("CompressedData", "False").lower() == "true":
        have, complete = _inflated_size(source, start)
        if not complete or have < expected:
            raise _truncated(path, have, expected, slice_bytes, slices)
        return
    have = source.stat().st_size - start
    if have < expected:
        raise _truncated(path, have, expected, slice_bytes, slices)


def _inflated_size(path: Path, start: int) -> tuple[int, bool]:
    """(bytes a zlib stream from `start` inflates to, whether the stream ends properly)."""
    inflater, have = zlib.decompressobj(), 0
    with open(path, "rb") as file:
        file.seek(start)
        try:
            while not inflater.eof:
                chunk = file.read(_CHUNK)
                if not chunk:
                    break
                have += len(inflater.decompress(chunk))
        except zlib.error:
            return have, False
    return have, inflater.eof
