"""File in, file out: read a CT, denoise it with a checkpoint, write the result to a new file or DICOM folder."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np

from ..errors import InvalidInputError

PathLike = Union[str, os.PathLike]
IMAGE_OUTPUTS = (".nii", ".nii.gz", ".nrrd", ".mha")


@dataclass(frozen=True)
class DenoisedFile:
    """What `denoise_file` wrote (usable as its path) and how long each part took."""

    output: Path
    model: Path
    device: str
    slab_size: int
    slices: int
    read_s: float
    denoise_s: float
    write_s: float

    @property
    def slices_per_second(self) -> float:
        return self.slices / self.denoise_s if self.denoise_s > 0 else float("inf")

    def __fspath__(self) -> str:
        return str(self.output)

    def __str__(self) -> str:
        return str(self.output)


def denoise_file(
    input_path: PathLike,
    output_path: PathLike,
    model_path: Optional[PathLike] = None,
    device: str = "auto",
    slab_size: Union[int, str] = "auto",
    amp: bool = True,
    overwrite: bool = False,
    progress: Optional[Callable[[int, int], None]] = None,
    notify: Optional[Callable[[str], None]] = None,
    resample: bool = False,
) -> DenoisedFile:
    """Denoise the CT at `input_path` (DICOM folder/file, NIfTI, NRRD, MHA) into `output_path`.

    The output format comes from its name (see `output_kind`). Damaged or incomplete input is refused
    (see `read_ct`); a DICOM series off a regular grid (missing slice, uneven gaps, gantry tilt) goes
    into a DICOM folder as it is (each slice keeps its position), and into an image file only with
    `resample` (onto a regular grid, linear interpolation). The input is never modified; the
    output keeps its geometry and is written atomically, and an existing output is refused unless
    `overwrite`. `model_path` None means the bundled default model. `notify(message)` hears the
    device and slab size chosen and any fallback to the CPU.
    """
    from ..core.checkpoint import load_model
    from ..core.resources import default_model_path
    from ..core.device import describe_device, resolve_device
    from ..core.inference import denoise_with_cpu_fallback, resolve_slab_size
    from .volumes import read_ct

    if input_path is None or output_path is None:
        raise InvalidInputError("Give both an input CT and an output path, e.g. --input ct.nii.gz --output denoised.nii.gz.")
    input_path, output_path = Path(input_path), Path(output_path)
    kind = check_output_path(input_path, output_path, overwrite)
    say = notify or (lambda message: None)
    started = time.perf_counter()
    volume, geometry = read_ct(input_path, irregular_slices=irregular_slices(input_path, kind, resample), notify=say)
    read_s = time.perf_counter() - started
    target = resolve_device(device)
    model_path = Path(model_path) if model_path is not None else default_model_path()
    model = load_model(model_path, device=target)
    slab = resolve_slab_size(slab_size, volume.shape, target, model, amp)
    say(f"input {input_path} ({' x '.join(str(n) for n in volume.shape)}), model {model_path}")
    say(f"device {describe_device(target)}, slab size {slab}, mixed precision "
        f"{'on' if amp and target.type == 'cuda' else 'off'}")
    started = time.perf_counter()
    denoised = denoise_with_cpu_fallback(volume, model, device=target, slab_size=slab, amp=amp, progress=progress,
                                         notify=notify)
    denoise_s = time.perf_counter() - started
    started = time.perf_counter()
    write_volume(denoised, geometry, input_path, output_path, overwrite)
    return DenoisedFile(output_path, model_path, str(target), slab, int(volume.shape[0]), read_s, denoise_s,
                        time.perf_counter() - started)


def output_kind(path: Path) -> str:
    """"image" for .nii/.nii.gz/.nrrd/.mha, "dicom" for a folder (a path without a suffix)."""
    name = path.name.lower()
    if any(name.endswith(suffix) for suffix in IMAGE_OUTPUTS):
        return "image"
    if path.is_dir() or "." not in name:
        return "dicom"
    raise InvalidInputError(f"Cannot tell the output format of {path}: use .nii, .nii.gz, .nrrd or .mha, "
                            "or a folder name (no suffix) for a DICOM series.")


def check_output_path(source: Path, target: Path, overwrite: bool) -> str:
    """Refuse an output that is the input, has no known format, or exists (unless `overwrite`); its kind.

    Checked before any work, so a long run never ends in a refused write.
    """
    kind = output_kind(target)
    if target.resolve() == source.resolve():
        raise InvalidInputError(f"The output {target} is the input; choose a new path so the input is kept.")
    exists = target.is_file() or (target.is_dir() and any(target.iterdir()))
    if exists and not overwrite:
        raise InvalidInputError(f"{target} exists already; pass --overwrite (overwrite=True) or choose another output path.")
    return kind


def irregular_slices(source: Path, kind: str, resample: bool) -> str:
    """`read_ct`'s irregular_slices for writing `source` as output `kind`.

    A derived DICOM series keeps each slice's own position ("keep"); an image file has one grid, so
    a series off it is refused unless resampling was asked for.
    """
    if kind == "dicom" and source.is_dir():
        return "keep"
    return "resample" if resample else "refuse"


def write_volume(array: np.ndarray, geometry, source: Path, target: Path, overwrite: bool) -> Path:
    """Write `array` (the volume read from `source`, with its geometry) to `target` in the format its name says."""
    from .dicom import write_dicom_series, write_new_dicom_series
    from .volumes import write_ct

    if output_kind(target) == "image":
        return write_ct(array, geometry, target, overwrite=overwrite)
    if source.is_dir():  # a derived series: patient, study and slice tags come from the source series
        return write_dicom_series(array, source, target, overwrite=overwrite)
    return write_new_dicom_series(array, geometry, target, overwrite=overwrite)
