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


COMMANDS: Dict[str, Callable[[argparse.Namespace], int]] = {"info": cmd_info}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tscdenoise",
        description="TSC-Net low-dose CT denoising. Run 'tscdenoise COMMAND --help' for each command.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    info = commands.add_parser("info", help="versions, devices, deformable-convolution backend, default model")
    info.add_argument("--json", action="store_true", help="machine-readable output")
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
