"""Denoise a volume in a separate process: ``python -m TSCDenoiseLib.mrml.worker INPUT.npy OUTPUT.npy [options]``.

The Slicer module runs this in ``PythonSlicer`` so the GUI stays responsive and Cancel can kill the
whole process tree. With ``--standby FOLDER`` the worker starts before there is a job: it imports torch
and the engine (most of a fresh worker's fixed cost), reports ``ready``, then waits for ONE job in
FOLDER (see `wait_for_job`), runs it exactly as a fresh worker would, and exits. Each stdout line that
starts with ``EVENT_PREFIX`` carries one JSON event: ``hello`` (pid, consumed by the parent); in standby
``ready`` (imported, seconds), then ``accepted`` (torch_preloaded, waited_s) or ``expired`` (reason);
with ``--adapt-seconds``: ``adapting`` (budget_s), ``progress`` (done, total, phase "adapt") and
``adapted`` (summary, used, gain_db: the adaptation report); then ``start`` (device, slab size, slices),
``progress`` (done, total), ``notice`` (message), ``done``
(seconds, slices_per_second) or ``error`` (message, kind "input" or "failure"). Exit codes are the
CLI's (`errors.exit_code`): 0 success, 1 runtime failure, 2 bad input, 143 cancelled (SIGTERM). The output
.npy appears only when complete.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

from ..core.volume_checks import is_auto_strength, parse_strength

EVENT_PREFIX = "TSCDENOISE "
# The standby's folder: the parent creates CLAIM_FILE (exclusively) to take the standby for a job, then writes
# JOB_FILE ({"argv": [worker arguments]}) atomically; a standby that ends without a job claims it itself first.
CLAIM_FILE, JOB_FILE = "claim", "job.json"
CLOSED_SUFFIX = "-closed"  # a standby renames its unclaimed folder to this before removing it
STANDBY_TICK_SECONDS = 0.05
HEARTBEAT_SECONDS = 1.0
JOB_WAIT_SECONDS = 600.0  # from the parent's claim to its job file (it writes the input first)


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
    from ..noise.strength import resolve_strength

    volume = np.load(args.input, mmap_mode="r", allow_pickle=False)
    device = resolve_device(args.device)
    model = load_model(args.model, device=device)
    # before any adaptation, which trains at it; "auto" is chosen on the scan as given
    strength = resolve_strength(args.strength, volume, model, check_hu=args.check_hu,
                                notify=lambda message: emit("notice", message=message))
    if args.adapt_seconds > 0:
        model = _adapt(volume, model, args, device, strength)
    shape = volume.shape if volume.ndim == 3 else (1,) + volume.shape  # a 2D slice is one slice
    slices = int(shape[0])
    slab = resolve_slab_size(args.slab_size, shape, device, model, args.amp)
    emit("start", device=describe_device(device), slab_size=slab, slices=slices)
    started = time.perf_counter()
    with atomic_output_file(args.output, overwrite=False, suffix=".npy") as tmp:
        result = np.lib.format.open_memmap(tmp, mode="w+", dtype=volume.dtype, shape=volume.shape)
        denoise_with_cpu_fallback(
            volume, model, device=device, slab_size=slab, amp=args.amp, check_hu=args.check_hu, out=result,
            strength=strength,
            progress=lambda done, total: emit("progress", done=done, total=total),
            notify=lambda message: emit("notice", message=message),
        )
        result.flush()
        del result
    seconds = time.perf_counter() - started
    emit("done", seconds=round(seconds, 3), slices_per_second=round(slices / seconds, 3) if seconds > 0 else None)
    return EXIT_OK


def _adapt(volume, model, args: argparse.Namespace, device, strength: float):
    """The model adapted to this volume (or the original, if the safeguard keeps it), with events."""
    from ..adaptation import adapt_model

    emit("adapting", budget_s=args.adapt_seconds)
    model, report = adapt_model(volume, model, args.spacing, budget_s=args.adapt_seconds, device=device,
                                strength=strength,  # trained and judged at the final pass's strength
                                progress=lambda done, total: emit("progress", done=done, total=total, phase="adapt"))
    emit("adapted", summary=report.summary(), used=report.used, gain_db=report.gain_db, seconds=round(report.seconds, 1))
    return model


def preload() -> Dict[str, Any]:
    """Import what `run` needs: torch and the engine (and torchvision where a CUDA GPU will use it).

    No device is touched beyond asking whether CUDA exists, so an idle standby holds no GPU memory. (A
    warm-up slice on the CPU was tried too: on 4 x 512^2 slices it gained nothing measurable.)

    Returns:
        {"imported": the names of the big modules now loaded}.
    """
    import numpy  # noqa: F401
    import torch

    from ..core import atomic, checkpoint, device, inference  # noqa: F401  (what run() imports)
    from ..networks.deform_conv import torchvision_deform_conv2d

    if torch.cuda.is_available():  # the model's DEM blocks import torchvision when a GPU is there
        torchvision_deform_conv2d()
    return {"imported": sorted(name for name in ("numpy", "torch", "torchvision") if name in sys.modules)}


def wait_for_job(folder: Path, idle_seconds: float, parent_pid: Optional[int] = None) -> Optional[List[str]]:
    """Wait in `folder` for the parent's job; its worker arguments, or None when the standby should end.

    The parent takes the standby by creating CLAIM_FILE with O_EXCL, then writes JOB_FILE atomically. The
    standby ends without a job (removing `folder`) when it has been idle for `idle_seconds`, when its parent is
    gone (its pid, or the output pipe, which an empty line probes every HEARTBEAT_SECONDS), or when `folder`
    was removed; before removing `folder` it claims it itself, so a parent never hands it a job it will not
    run (the parent's claim then fails and it starts a fresh worker).
    """
    claim, job = folder / CLAIM_FILE, folder / JOB_FILE
    started = last_beat = time.monotonic()
    claimed_at: Optional[float] = None
    while True:
        now = time.monotonic()
        if claimed_at is None and claim.exists():
            claimed_at = now
        if claimed_at is not None and job.exists():
            argv = json.loads(job.read_text(encoding="utf-8"))["argv"]
            emit("accepted", torch_preloaded="torch" in sys.modules, waited_s=round(claimed_at - started, 3))
            return [str(arg) for arg in argv]
        if not folder.is_dir():
            return None  # the parent removed it: it wants no job run here
        if now - last_beat >= HEARTBEAT_SECONDS:
            last_beat = now
            if not _parent_alive(parent_pid):
                _close(folder, claimed=claimed_at is not None)
                return None
        if claimed_at is not None and now - claimed_at > JOB_WAIT_SECONDS:  # the parent gave up on it
            raise TimeoutError(f"No job arrived in {JOB_WAIT_SECONDS:g} s after the standby worker was taken.")
        if claimed_at is None and now - started > idle_seconds:
            if _close(folder):
                emit("expired", reason="idle", idle_seconds=idle_seconds)
                return None
        time.sleep(STANDBY_TICK_SECONDS)


def _parent_alive(pid: Optional[int]) -> bool:
    """False once the parent is gone: its pid no longer exists, or our output pipe has no reader any more."""
    try:
        sys.stdout.write("\n")  # an empty line: ignored by the parent's reader
        sys.stdout.flush()
    except (OSError, ValueError):
        sys.stdout = open(os.devnull, "w")  # nobody reads it: keep the exit-time flush quiet
        return False
    return pid is None or _pid_exists(pid)


def _pid_exists(pid: int) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process on Windows
        try:
            import psutil
        except ImportError:
            return True  # cannot tell: the pipe probe and the idle limit still end the standby
        return psutil.pid_exists(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def _close(folder: Path, claimed: bool = False) -> bool:
    """Take `folder` for ourselves (unless the parent `claimed` it) and remove it; False if the parent got it first."""
    if not claimed:
        try:
            os.close(os.open(folder / CLAIM_FILE, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except FileExistsError:
            return False  # the parent has just taken us: run its job
        except OSError:
            return True  # the folder is gone already
    closed = folder.with_name(folder.name + CLOSED_SUFFIX)
    try:
        os.rename(folder, closed)  # atomic: from now on the parent's claim fails with FileNotFoundError
    except OSError:
        closed = folder  # e.g. in use on Windows: remove in place (the claim file blocks the parent meanwhile)
    shutil.rmtree(closed, ignore_errors=True)
    return True


def standby(args: argparse.Namespace) -> Optional[argparse.Namespace]:
    """Preload, report ``ready``, and wait for one job; the job's arguments, or None when ended without one."""
    folder = Path(args.standby)
    try:
        started = time.perf_counter()
        loaded = preload()
        emit("ready", **loaded, seconds=round(time.perf_counter() - started, 3), python=sys.executable)
        argv = wait_for_job(folder, args.idle_seconds, args.parent_pid)
    except BaseException:  # SIGTERM or a failed import: leave no folder behind unless the parent has taken it
        if not (folder / CLAIM_FILE).exists():
            _close(folder)
        raise
    if argv is None:
        return None
    job = build_parser().parse_args(argv)
    if job.standby is not None or job.input is None or job.output is None:
        raise ValueError(f"Not a job for a standby worker: {argv}")
    return job


def worker_arguments(
    input_path: os.PathLike,
    output_path: os.PathLike,
    model_path: Optional[os.PathLike] = None,
    device: str = "auto",
    slab_size: Any = "auto",
    amp: bool = True,
    check_hu: bool = True,
    adapt_seconds: float = 0.0,
    spacing: Optional[Sequence[float]] = None,
    strength: Union[str, float] = "auto",
) -> List[str]:
    """The command-line arguments of one job (after ``python -m TSCDenoiseLib.mrml.worker``).

    `strength` (how much to denoise, see `denoise_volume`) is written only when it is not "auto".

    Returns:
        The arguments, as a fresh worker's command line and a standby's job file both carry them.
    """
    arguments = [os.fspath(input_path), os.fspath(output_path), "--device", str(device), "--slab-size", str(slab_size)]
    if model_path is not None:
        arguments += ["--model", os.fspath(model_path)]
    if not amp:
        arguments.append("--no-amp")
    if not check_hu:
        arguments.append("--no-check-hu")
    if adapt_seconds and adapt_seconds > 0:
        arguments += ["--adapt-seconds", repr(float(adapt_seconds))]
        arguments += ["--spacing"] + [repr(float(v)) for v in (spacing or (1.0, 1.0, 1.0))]
    if not is_auto_strength(strength):
        arguments += ["--strength", repr(float(strength))]
    return arguments


def _slab_size(text: str):
    return text if text == "auto" else int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m TSCDenoiseLib.mrml.worker", description=__doc__.splitlines()[0])
    parser.add_argument("input", type=Path, nargs="?", help="input volume, a .npy file in HU (Z, Y, X)")
    parser.add_argument("output", type=Path, nargs="?", help="where to write the denoised .npy (must not exist)")
    parser.add_argument("--model", help="checkpoint file (default: the bundled default model)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--slab-size", type=_slab_size, default="auto", help="axial slices per forward pass")
    parser.add_argument("--no-amp", dest="amp", action="store_false", help="the exact fp32 path (default: channels-last, bf16/fp16 on CUDA, bf16 on CPUs with AMX)")
    parser.add_argument("--no-check-hu", dest="check_hu", action="store_false", help="skip the HU plausibility check")
    parser.add_argument("--adapt-seconds", type=float, default=0.0,
                        help="first adapt the model to this volume for up to N seconds (0: no adaptation)")
    parser.add_argument("--spacing", type=float, nargs=3, default=(1.0, 1.0, 1.0), metavar=("X", "Y", "Z"),
                        help="voxel spacing in mm (for the adaptation)")
    parser.add_argument("--strength", type=parse_strength, default="auto",
                        help="how much to denoise: auto (from the scan's noise texture) or 0.25-2.0 (below 1 keeps "
                             "more texture/noise, above 1 smooths more)")
    parser.add_argument("--standby", metavar="FOLDER",
                        help="start without a job: preload, then run the one job the parent puts in FOLDER")
    parser.add_argument("--idle-seconds", type=float, default=600.0,
                        help="with --standby: exit (removing FOLDER) after this long without a job")
    parser.add_argument("--parent-pid", type=int,
                        help="with --standby: exit (removing FOLDER) when this process is gone")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    from ..errors import EXIT_OK, EXIT_USAGE, Interrupted, TSCDenoiseError, exit_code, raise_on_termination

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.standby is None and (args.input is None or args.output is None):
        parser.error("INPUT and OUTPUT are required (or --standby FOLDER)")
    emit("hello", pid=os.getpid())  # the parent's cancel reaches this process even behind a launcher
    # Cancel sends SIGTERM: exit through the finally blocks so no temporary output is left behind.
    signal.signal(signal.SIGTERM, raise_on_termination)
    try:
        if args.standby is not None:
            args = standby(args)
            if args is None:
                return EXIT_OK
        return run(args)
    except (TSCDenoiseError, OSError, ValueError) as exc:
        code = exit_code(exc)
        emit("error", message=str(exc) or type(exc).__name__, kind="input" if code == EXIT_USAGE else "failure")
        return code
    except Interrupted as exc:  # cancelled: the staging output is gone, the parent knows why
        return exit_code(exc)


if __name__ == "__main__":
    sys.exit(main())
