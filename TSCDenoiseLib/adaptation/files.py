"""File in, adapted checkpoint out: `tscdenoise adapt`'s engine (the Python console may call it too)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Optional, Tuple, Union

from .adapt import adapt_model
from .metadata import save_adapted_model
from .report import AdaptationReport

PathLike = Union[str, os.PathLike]


def adapt_file(input_path: PathLike, output_path: PathLike, model_path: Optional[PathLike] = None,
               budget_s: float = 300.0, seed: int = 0, device: str = "auto", overwrite: bool = False,
               progress: Optional[Callable[[int, int], None]] = None,
               notify: Optional[Callable[[str], None]] = None,
               steps: Optional[int] = None) -> Tuple[Path, AdaptationReport]:
    """Adapt a model to the CT at `input_path` and save it as a checkpoint at `output_path`.

    The output is checked before any work (not an input, writable; replaced only with `overwrite`) and
    written atomically. When the safeguard keeps the original model, the file still gets written (the
    original's weights, with metadata saying so), so a script can rely on it. The copy is trained at the
    strength "auto" chooses for this scan, the one `denoise_volume` runs it at on the same scan by default.

    Args:
        steps: fine-tuning steps instead of the default cap (`TrainSettings.max_steps`); `budget_s` still ends
            training first if it runs out.

    Returns:
        (the checkpoint's path, the adaptation report).

    Raises:
        InvalidInputError: a missing or unreadable input, an output that may not be written, values not in HU,
            a bad `steps`.
        OutputExistsError: the output exists and `overwrite` is false.
        CheckpointError: the model file is missing, corrupt or unsafe.
        DenoiseCancelled: interrupted through `adapt_model`'s cancel (not used here).
    """
    from ..core.atomic import check_output
    from ..core.checkpoint import load_model
    from ..core.resources import default_model_path
    from ..io.volumes import read_ct

    input_path, output_path = Path(input_path), Path(output_path)
    model_path = Path(model_path) if model_path is not None else default_model_path()
    check_output(output_path, overwrite, kind="file", inputs=[input_path, model_path])
    say = notify or (lambda message: None)
    volume, geometry = read_ct(input_path, notify=say)
    model = load_model(model_path, device=device)
    say(f"adapting {model_path.name} to {input_path} ({' x '.join(str(n) for n in volume.shape)}) "
        f"for up to {budget_s:g} s")
    adapted, report = adapt_model(volume, model, geometry.spacing, budget_s=budget_s, seed=seed, progress=progress,
                                  device=device, steps=steps)
    say(report.summary())
    written = save_adapted_model(adapted, output_path, report, source_model=model_path.name, scan_name=input_path.name,
                                 shape=volume.shape, spacing=geometry.spacing, overwrite=overwrite)
    return written, report
