"""Where the files TSCDenoise ships live: the default model and the sample CT.

Each is searched inside the package first (where the Slicer extension and a wheel put them), then in
the repository of a source checkout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ..errors import DefaultModelMissingError, InvalidInputError

PACKAGE_DIR = Path(__file__).resolve().parent.parent
REPOSITORY_DIR = PACKAGE_DIR.parent

DEFAULT_MODEL_CANDIDATES = (
    PACKAGE_DIR / "models" / "model.pt",
    REPOSITORY_DIR / "training" / "models" / "model.pt",
)
SAMPLE_DATA_CANDIDATES = (
    PACKAGE_DIR / "sample_data",
    REPOSITORY_DIR / "Resources" / "SampleData" / "cranium",
)
SAMPLE_LOW_DOSE_FILE = "ldct_test.nii.gz"
SAMPLE_NORMAL_DOSE_FILE = "ndct_test.nii.gz"


def first_existing(candidates: Sequence[Path]) -> Path | None:
    """The first candidate path that is a file, or None."""
    return next((path for path in candidates if path.is_file()), None)


def _looked_in(candidates: Sequence[Path]) -> str:
    return ", ".join(str(path) for path in candidates)


def default_model_path() -> Path:
    """The bundled default student checkpoint.

    Returns:
        Path of the first existing candidate in `DEFAULT_MODEL_CANDIDATES`.

    Raises:
        DefaultModelMissingError: when no bundled weights exist.
    """
    found = first_existing(DEFAULT_MODEL_CANDIDATES)
    if found is None:
        raise DefaultModelMissingError(
            f"No bundled default weights were found (looked in {_looked_in(DEFAULT_MODEL_CANDIDATES)}). "
            "Pass the path of a checkpoint, or train one with the MONAI bundle in training/."
        )
    return found


def sample_path(name: str = SAMPLE_LOW_DOSE_FILE) -> Path:
    """Path of a bundled sample file (default: the low-dose test slab).

    Raises:
        InvalidInputError: when the file is not shipped with this installation.
    """
    found = first_existing([folder / name for folder in SAMPLE_DATA_CANDIDATES])
    if found is None:
        raise InvalidInputError(
            f"The bundled sample file {name} is missing (looked in {_looked_in(SAMPLE_DATA_CANDIDATES)}). "
            "Run from a checkout of the repository (pip install -e .) or an installed TSCDenoise extension, "
            "or rebuild it with Resources/SampleData/make_sample_data.py."
        )
    return found
