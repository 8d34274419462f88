"""The `tscdenoise` command line (also `python -m TSCDenoiseLib`).

Exit codes: 0 success, 1 runtime failure, 2 bad usage or bad input (one clear line on stderr).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Callable, Dict, List, Optional

from .errors import InvalidInputError, TSCDenoiseError
from .version import __version__

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def cmd_info(args: argparse.Namespace) -> int:
    """Print versions, devices, the deformable-convolution backend and the default model."""
    from .backend import backend_info
    from .checkpoint import default_model_path, read_checkpoint

    info = backend_info()
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
    print(f"denoised {result['slices']} slices in {result['seconds']} s ({result['slices_per_second']} slices/s) "
          f"-> {result['output']}")
    print(f"{'vs normal dose':28s} {'low-dose input':>15s} {'denoised':>10s}")
    for key in result["denoised"]:
        print(f"{key:28s} {result['low_dose_input'][key]:15.2f} {result['denoised'][key]:10.2f}")
    return EXIT_OK


def _slab_size(text: str):
    if text == "auto":
        return "auto"
    if not text.isdigit() or int(text) < 1:
        raise InvalidInputError(f"--slab-size must be 'auto' or a positive integer, got {text!r}.")
    return int(text)


class _progress_bar:
    """tqdm bar over slices, fed by denoise_volume's progress(done, total) hook."""

    def __init__(self, description: str) -> None:
        self.description = description
        self.bar = None

    def __enter__(self):
        from tqdm import tqdm

        def update(done: int, total: int) -> None:
            if self.bar is None:
                self.bar = tqdm(total=total, desc=self.description, unit="slice", file=sys.stderr)
            self.bar.update(done - self.bar.n)

        return update

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()


COMMANDS: Dict[str, Callable[[argparse.Namespace], int]] = {"info": cmd_info, "demo": cmd_demo}


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
    demo.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    demo.add_argument("--slab-size", default="auto", help="axial slices per forward pass: auto or N")
    demo.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    demo.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except InvalidInputError as exc:
        print(f"tscdenoise {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except TSCDenoiseError as exc:
        print(f"tscdenoise {args.command}: failed: {exc}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
