"""CT files in and out: DICOM series, NIfTI, NRRD and MHA (SimpleITK, pydicom), and the file-in/file-out
denoising pipeline behind `tscdenoise denoise`."""

from .dicom import dicom_series_files, write_dicom_series, write_new_dicom_series
from .geometry import VolumeGeometry
from .volumes import IMAGE_SUFFIXES, read_ct, write_ct

__all__ = ["IMAGE_SUFFIXES", "VolumeGeometry", "dicom_series_files", "read_ct", "write_ct", "write_dicom_series",
           "write_new_dicom_series"]

from ..lazy import submodule_getattr  # noqa: E402  (io.pipeline on first use, as the bundle's inference.json reaches it)

__getattr__ = submodule_getattr(__name__)
