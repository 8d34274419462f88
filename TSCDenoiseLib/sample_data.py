"""Where the bundled sample CT (low-dose test slab and its normal-dose reference) lives."""

from __future__ import annotations

from pathlib import Path

from .errors import InvalidInputError

_PACKAGE_DIR = Path(__file__).resolve().parent
# Searched in order: inside the package (the Slicer extension installs the files there), then the
# repository's Resources/ folder of a source checkout.
SAMPLE_DATA_CANDIDATES = (
    _PACKAGE_DIR / "sample_data",
    _PACKAGE_DIR.parent / "Resources" / "SampleData" / "cranium",
)
LOW_DOSE_NAME = "ldct_test.nii.gz"
NORMAL_DOSE_NAME = "ndct_test.nii.gz"


def sample_path(name: str = LOW_DOSE_NAME) -> Path:
    """Path of a bundled sample file (default: the low-dose test slab); clear error when it is missing."""
    for folder in SAMPLE_DATA_CANDIDATES:
        if (folder / name).is_file():
            return folder / name
    looked = ", ".join(str(folder) for folder in SAMPLE_DATA_CANDIDATES)
    raise InvalidInputError(
        f"The bundled sample file {name} is missing (looked in {looked}). Run from a checkout of the repository "
        "(pip install -e .) or an installed TSCDenoise extension, or rebuild it with "
        "Resources/SampleData/make_sample_data.py."
    )
