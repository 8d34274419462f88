"""Denoise a volume in a separate process: ``python -m TSCDenoiseLib.mrml.worker INPUT.npy OUTPUT.npy [options]``.

The Slicer module runs this in ``PythonSlicer`` so the GUI stays responsive and Cancel can kill the
whole process tree. Each stdout line that starts with ``EVENT_PREFIX`` carries one JSON event:
``hello`` (pid, consumed by the parent), with ``--adapt-seconds``: ``adapting`` (budget_s), ``progress`` (done,
total, phase "adapt") and ``adapted`` (summary, used, gain_db: the adaptation report); then ``start`` (device,
slab size, slices), ``progress`` (done, total), ``notice`` (message), ``done``
(seconds, slices_per_second) or ``error`` (message, kind "input" or "failure"). Exit codes are the
CLI's (`errors.exit_code`): 0 success, 1 runtime failure, 2 bad input, 143 cancelled (SIGTERM). The output
.npy appears only when complete.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, List, Optional

EVENT_PREFIX = "TSCDENOISE "


def emit(event: str, **fields: Any) -> None:
    """Write one event line and flush it, so the parent sees progress as it happens."""
    print(EVENT_PREFIX + json.dumps({"event": event, **fields}), flush=True)


def run(args: argparse.Namespace) -> int:
    """Load the input array and the model, denoise into a memory-mapped output, rename it into place."""
    import numpy as np

    from ..core.atomic import atomic_output_file
    from ..core.checkpoint import load_model
    from ..errors import EXIT_OK
    from ..core.device import describe_device, resolve_device
    from ..core.inference import denoise_with_cpu_fallback, resolve_slab_size

    volume = np.load(args.input, mmap_mode="r", allow_pickle=False)
    device = resolve_device(args.device)
    model = load_model(args.model, device=device)
    if args.adapt_seconds > 0:
        model = _adapt(volume, model, args, device)
    shape = volume.shape if volume.ndim == 3 else (1,) + volume.shape  # a 2D slice is one slice
    slices = int(shape[0])
    slab = resolve_slab_size(args.slab_size, shape, device, model, args.amp)
    emit("start", device=describe_device(device), slab_size=slab, slices=slices)
    started = time.perf_counter()
    with atomic_output_file(args.output, overwrite=False, suffix=".npy") as tmp:
        result = np.lib.format.open_memmap(tmp, mode="w+", dtype=volume.dtype, shape=volume.shape)
        denoise_with_cpu_fallback(
            volume, model, device=device, slab_size=slab, amp=args.amp, check_hu=args.check_hu, out=result,
            progress=lambda done, total: emit("progress", done=done, total=total),
            notify=lambda message: emit("notice", message=message),
        )
        result.flush()
        del result
    seconds = time.perf_counter() - started
    emit("done", seconds=round(seconds, 3), slices_per_second=round(slices / seconds, 3) if seconds > 0 else None)
    return EXIT_OK


def _adapt(volume, model, args: argparse.Namespace, device):
    """The model adapted to this volume (or the original, if the safeguard keeps it), with events."""
    from ..adaptation import adapt_model

    emit("adapting", budget_s=args.adapt_seconds)
    model, report = adapt_model(volume, model, args.spacing, budget_s=args.adapt_seconds, device=device,
                                progress=lambda done, total: emit("progress", done=done, total=total, phase="adapt"))
    emit("adapted", summary=report.summary(), used=report.used, gain_db=report.gain_db, seconds=round(report.seconds, 1))
    return model


def _slab_size(text: str):
    return text if text == "auto" else int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m TSCDenoiseLib.mrml.worker", description=__doc__.splitlines()[0])
    parser.add_argument("input", type=Path, help="input volume, a .npy file in HU (Z, Y, X)")
    parser.add_argument("output", type=Path, help="where to write the denoised .npy (must not exist)")
    parser.add_argument("--model", help="checkpoint file (default: the bundled default model)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--slab-size", type=_slab_size, default="auto", help="axial slices per forward pass")
    parser.add_argument("--no-amp", dest="amp", action="store_false", help="the exact fp32 path (default: channels-last, bf16/fp16 on CUDA, bf16 on CPUs with AMX)")
    parser.add_argument("--no-check-hu", dest="check_hu", action="store_false", help="skip the HU plausibility check")
    parser.add_argument("--adapt-seconds", type=float, default=0.0,
                        help="first adapt the model to this volume for up to N seconds (0: no adaptation)")
    parser.add_argument("--spacing", type=float, nargs=3, default=(1.0, 1.0, 1.0), metavar=("X", "Y", "Z"),
                        help="voxel spacing in mm (for the adaptation)")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    from ..errors import EXIT_USAGE, Interrupted, TSCDenoiseError, exit_code, raise_on_termination

    args = build_parser().parse_args(argv)
    emit("hello", pid=os.getpid())  # the parent's cancel reaches this process even behind a launcher
    # Cancel sends SIGTERM: exit through the finally blocks so no temporary output is left behind.
    signal.signal(signal.SIGTERM, raise_on_termination)
    try:
        return run(args)
    except (TSCDenoiseError, OSError, ValueError) as exc:
        code = exit_code(exc)
        emit("error", message=str(exc) or type(exc).__name__, kind="input" if code == EXIT_USAGE else "failure")
        return code
    except Interrupted as exc:  # cancelled: the staging output is gone, the parent knows why
        return exit_code(exc)


if __name__ == "__main__":
    sys.exit(main())
