"""One-file checkpoints (weights + network config + HU window + role + format version), safely loaded.

Files are plain dicts of tensors and primitive values, read with ``torch.load(weights_only=True)``:
a file that needs arbitrary unpickling is refused, never executed.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Union

import torch
from torch import nn

from .device import resolve_device
from .errors import CheckpointError, DefaultModelMissingError, OutputExistsError
from .intensity import HUWindow
from .networks import TSCNet
from .networks.tscnet import SIZE_MULTIPLE, pad_to_multiple
from .version import __version__

FORMAT_NAME = "tscdenoise-checkpoint"
FORMAT_VERSION = 1
ROLES = ("teacher", "student")
PathLike = Union[str, os.PathLike]

_PACKAGE_DIR = Path(__file__).resolve().parent
# Searched in order by `default_model_path`: inside the package (pip installs and the Slicer extension),
# then the bundle's models folder of a source checkout.
DEFAULT_MODEL_CANDIDATES = (
    _PACKAGE_DIR / "models" / "model.pt",
    _PACKAGE_DIR.parent / "training" / "models" / "model.pt",
)


def save_model(
    model: TSCNet,
    path: PathLike,
    role: str = "student",
    hu_window: Union[HUWindow, Sequence[float], None] = None,
    overwrite: bool = False,
    **metadata: Any,
) -> Path:
    """Write `model` as a checkpoint file (atomically: temp file + rename); returns the path."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} exists already. Pass overwrite=True or choose another path.")
    window = HUWindow.from_any(hu_window if hu_window is not None else getattr(model, "hu_window", None))
    payload = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "tscdenoise_version": __version__,
        "network": type(model).__name__,
        "config": model.config,
        "hu_window": list(window.as_tuple()),
        "role": role,
        "metadata": dict(metadata),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


def read_checkpoint(path: PathLike) -> Dict[str, Any]:
    """The checkpoint's dict, validated; raises CheckpointError with what to do on any problem."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint {path} does not exist. Check the path, or omit it to use the default model.")
    if not zipfile.is_zipfile(path):  # torch.save has written zip archives since PyTorch 1.6
        raise CheckpointError(
            f"{path} is not a readable checkpoint (corrupt, truncated, or not a PyTorch file). "
            "Copy it again or re-export it."
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"Refusing to load {path}: it holds Python objects that only an unsafe unpickler could load "
            f"({_first_line(exc)}). Use a checkpoint written by TSCDenoiseLib.checkpoint.save_model."
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CheckpointError(
            f"{path} is not a readable checkpoint (corrupt or truncated file?): {_first_line(exc)}. "
            "Copy it again or re-export it."
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_NAME:
        raise CheckpointError(
            f"{path} is a PyTorch file but not a TSCDenoise checkpoint (no '{FORMAT_NAME}' header). "
            "Convert plain state dicts with save_model(TSCNet(**config) with the weights loaded, path)."
        )
    version = payload.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {version}; this TSCDenoise ({__version__}) reads version "
            f"{FORMAT_VERSION}. Use a TSCDenoise release that matches the file, or re-export the model with it."
        )
    missing = [k for k in ("network", "config", "hu_window", "role", "state_dict") if k not in payload]
    if missing:
        raise CheckpointError(f"{path} lacks {', '.join(missing)}: the file is incomplete. Re-export it.")
    return payload


def model_from_checkpoint(payload: Dict[str, Any], source: str = "checkpoint") -> TSCNet:
    """Build the network a checkpoint dict describes and load its weights (strictly)."""
    if payload["network"] != TSCNet.__name__:
        raise CheckpointError(f"{source} holds a {payload['network']!r} network; this TSCDenoise builds TSCNet only.")
    try:
        model = TSCNet(**payload["config"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{source} has a network config this TSCDenoise cannot build: {exc}.") from None
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as exc:
        raise CheckpointError(
            f"{source}: the weights do not match the network config {payload['config']} "
            f"({_first_line(exc)}). The file was edited or written by a different network; re-export it."
        ) from None
    model.hu_window = HUWindow.from_any(payload["hu_window"])
    model.role = payload["role"]
    model.checkpoint_metadata = dict(payload.get("metadata", {}))
    return model


def default_model_path() -> Path:
    """The bundled default student checkpoint; raises DefaultModelMissingError when none ships."""
    for candidate in DEFAULT_MODEL_CANDIDATES:
        if candidate.is_file():
            return candidate
    looked = ", ".join(str(c) for c in DEFAULT_MODEL_CANDIDATES)
    raise DefaultModelMissingError(
        f"No bundled default weights were found (looked in {looked}). Pass the path of a checkpoint, "
        "or train one with the MONAI bundle in training/."
    )


def load_model(path: Optional[PathLike] = None, device: Union[str, torch.device] = "auto") -> TSCNet:
    """Load a checkpoint (default: the bundled weights) in eval mode on `device`."""
    path = Path(path) if path is not None else default_model_path()
    model = model_from_checkpoint(read_checkpoint(path), source=str(path))
    return model.to(resolve_device(device)).eval()


def export_model(
    model: nn.Module,
    path: PathLike,
    example_shape: Sequence[int] = (1, 1, 64, 64),
    overwrite: bool = False,
) -> Path:
    """Export with `torch.export` to a .pt2 file (dynamic batch; height and width any multiple of 4).

    The exported graph uses the pure-PyTorch deformable convolution (standard ops only, no torchvision
    needed to run it). `load_exported` pads other sizes, as the eager network does.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} exists already. Pass overwrite=True or choose another path.")
    n, c, h, w = example_shape
    example = torch.rand(n, c, -(-h // SIZE_MULTIPLE) * SIZE_MULTIPLE, -(-w // SIZE_MULTIPLE) * SIZE_MULTIPLE,
                         device=next(model.parameters()).device)
    # Symbolic shapes cannot prove that padding makes a size divisible by 4, so the graph takes sizes
    # that are multiples of 4 already (the eager network's padding branch is then never taken).
    dims = {
        0: torch.export.Dim("batch", min=1, max=4096),
        2: SIZE_MULTIPLE * torch.export.Dim("height_quarter", min=2, max=2048),
        3: SIZE_MULTIPLE * torch.export.Dim("width_quarter", min=2, max=2048),
    }
    backends = _dcn_backends(model)
    for module, _ in backends:
        module.backend = "torch"
    try:
        program = torch.export.export(model.eval(), (example,), dynamic_shapes=(dims,))
    finally:
        for module, backend in backends:
            module.backend = backend
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.export.save(program, tmp_name)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


class PaddedExportedModel(nn.Module):
    """An exported TSC-Net graph that accepts any height and width (replicate-pad, run, crop)."""

    def __init__(self, graph: nn.Module) -> None:
        super().__init__()
        self.graph = graph

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padded, (h, w) = pad_to_multiple(x)
        return self.graph(padded)[..., :h, :w]


def load_exported(path: PathLike) -> nn.Module:
    """Load a file written by `export_model` as a callable module for any slice size."""
    return PaddedExportedModel(torch.export.load(str(path)).module())


def _dcn_backends(model: nn.Module):
    from .networks.deform_conv import ModulatedDeformConv2d

    return [(m, m.backend) for m in model.modules() if isinstance(m, ModulatedDeformConv2d)]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
