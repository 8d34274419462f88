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
    adaptation: Optional[object] = None  # the AdaptationReport when the model was adapted first
    strength: float = 1.0  # the strength the final pass ran at ("auto" resolved for this scan)

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
    check_hu: bool = True,
    resample: bool = False,
    adapt: bool = False,
    adapt_seconds: float = 300.0,
    save_adapted: Optional[PathLike] = None,
    adapt_progress: Optional[Callable[[int, int], None]] = None,
    strength: Union[str, float] = "auto",
) -> DenoisedFile:
    """Denoise the CT at `input_path` (DICOM folder/file, NIfTI, NRRD, MHA) into `output_path`.

    The output format comes from its name (see `output_kind`). Damaged or incomplete input is refused
    (see `read_ct`); a DICOM series off a regular grid (missing slice, uneven gaps, gantry tilt) goes
    into a DICOM folder as it is (each slice keeps its position), and into an image file only with
    `resample` (onto a regular grid, linear interpolation). The input is never modified; the output
    keeps the input's geometry and is written to a hidden name, read back, then renamed into place. The
    output is checked before any work (not the input nor a folder holding it, writable, and an existing
    one replaced only with `overwrite` and only if it is a file, or a DICOM folder TSCDenoise wrote).

    Args:
        input_path: the low-dose CT.
        output_path: where to write the result: .nii, .nii.gz, .nrrd, .mha, or a folder for a DICOM series.
        model_path: a checkpoint; None means the bundled default model.
        device: "auto", "cpu", "cuda", "cuda:N" or "mps".
        slab_size: axial slices per forward pass, or "auto" (from free memory).
        amp: the fastest path (channels-last; bf16/fp16 autocast on CUDA, bf16 on CPUs with AMX); False: exact fp32.
        overwrite: replace an existing output (see above).
        progress: `progress(done, total)` after every slab.
        notify: `notify(message)` hears the device and slab size chosen, a fallback to the CPU, and a warning
            when the checkpoint is a teacher (trained to reconstruct normal dose, not to denoise).
        check_hu: refuse values that do not look like HU (False: skip that plausibility check).
        resample: for an image-file output, resample a DICOM series off a regular grid instead of refusing it.
        adapt: first fine-tune a copy of the model on this scan (`adaptation.adapt_model`, self-supervised,
            with its safeguard); `notify` hears what the held-out criterion gained and which model is used.
        adapt_seconds: the adaptation's time budget.
        save_adapted: also save the model used (adapted or, if the safeguard kept it, the original) as a
            checkpoint there (checked before any work, written atomically, replaced only with `overwrite`).
        adapt_progress: `adapt_progress(done, total)` during the adaptation (total 1000).
        strength: how much to denoise: "auto" (default, from the scan's noise texture) or 0.25-2.0 (see
            `denoise_volume`); `notify` hears the one chosen. With `adapt`, the copy is trained and judged at
            this strength (for "auto", chosen on the input scan), the one the final pass runs at.

    Returns:
        A DenoisedFile: the output path (the object is usable as a path), the model, device, slab size,
        the slice count, the seconds spent reading, denoising and writing, and the strength used.

    Raises:
        InvalidInputError: a missing or unreadable input, an output that may not be written, values not in HU,
            a strength neither "auto" nor in range, or a number other than 1.0 for a model without a noise-map input.
        OutputExistsError: the output exists and `overwrite` is false (a subclass of InvalidInputError).
        CheckpointError: the model file is missing, corrupt or unsafe.
        DeviceError: the device does not exist here.
        OutputWriteError: the output could not be written completely (full disk); nothing is left behind.
    """
    from ..core.checkpoint import load_model, role_warning
    from ..core.resources import default_model_path
    from ..core.device import describe_device, precision_label, resolve_device
    from ..core.inference import denoise_with_cpu_fallback, resolve_slab_size
    from ..core.volume_checks import validate_strength
    from ..noise.strength import resolve_strength
    from .volumes import read_ct

    if input_path is None or output_path is None:
        raise InvalidInputError("Give both an input CT and an output path, e.g. --input ct.nii.gz --output denoised.nii.gz.")
    input_path, output_path = Path(input_path), Path(output_path)
    strength = validate_strength(strength)
    kind = check_output_path(input_path, output_path, overwrite)
    if save_adapted is not None:
        from ..core.atomic import check_output

        if not adapt:
            raise InvalidInputError("--save-adapted needs --adapt: it saves the model adapted to this scan.")
        check_output(save_adapted, overwrite, kind="file", inputs=[input_path, output_path])
    say = notify or (lambda message: None)
    started = time.perf_counter()
    volume, geometry = read_ct(input_path, irregular_slices=irregular_slices(input_path, kind, resample), notify=say)
    read_s = time.perf_counter() - started
    target = resolve_device(device)
    model_path = Path(model_path) if model_path is not None else default_model_path()
    model = load_model(model_path, device=target)
    # before the adaptation and the run; "auto" is chosen on the scan as given, for the model as loaded
    strength = resolve_strength(strength, volume, model, check_hu=check_hu, notify=say)
    warning = role_warning(model, model_path)
    if warning:
        say(warning)
    report = None
    if adapt:
        from ..adaptation import adapt_model, save_adapted_model

        say(f"adapting the model to this scan for up to {adapt_seconds:g} s")
        model, report = adapt_model(volume, model, geometry.spacing, budget_s=adapt_seconds, progress=adapt_progress,
                                    device=target, strength=strength)
        say(report.summary())
        if save_adapted is not None:
            saved = save_adapted_model(model, save_adapted, report, source_model=model_path.name,
                                       scan_name=input_path.name, shape=volume.shape, spacing=geometry.spacing,
                                       overwrite=overwrite)
            say(f"saved the model used to {saved}")
    slab = resolve_slab_size(slab_size, volume.shape, target, model, amp)
    say(f"input {input_path} ({' x '.join(str(n) for n in volume.shape)}), model {model_path}")
    say(f"device {describe_device(target)}, slab size {slab}, precision {precision_label(target, amp)}"
        + (f", strength {strength:g}" if strength != 1.0 else ""))
    started = time.perf_counter()
    denoised = denoise_with_cpu_fallback(volume, model, device=target, slab_size=slab, amp=amp, progress=progress,
                                         notify=notify, check_hu=check_hu, strength=strength)
    denoise_s = time.perf_counter() - started
    started = time.perf_counter()
    write_volume(denoised, geometry, input_path, output_path, overwrite)
    return DenoisedFile(output_path, model_path, str(target), slab, int(volume.shape[0]), read_s, denoise_s,
                        time.perf_counter() - started, report, strength)


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
    """Refuse an output that may not be written, before any work; returns its kind ("image" or "dicom").

    Refused: an unknown format, the input or a folder holding it, the current folder, an unwritable folder,
    an existing output without `overwrite`, and with it anything but a file (for an image) or a DICOM
    series TSCDenoise wrote (for a folder). So a long run never ends in a refused write.
    """
    from ..core.atomic import check_output
    from .dicom import check_dicom_output

    kind = output_kind(target)
    if kind == "dicom":
        check_dicom_output(target, overwrite, inputs=[source])
    else:
        check_output(target, overwrite, kind="file", inputs=[source])
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
