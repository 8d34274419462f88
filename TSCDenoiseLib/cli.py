"""The `tscdenoise` command line (also `python -m TSCDenoiseLib`).

Exit codes (`errors.exit_code`): 0 success, 1 runtime failure, 2 bad usage or bad input, 130 Ctrl-C,
143 SIGTERM; every failure is one clear line on stderr, never a traceback (TSCDENOISE_DEBUG=1 shows it).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

from .errors import (EXIT_FAILURE, EXIT_OK, EXIT_USAGE, InvalidInputError, Interrupted, TSCDenoiseError, exit_code,
                     raise_on_termination)
from .version import __version__

__all__ = ["EXIT_FAILURE", "EXIT_OK", "EXIT_USAGE", "build_parser", "main"]


def cmd_info(args: argparse.Namespace) -> int:
    """Print versions, devices, the deformable-convolution backend and the default model."""
    from .core.device import runtime_info
    from .core.checkpoint import read_checkpoint
    from .core.resources import default_model_path

    info = runtime_info()
    try:
        path = default_model_path()
        payload = read_checkpoint(path)
        info["default_model"] = {"path": str(path), "role": payload["role"], "config": payload["config"],
                                 "hu_window": payload["hu_window"]}
    except TSCDenoiseError as exc:
        info["default_model"] = {"error": str(exc)}
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for key, value in info.items():
            print(f"{key}: {value}")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    """Denoise the bundled low-dose sample with the default (or given) model; print time and scores."""
    from .demo import run_demo

    with _progress_bar("denoising") as progress:
        result = run_demo(args.out, args.model, args.device, _slab_size(args.slab_size), args.overwrite, progress)
    if args.json:
        print(json.dumps(result, indent=2))
        return EXIT_OK
    print(f"model: {result['model']} ({result['recipe'] or 'no recipe recorded'})")
    print(f"strength: {result['strength']:.2f} (auto: {result['strength_reason']})")
    print(f"denoised {result['slices']} slices in {result['seconds']} s ({result['slices_per_second']} slices/s) "
          f"-> {result['output']}")
    print(f"{'vs normal dose':28s} {'low-dose input':>15s} {'denoised':>10s}")
    for key in result["denoised"]:
        print(f"{key:28s} {result['low_dose_input'][key]:15.2f} {result['denoised'][key]:10.2f}")
    return EXIT_OK


def cmd_denoise(args: argparse.Namespace) -> int:
    """Denoise a CT file or DICOM folder into a new file or DICOM folder."""
    from .core.volume_checks import parse_strength
    from .io.pipeline import denoise_file, output_kind

    if args.save_adapted is not None and not args.adapt:
        raise InvalidInputError("--save-adapted needs --adapt: it saves the model adapted to this scan.")
    _check_budget(args.adapt_seconds)
    strength = parse_strength(args.strength)
    with _progress_bar("denoising", quiet=args.json) as progress, \
            _progress_bar("adapting", quiet=args.json, unit="‰") as adapt_progress:
        done = denoise_file(args.input, args.output, args.model, device=args.device,
                            slab_size=_slab_size(args.slab_size), amp=args.amp, overwrite=args.overwrite,
                            progress=progress, notify=_say, check_hu=args.check_hu,
                            resample=args.resample, adapt=args.adapt, adapt_seconds=args.adapt_seconds,
                            save_adapted=args.save_adapted, adapt_progress=adapt_progress,
                            strength=strength)
    result = {"input": args.input, "output": str(done.output), "format": output_kind(done.output),
              "model": str(done.model), "device": done.device, "slab_size": done.slab_size,
              "slices": done.slices, "read_s": round(done.read_s, 3), "denoise_s": round(done.denoise_s, 3),
              "write_s": round(done.write_s, 3), "slices_per_second": round(done.slices_per_second, 3),
              "strength": done.strength}
    if done.adaptation is not None:
        result["adaptation"] = done.adaptation.as_metadata()
        result["saved_adapted"] = args.save_adapted
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"denoised {result['slices']} slices in {result['denoise_s']:.2f} s ({result['slices_per_second']:.2f} "
              f"slices/s; read {result['read_s']:.2f} s, write {result['write_s']:.2f} s) -> {done.output}")
    return EXIT_OK


def cmd_adapt(args: argparse.Namespace) -> int:
    """Fine-tune a copy of the model on one scan (self-supervised) and save it as a checkpoint."""
    from .adaptation import adapt_file

    _check_budget(args.seconds)
    if not 0 <= args.seed < 2**63:
        raise InvalidInputError(f"--seed must be a non-negative integer, got {args.seed}.")
    if args.steps is not None and args.steps < 1:
        raise InvalidInputError(f"--steps must be a positive integer, got {args.steps}.")
    with _progress_bar("adapting", quiet=args.json, unit="‰") as progress:
        path, report = adapt_file(args.input, args.out, args.model, budget_s=args.seconds, seed=args.seed,
                                  device=args.device, overwrite=args.overwrite, progress=progress, notify=_say,
                                  steps=args.steps)
    if args.json:
        print(json.dumps({"input": args.input, "output": str(path), "adaptation": report.as_metadata()}, indent=2))
    else:
        print(f"{report.summary()} -> {path}")
    return EXIT_OK


def _check_budget(seconds: float) -> None:
    if not (math.isfinite(seconds) and seconds > 0):
        raise InvalidInputError(f"The adaptation time budget must be a positive number of seconds, got {seconds}.")


def cmd_simulate(args: argparse.Namespace) -> int:
    """Simulate a low-dose CT from a normal-dose CT (projection domain) into a new file or DICOM folder."""
    from .io import read_ct
    from .io.pipeline import check_output_path, irregular_slices, write_volume
    from .training.simulation import simulate_low_dose

    source, target = Path(args.ndct), Path(args.output)
    if not 0 < args.dose <= 1:  # also false for nan
        raise InvalidInputError(f"--dose is the dose fraction in (0, 1] (0.25 = quarter dose), got {args.dose}.")
    if not (math.isfinite(args.i0) and args.i0 > 0):
        raise InvalidInputError(f"--i0 is the incident photon count per detector bin and view (> 0, finite), "
                                f"got {args.i0}; e.g. --i0 2.25e5.")
    if not 0 <= args.seed < 2**63:
        raise InvalidInputError(f"--seed must be a non-negative integer, got {args.seed}.")
    kind = check_output_path(source, target, args.overwrite)
    volume, geometry = read_ct(source, irregular_slices=irregular_slices(source, kind, resample=False))
    spacing_x, spacing_y = geometry.spacing[0], geometry.spacing[1]
    if abs(spacing_x - spacing_y) > 1e-3 * max(spacing_x, spacing_y):
        raise InvalidInputError(f"{source} has non-square pixels ({spacing_x:g} x {spacing_y:g} mm); resample it first.")
    _say(f"simulating dose {args.dose:g} of {volume.shape[0]} slices of {source} (incident flux {args.i0:g}, seed {args.seed})")
    started = time.perf_counter()
    low = simulate_low_dose(volume, dose=args.dose, seed=args.seed, pixel_spacing=spacing_x, i0=args.i0)
    seconds = time.perf_counter() - started
    write_volume(low, geometry, source, target, args.overwrite)
    result = {"input": str(source), "output": str(target), "dose": args.dose, "i0": args.i0, "seed": args.seed,
              "slices": int(volume.shape[0]), "seconds": round(seconds, 2),
              "added_noise_std_hu": round(float((low - volume).std()), 2)}
    print(json.dumps(result, indent=2) if args.json else
          f"simulated {result['slices']} slices in {result['seconds']} s (added noise std "
          f"{result['added_noise_std_hu']} HU) -> {target}")
    return EXIT_OK


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Score the low-dose input, each model (and classical baselines) against a normal-dose reference."""
    from .core.checkpoint import load_model
    from .core.resources import default_model_path
    from .core.inference import denoise_volume
    from .io import read_ct
    from .evaluation.report import evaluate_methods, write_report
    from .evaluation.scoring import CLASSICAL_LABEL, LOW_DOSE_LABEL

    if args.out is not None:
        from .evaluation.report import check_report_output

        check_report_output(args.out, args.overwrite, inputs=[args.reference, args.input])
    reference, geometry = read_ct(args.reference)
    low, low_geometry = read_ct(args.input)
    if low.shape != reference.shape:
        raise InvalidInputError(f"--input has shape {low.shape} but --reference has {reference.shape}; "
                                "give the low-dose and normal-dose versions of the same scan.")
    _check_same_grid(geometry, low_geometry)
    methods = {LOW_DOSE_LABEL: low}
    seconds = {LOW_DOSE_LABEL: 0.0}
    for path in args.model or []:
        model_path = default_model_path() if path == "default" else Path(path)
        label = _unique(methods, f"model {model_path.stem}" if path != "default" else "default model")
        model = load_model(model_path, device=args.device)
        started = time.perf_counter()
        with _progress_bar(label, quiet=args.json) as progress:
            methods[label] = denoise_volume(low, model, slab_size=_slab_size(args.slab_size), device=args.device,
                                            progress=progress, check_hu=args.check_hu)
        seconds[label] = time.perf_counter() - started
    if args.baselines:
        from .evaluation.baselines import SAMPLE_TUNED_CONDUCTANCE, SAMPLE_TUNED_ITERATIONS, anisotropic_diffusion

        started = time.perf_counter()
        methods[CLASSICAL_LABEL] = anisotropic_diffusion(low, geometry.spacing, SAMPLE_TUNED_CONDUCTANCE,
                                                         SAMPLE_TUNED_ITERATIONS)
        seconds[CLASSICAL_LABEL] = time.perf_counter() - started
    report = evaluate_methods(reference, methods, geometry.spacing, seconds=seconds)
    written = write_report(report, reference, methods, args.out, overwrite=args.overwrite) if args.out else {}
    if args.json:
        print(json.dumps({"report": report, "files": {k: str(v) for k, v in written.items()}}, indent=2))
        return EXIT_OK
    _print_table(report)
    if written:
        print(f"report: {written.get('report', args.out)}")
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    """Export a checkpoint to a deployable file and check it gives the checkpoint's output."""
    import torch

    from .core.checkpoint import load_model
    from .core.resources import default_model_path
    from .core.export import export_model, load_exported
    from .core.atomic import check_output

    target = check_output(args.out, args.overwrite, kind="file")
    model_path = Path(args.model) if args.model else default_model_path()
    model = load_model(model_path, device="cpu")
    export_model(model, target, format=args.format, overwrite=args.overwrite)
    x = torch.rand(1, 1, 61, 67, generator=torch.Generator().manual_seed(0))  # not a multiple of 4 on purpose
    with torch.no_grad():
        expected = model(x)
        if args.format == "onnx":
            actual = _run_onnx(target, x)
        else:
            actual = load_exported(target)(x)
    difference = None if actual is None else float((actual - expected).abs().max())
    result = {"model": str(model_path), "output": str(target), "format": args.format,
              "bytes": target.stat().st_size, "max_abs_difference": difference}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        check = ("not checked (onnxruntime is not installed)" if difference is None
                 else f"max |difference| vs the checkpoint {difference:.2e} on a 61x67 slice")
        print(f"wrote {target} ({result['bytes'] / 2**20:.1f} MiB); {check}")
    return EXIT_OK


def _run_onnx(path: Path, x):
    import torch

    try:
        import onnxruntime
    except ImportError:
        return None
    from .networks.tscnet import pad_to_multiple

    padded, (h, w) = pad_to_multiple(x)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    output = session.run(None, {session.get_inputs()[0].name: padded.numpy()})[0]
    return torch.from_numpy(output)[..., :h, :w]



def _check_same_grid(reference, low) -> None:
    """Refuse scoring a pair whose voxels do not lie at the same places (metrics would compare other anatomy)."""
    for name in ("spacing", "origin", "direction"):
        a, b = (tuple(float(v) for v in getattr(g, name)) for g in (reference, low))
        scale = 1.0 if name == "direction" else max(1.0, *(abs(v) for v in a))
        if any(abs(x - y) > 1e-3 * scale for x, y in zip(a, b)):
            raise InvalidInputError(
                f"--input and --reference have different {name} ({_numbers(b)} vs {_numbers(a)}): they are not on "
                "the same voxel grid. Resample the low-dose scan onto the reference first (e.g. in 3D Slicer)."
            )


def _numbers(values) -> str:
    return "(" + ", ".join(f"{v:g}" for v in values) + ")"


def _unique(existing: Dict, label: str) -> str:
    candidate, number = label, 2
    while candidate in existing:
        candidate, number = f"{label} ({number})", number + 1
    return candidate


def _print_table(report: dict) -> None:
    columns = (("psnr_db", "PSNR dB"), ("ssim", "SSIM"), ("rmse_hu", "RMSE HU"), ("noise_std_hu", "noise HU"),
               ("nps_mean_frequency", "NPS mean f"), ("edge_ratio", "edge ratio"))
    print(f"{'method':28s}" + "".join(f"{title:>12s}" for _, title in columns))
    for name, figures in report["methods"].items():
        cells = "".join(f"{figures[key]:12.4f}" if isinstance(figures.get(key), (int, float)) else f"{'-':>12s}"
                        for key, _ in columns)
        print(f"{name:28s}{cells}")


def _say(message: str) -> None:
    """Progress information: stderr, so that --json keeps stdout machine-readable; on a line of its own
    even while a progress bar is open."""
    from tqdm import tqdm

    tqdm.write(message, file=sys.stderr)


def _slab_size(text: str):
    if text == "auto":
        return "auto"
    if not text.isdigit() or int(text) < 1:
        raise InvalidInputError(f"--slab-size must be 'auto' or a positive integer, got {text!r}.")
    return int(text)


class _progress_bar:
    """tqdm bar over slices, fed by denoise_volume's progress(done, total) hook; closed when done reaches
    total, so that what follows (the adaptation's summary, the next bar) starts on its own line."""

    def __init__(self, description: str, quiet: bool = False, unit: str = "slice") -> None:
        self.description = description
        self.quiet = quiet
        self.unit = unit
        self.bar = None

    def __enter__(self):
        from tqdm import tqdm

        def update(done: int, total: int) -> None:
            if self.bar is None:
                self.bar = tqdm(total=total, desc=self.description, unit=self.unit, file=sys.stderr,
                                disable=self.quiet)
            self.bar.update(done - self.bar.n)
            if done >= total:
                self.bar.close()
                self.bar = None

        return update

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()


COMMANDS: Dict[str, Callable[[argparse.Namespace], int]] = {
    "info": cmd_info, "demo": cmd_demo, "denoise": cmd_denoise, "simulate": cmd_simulate,
    "evaluate": cmd_evaluate, "export": cmd_export, "adapt": cmd_adapt,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tscdenoise",
        description="TSC-Net low-dose CT denoising. Run 'tscdenoise COMMAND --help' for each command.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    info = commands.add_parser("info", help="versions, devices, deformable-convolution backend, default model")
    info.add_argument("--json", action="store_true", help="machine-readable output")
    demo = commands.add_parser(
        "demo", help="denoise the bundled low-dose head CT sample and compare it with its normal-dose reference"
    )
    demo.add_argument("--out", default="tscdenoise-demo.nii.gz", help="where to write the denoised volume")
    demo.add_argument("--model", help="checkpoint file (default: the bundled default model)")
    demo.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    _add_runtime_options(demo)
    _add_denoise(commands)
    _add_simulate(commands)
    _add_evaluate(commands)
    _add_export(commands)
    _add_adapt(commands)
    return parser


CT_PATHS = "a DICOM folder (or file), .nii, .nii.gz, .nrrd or .mha"
OUTPUT_PATHS = "format from the name: .nii, .nii.gz, .nrrd, .mha, or a folder name (no suffix) for a DICOM series"


def _add_runtime_options(command: argparse.ArgumentParser) -> None:
    command.add_argument("--device", default="auto",
                         help="auto (a CUDA GPU if there is one), cpu, cuda, cuda:N or mps (Apple silicon)")
    command.add_argument("--slab-size", default="auto",
                         help="axial slices per forward pass: auto (from free memory) or N; more is faster on a GPU and "
                              "needs more GPU memory")
    command.add_argument("--json", action="store_true", help="print the result as JSON on stdout")


def _add_check_hu(command: argparse.ArgumentParser) -> None:
    command.add_argument("--no-check-hu", dest="check_hu", action="store_false",
                         help="skip the check that the values look like HU (air near -1000); for CT you know is in HU")


def _add_denoise(commands) -> None:
    denoise = commands.add_parser(
        "denoise", help="denoise a low-dose CT into a new file or DICOM folder",
        description="Denoise INPUT with the default (or given) model and write OUTPUT. The input is never "
                    "modified; OUTPUT is written atomically and only replaced with --overwrite.",
        epilog="examples:\n  tscdenoise denoise ct_dicom/ denoised.nii.gz\n"
               "  tscdenoise denoise ldct.nii.gz denoised_dicom --model student.pt --device cuda",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    denoise.add_argument("input", help=f"low-dose CT: {CT_PATHS}")
    denoise.add_argument("output", help=f"denoised CT: {OUTPUT_PATHS}")
    denoise.add_argument("--model", help="checkpoint file (default: the bundled default model)")
    _add_runtime_options(denoise)
    _add_check_hu(denoise)
    denoise.add_argument("--no-amp", dest="amp", action="store_false", help="the exact fp32 path (default: the fastest one: channels-last, plus bf16/fp16 autocast on CUDA and bf16 on CPUs with AMX)")
    denoise.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    denoise.add_argument("--strength", default="auto", metavar="S",
                         help="how much to denoise: 'auto' (default: chosen from the scan's noise texture, printed) or "
                              "0.25-2.0 (1.0: the model's own level; below 1 keeps more texture/noise, above 1 smooths "
                              "more). Scales the noise level the default model is given; with --adapt it applies to "
                              "the final pass")
    denoise.add_argument("--adapt", action="store_true",
                         help="first fine-tune a copy of the model on this scan (self-supervised, no reference needed); "
                              "a held-out check keeps the original model if the adapted one is not better")
    denoise.add_argument("--adapt-seconds", type=float, default=300.0, metavar="N",
                         help="time ceiling of --adapt in seconds (default 300); the fine-tuning itself stops after "
                              "2 steps, so it usually ends in seconds")
    denoise.add_argument("--save-adapted", metavar="PATH",
                         help="with --adapt: also save the model used as a checkpoint (.pt), e.g. for the rest of a series")
    denoise.add_argument("--resample", action="store_true",
                         help="for a .nii/.nrrd/.mha OUTPUT, resample a DICOM series with missing, unevenly spaced or "
                              "tilted slices onto a regular grid (linear interpolation) instead of refusing it; a DICOM "
                              "folder OUTPUT keeps each slice's position and needs no resampling")


def _add_simulate(commands) -> None:
    simulate = commands.add_parser(
        "simulate", help="simulate low-dose CT from normal-dose CT (projection-domain noise insertion)",
        description="Forward-project NDCT (fan beam), add Poisson and electronic noise for the given dose "
                    "fraction, reconstruct (FBP) and write the low-dose version. Deterministic for a seed.",
        epilog="example:\n  tscdenoise simulate ndct.nii.gz ldct.nii.gz --dose 0.25 --seed 1",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    simulate.add_argument("ndct", help=f"normal-dose CT: {CT_PATHS}")
    simulate.add_argument("output", help=f"simulated low-dose CT: {OUTPUT_PATHS}")
    simulate.add_argument("--dose", type=float, default=0.25, help="dose fraction, 0.25 = quarter dose (default)")
    simulate.add_argument("--i0", type=float, default=2.25e5,
                          help="incident photons per detector bin and view at full dose (default 2.25e5)")
    simulate.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    simulate.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    simulate.add_argument("--json", action="store_true", help="print the result as JSON on stdout")


def _add_evaluate(commands) -> None:
    evaluate = commands.add_parser(
        "evaluate", help="image-quality report: error, noise, noise texture (NPS) and edges against normal dose",
        description="Compare the low-dose input and each model's output with the normal-dose reference: PSNR/SSIM/RMSE, "
                    "noise and HU bias in flat soft tissue, the noise power spectrum (texture) and edge sharpness.",
        epilog="example:\n  tscdenoise evaluate --reference ndct.nii.gz --input ldct.nii.gz --model default "
               "--baselines --out report/",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    evaluate.add_argument("--reference", required=True, help=f"normal-dose CT: {CT_PATHS}")
    evaluate.add_argument("--input", required=True, help="low-dose CT of the same scan (same shape)")
    evaluate.add_argument("--model", action="append", metavar="PATH",
                          help="checkpoint to evaluate ('default' for the bundled model); repeat for several")
    evaluate.add_argument("--baselines", action="store_true",
                          help="also a classical filter (curvature anisotropic diffusion, settings tuned on the sample's "
                               "validation split)")
    evaluate.add_argument("--out", help="folder for metrics.json, report.md and PNG figures")
    evaluate.add_argument("--overwrite", action="store_true", help="replace an existing report in --out")
    _add_runtime_options(evaluate)
    _add_check_hu(evaluate)


def _add_adapt(commands) -> None:
    adapt = commands.add_parser(
        "adapt", help="fine-tune the model on one scan (self-supervised) and save it as a new checkpoint",
        description="Learn this scan's own noise: a copy of the model is fine-tuned on INPUT alone (no normal-dose "
                    "reference), within a time budget. Part of the scan is held out; if the adapted model is not "
                    "better there (Stein's unbiased risk estimate), the original is kept. The checkpoint says "
                    "which, and on what it was adapted; use it with 'tscdenoise denoise --model'.",
        epilog="example:\n  tscdenoise adapt ldct.nii.gz --out adapted.pt --seconds 300\n"
               "  tscdenoise denoise ldct.nii.gz denoised.nii.gz --model adapted.pt",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    adapt.add_argument("input", help=f"the low-dose CT to adapt to: {CT_PATHS}")
    adapt.add_argument("--out", required=True, help="the adapted checkpoint to write (.pt)")
    adapt.add_argument("--model", help="checkpoint to start from (default: the bundled default model)")
    adapt.add_argument("--seconds", type=float, default=300.0,
                       help="time ceiling in seconds (default 300); training stops sooner at --steps")
    adapt.add_argument("--steps", type=int, metavar="N",
                       help="fine-tuning steps (default 2, chosen by measurement; more train the copy further "
                            "into the scan's own noise: training/docs/adaptation, 'How far to train')")
    adapt.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    adapt.add_argument("--device", default="auto", help="auto (a CUDA GPU if there is one), cpu, cuda, cuda:N or mps")
    adapt.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    adapt.add_argument("--json", action="store_true", help="print the result as JSON on stdout")


def _add_export(commands) -> None:
    export = commands.add_parser(
        "export", help="export a checkpoint for deployment (torch.export, ONNX, TorchScript)",
        description="Write a deployable file (any slice size, pure-PyTorch deformable convolution) and check "
                    "that it reproduces the checkpoint's output.",
        epilog="example:\n  tscdenoise export --model student.pt --format onnx student.onnx",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    export.add_argument("out", help="output file (.pt2 for torch_export, .onnx, .ts for torchscript)")
    export.add_argument("--model", help="checkpoint file (default: the bundled default model)")
    export.add_argument("--format", required=True, choices=("torch_export", "onnx", "torchscript"),
                        help="torch_export: torch.export program; onnx: ONNX graph (needs the [export] extra); "
                             "torchscript: traced TorchScript (deprecated by PyTorch, for older runtimes)")
    export.add_argument("--overwrite", action="store_true", help="replace the output if it exists")
    export.add_argument("--json", action="store_true", help="print the result as JSON on stdout")


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the console script; returns the exit code."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # argparse: --help/--version (0) or bad usage (2, message already printed)
        return int(exit_.code or 0)
    restore = _handle_termination()
    try:
        return COMMANDS[args.command](args)
    except BaseException as exc:  # every failure is one line and an exit code; SystemExit passes through
        if isinstance(exc, SystemExit):
            raise
        print(f"tscdenoise {args.command}: {_describe(exc)}", file=sys.stderr)
        if os.environ.get("TSCDENOISE_DEBUG") and not isinstance(exc, (TSCDenoiseError, KeyboardInterrupt, Interrupted)):
            raise
        return exit_code(exc)
    finally:
        restore()


def _describe(exc: BaseException) -> str:
    """The one line a failure prints after 'tscdenoise COMMAND: '."""
    if isinstance(exc, (KeyboardInterrupt, Interrupted)):
        return f"interrupted ({exc or 'Ctrl-C'}); unfinished outputs were removed, nothing was written."
    if exit_code(exc) == EXIT_USAGE:
        return f"error: {_one_line(exc)}"
    if isinstance(exc, TSCDenoiseError):
        return f"failed: {_one_line(exc)}"
    if isinstance(exc, OSError):  # disk full, permissions: a runtime failure
        return f"failed: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": ")
    return (f"failed: unexpected {type(exc).__name__}: {_one_line(exc)} (a bug: please report it; "
            "TSCDENOISE_DEBUG=1 shows the traceback)")


def _handle_termination() -> Callable[[], None]:
    """SIGTERM/SIGHUP raise Interrupted (like Ctrl-C raises KeyboardInterrupt), so staging files are removed."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    signals = [s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if s is not None]
    previous = {s: signal.signal(s, raise_on_termination) for s in signals}
    return lambda: [signal.signal(s, handler) for s, handler in previous.items()] and None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


if __name__ == "__main__":
    sys.exit(main())
