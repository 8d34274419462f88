"""File in, file out: read a CT, denoise it with a checkpoint, write the result to a new file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Optional, Union

from .errors import InvalidInputError

PathLike = Union[str, os.PathLike]


def denoise_file(
    input_path: PathLike,
    output_path: PathLike,
    model_path: Optional[PathLike] = None,
    device: str = "auto",
    slab_size: Union[int, str] = "auto",
    amp: bool = True,
    overwrite: bool = False,
    progress: Optional[Callable[[int, int], None]] = None,
) -> Path:
    """Denoise the CT at `input_path` (DICOM folder/file, NIfTI, NRRD, MHA) into `output_path`.

    The input is never modified; the output keeps its geometry and is written atomically, and an
    existing output is refused unless `overwrite`. `model_path` None means the bundled default model.
    """
    from .checkpoint import load_model
    from .inference import denoise_volume
    from .io import read_ct, write_ct

    if input_path is None or output_path is None:
        raise InvalidInputError("Give both an input CT and an output path, e.g. --input ct.nii.gz --output denoised.nii.gz.")
    input_path, output_path = Path(input_path), Path(output_path)
    if output_path.resolve() == input_path.resolve():
        raise InvalidInputError(f"The output {output_path} is the input; choose a new file so the input is kept.")
    if output_path.exists() and not overwrite:
        raise InvalidInputError(f"{output_path} exists already; choose another output path or allow overwriting.")
    volume, geometry = read_ct(input_path)
    model = load_model(model_path, device=device)
    denoised = denoise_volume(volume, model, slab_size=slab_size, device=device, amp=amp, progress=progress)
    return write_ct(denoised, geometry, output_path, overwrite=overwrite)
