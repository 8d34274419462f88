"""One-file checkpoints (weights + network config + HU window + role + format version), safely loaded.

Files are plain dicts of tensors and primitive values, read with ``torch.load(weights_only=True)``:
a file that needs arbitrary unpickling is refused, never executed.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Union

import torch
from torch import nn

from .device import resolve_device
from .atomic import atomic_output_file
from ..errors import CheckpointError
from .intensity import HUWindow
from .resources import default_model_path
from ..networks import NETWORKS
from ..version import __version__

FORMAT_NAME = "tscdenoise-checkpoint"
FORMAT_VERSION = 1
ROLES = ("teacher", "student")
PathLike = Union[str, os.PathLike]



def save_model(
    model: nn.Module,
    path: PathLike,
    role: str = "student",
    hu_window: Union[HUWindow, Sequence[float], None] = None,
    overwrite: bool = False,
    **metadata: Any,
) -> Path:
    """Write `model` as a checkpoint file (atomically: temp file + rename); returns the path."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        model = model.module
    if type(model).__name__ not in NETWORKS:
        raise ValueError(f"save_model writes {', '.join(NETWORKS)} networks, not {type(model).__name__}.")
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
    path = Path(path)
    with atomic_output_file(path, overwrite) as tmp:
        torch.save(payload, tmp)
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
            f"({_first_line(exc)}). Use a checkpoint written by TSCDenoiseLib.core.checkpoint.save_model."
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


def model_from_checkpoint(payload: Dict[str, Any], source: str = "checkpoint") -> nn.Module:
    """Build the network a checkpoint dict describes and load its weights (strictly)."""
    network_class = NETWORKS.get(payload["network"])
    if network_class is None:
        raise CheckpointError(
            f"{source} holds a {payload['network']!r} network; this TSCDenoise builds {', '.join(NETWORKS)}."
        )
    try:
        with torch.device("meta"):  # no random initialisation of weights about to be replaced
            model = network_class(**payload["config"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{source} has a network config this TSCDenoise cannot build: {exc}.") from None
    try:
        # assign: the loaded tensors become the parameters (no copy); strict: every one of them must be there
        model.load_state_dict(payload["state_dict"], strict=True, assign=True)
        _check_materialized(model)
    except RuntimeError as exc:
        raise CheckpointError(
            f"{source}: the weights do not match the network config {payload['config']} "
            f"({_first_line(exc)}). The file was edited or written by a different network; re-export it."
        ) from None
    model.hu_window = HUWindow.from_any(payload["hu_window"])
    model.role = payload["role"]
    model.checkpoint_metadata = dict(payload.get("metadata", {}))
    return model


def _check_materialized(model: nn.Module) -> None:
    """Raise RuntimeError if a parameter or buffer was left on the meta device (not in the checkpoint)."""
    for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
        if tensor.is_meta:
            raise RuntimeError(f"no value for {name}")


def initialize_from(model: nn.Module, path: Optional[PathLike]) -> nn.Module:
    """`model` with the weights of checkpoint `path` (same network and config), or unchanged when `path` is None.

    For warm starts (e.g. a student fine-tuned from a pixel-loss student); returns `model` for chaining.
    """
    if path is None:
        return model
    payload = read_checkpoint(path)
    if payload["network"] != type(model).__name__ or payload["config"] != model.config:
        raise CheckpointError(
            f"{path} holds a {payload['network']} with config {payload['config']}, but the network to initialize is a "
            f"{type(model).__name__} with config {model.config}. Start from a checkpoint of the same network."
        )
    model.load_state_dict(payload["state_dict"], strict=True)
    return model


def load_model(path: Optional[PathLike] = None, device: Union[str, torch.device] = "auto") -> nn.Module:
    """Load a checkpoint (default: the bundled weights) in eval mode on `device`."""
    path = Path(path) if path is not None else default_model_path()
    model = model_from_checkpoint(read_checkpoint(path), source=str(path))
    return model.to(resolve_device(device)).eval()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
