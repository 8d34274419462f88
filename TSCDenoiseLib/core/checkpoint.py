"""One-file checkpoints (weights + network config + HU window + role + format version), safely loaded.

Files are plain dicts of tensors and primitive values, read with ``torch.load(weights_only=True)``:
a file that needs arbitrary unpickling is refused, never executed.
"""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Union

import torch
from torch import nn

from .device import resolve_device
from .atomic import write_bytes_atomically
from ..errors import CheckpointError
from .intensity import HUWindow
from .resources import default_model_path
from ..networks import NETWORKS
from ..version import __version__

FORMAT_NAME = "tscdenoise-checkpoint"
FORMAT_VERSION = 1
ROLES = ("teacher", "student")
PathLike = Union[str, os.PathLike]



def unwrap(model: nn.Module) -> nn.Module:
    """The module a ``DataParallel`` or ``DistributedDataParallel`` wrapper holds, or `model` itself."""
    return model.module if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)) else model


def save_model(
    model: nn.Module,
    path: PathLike,
    role: str = "student",
    hu_window: Union[HUWindow, Sequence[float], None] = None,
    overwrite: bool = False,
    half_precision: bool = False,
    **metadata: Any,
) -> Path:
    """Write `model` as a checkpoint file (atomically: temp file + rename); returns the path.

    Args:
        model: the network (a DataParallel/DDP wrapper is unwrapped).
        path: the file to write.
        role: "student" (denoises) or "teacher".
        hu_window: the HU window the network was trained on (default: the model's own, else the default).
        overwrite: replace an existing file.
        half_precision: store floating-point weights as float16 (half the size); loading turns them back
            into float32, so only the rounding of the weights changes.
        **metadata: recorded in the checkpoint (training settings, provenance).

    Returns:
        The path written.

    Raises:
        ValueError: an unknown role or a network this format does not describe.
        OutputExistsError: the file exists and `overwrite` is False.
        OSError: the file cannot be written (nothing is left behind).
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    model = unwrap(model)
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
        "state_dict": {k: _stored(v, half_precision) for k, v in model.state_dict().items()},
    }
    buffer = io.BytesIO()  # torch's file writer can abort the process on a full disk; Python's raises OSError
    torch.save(payload, buffer)
    return write_bytes_atomically(path, buffer.getvalue(), overwrite)


def _stored(tensor: torch.Tensor, half_precision: bool) -> torch.Tensor:
    tensor = tensor.detach().cpu()
    if half_precision and tensor.is_floating_point():
        return tensor.to(torch.float16)
    return tensor.clone()


def _float32_weights(state_dict: Dict[str, Any]) -> Dict[str, Any]:
    """Half-precision weights of a checkpoint as float32 (the networks compute in float32)."""
    return {k: v.float() if isinstance(v, torch.Tensor) and v.dtype == torch.float16 else v
            for k, v in state_dict.items()}


def read_checkpoint(path: PathLike) -> Dict[str, Any]:
    """The checkpoint's dict, validated; raises CheckpointError with what to do on any problem."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder; give the checkpoint file itself (e.g. {path / 'model.pt'}).")
    if not path.is_file():
        raise CheckpointError(f"Checkpoint {path} does not exist. Check the path, or omit it to use the default model.")
    if not os.access(path, os.R_OK):
        raise CheckpointError(f"Checkpoint {path} cannot be read (permission denied); check its permissions.")
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
    """Build the network a checkpoint dict describes and load its weights (strictly).

    The HU window, the config's numbers and the weights' shapes are checked before anything is allocated,
    so an edited or damaged file is a CheckpointError, never a huge allocation.
    """
    network_class = NETWORKS.get(payload["network"])
    if network_class is None:
        raise CheckpointError(
            f"{source} holds a {payload['network']!r} network; this TSCDenoise builds {', '.join(NETWORKS)}."
        )
    window = _checked_window(payload["hu_window"], source)
    if payload["role"] not in ROLES:
        raise CheckpointError(f"{source} has role {payload['role']!r}; a checkpoint is one of {ROLES}. Re-export it.")
    _check_config(network_class, payload["config"], payload["state_dict"], source)
    try:
        with torch.device("meta"):  # no random initialisation of weights about to be replaced
            model = network_class(**payload["config"])
    except (TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{source} has a network config this TSCDenoise cannot build: {exc}.") from None
    try:
        # assign: the loaded tensors become the parameters (no copy); strict: every one of them must be there
        model.load_state_dict(_float32_weights(payload["state_dict"]), strict=True, assign=True)
        _check_materialized(model)
    except RuntimeError as exc:
        raise CheckpointError(
            f"{source}: the weights do not match the network config {payload['config']} "
            f"({_first_line(exc)}). The file was edited or written by a different network; re-export it."
        ) from None
    model.hu_window = window
    model.role = payload["role"]
    model.checkpoint_metadata = dict(payload.get("metadata", {}))
    return model


MAX_CONFIG_INTEGER = 4096  # no count or width of a TSCDenoise network comes near it


def _checked_window(window: Any, source: str) -> HUWindow:
    """The checkpoint's HU window, or CheckpointError if it is not two finite numbers, low < high."""
    numbers = isinstance(window, (list, tuple)) and len(window) == 2 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in window)
    try:
        if numbers:
            return HUWindow.from_any(window)
    except ValueError:
        pass
    raise CheckpointError(
        f"{source} has a malformed HU window {window!r}: it must be [low, high] in HU with finite low < high "
        "(e.g. [-1024, 3072]). The file was edited or damaged; re-export it."
    )


def _check_config(network_class: type, config: Any, state_dict: Any, source: str) -> None:
    """Refuse an implausible config before building it: numbers out of range, or weights of other shapes.

    The network is first built on PyTorch's meta device (shapes only, no memory), so a config edited to
    100000 channels is refused at once instead of allocating hundreds of gigabytes.
    """
    if not isinstance(config, dict) or not isinstance(state_dict, dict):
        raise CheckpointError(f"{source}: its config and weights must be dicts; the file is damaged. Re-export it.")
    for key, value in config.items():
        if isinstance(value, int) and not isinstance(value, bool) and not 0 <= value <= MAX_CONFIG_INTEGER:
            raise CheckpointError(
                f"{source} has an implausible network config {key}={value} (0 to {MAX_CONFIG_INTEGER} expected). "
                "The file was edited or damaged; re-export it."
            )
    try:
        with torch.device("meta"):
            shapes = {k: tuple(v.shape) for k, v in network_class(**config).state_dict().items()}
    except (TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{source} has a network config this TSCDenoise cannot build: {_first_line(exc)}.") from None
    stored = {k: tuple(v.shape) for k, v in state_dict.items() if isinstance(v, torch.Tensor)}
    if shapes != stored:
        differing = sorted(set(shapes) ^ set(stored)) or sorted(k for k in shapes if shapes[k] != stored[k])
        raise CheckpointError(
            f"{source}: the weights do not match the network config {config} (first difference: {differing[0]}). "
            "The file was edited or written by a different network; re-export it."
        )


def role_warning(model: nn.Module, path: Optional[PathLike] = None) -> Optional[str]:
    """A warning when `model` is a teacher checkpoint used to denoise (it reconstructs normal dose), else None."""
    if getattr(model, "role", None) != "teacher":
        return None
    return (f"warning: {path or 'this model'} is a teacher checkpoint: it was trained to reconstruct normal-dose CT, "
            "not to remove noise, so its output stays close to the input. Use a student checkpoint "
            "(e.g. the bundled default model).")

def _check_materialized(model: nn.Module) -> None:
    """Raise RuntimeError if a parameter or buffer was left on the meta device (not in the checkpoint)."""
    for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
        if tensor.is_meta:
            raise RuntimeError(f"no value for {name}")


# Network options a warm start may switch on or off: the weights carry over (see `_warm_start_state`).
WARM_START_OPTIONS = ("noise_map", "bias")


def initialize_from(model: nn.Module, path: Optional[PathLike]) -> nn.Module:
    """`model` with the weights of checkpoint `path`, or unchanged when `path` is None.

    For warm starts (e.g. a student fine-tuned from a pixel-loss student). The checkpoint must hold the same
    network with the same config, except that `model` may add a noise-map input channel (its weights start
    at zero, so the warm-started network computes what the checkpoint's did) or drop the biases.

    Args:
        model: the network to initialise, in place.
        path: a checkpoint written by `save_model`, or None.

    Returns:
        `model`, for chaining.

    Raises:
        CheckpointError: the file cannot be read, or holds another network or config.
    """
    if path is None:
        return model
    payload = read_checkpoint(path)
    if payload["network"] != type(model).__name__ or _without_options(payload["config"]) != _without_options(model.config):
        raise CheckpointError(
            f"{path} holds a {payload['network']} with config {payload['config']}, but the network to initialize is a "
            f"{type(model).__name__} with config {model.config}. Start from a checkpoint of the same network."
        )
    model.load_state_dict(_warm_start_state(payload["state_dict"], model.state_dict()), strict=True)
    return model


def _without_options(config: Dict[str, Any]) -> Dict[str, Any]:
    return {k: v for k, v in config.items() if k not in WARM_START_OPTIONS}


def _warm_start_state(source: Dict[str, torch.Tensor], target: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """`source`'s weights in `target`'s shapes: extra input channels zero, biases the target lacks dropped."""
    state = {}
    for name, reference in target.items():
        weights = source[name]
        if weights.shape != reference.shape:  # a conv with extra input channels (the noise map)
            extended = torch.zeros_like(reference)
            extended[:, : weights.shape[1]] = weights
            weights = extended
        state[name] = weights
    return state


def load_model(path: Optional[PathLike] = None, device: Union[str, torch.device] = "auto") -> nn.Module:
    """Load a checkpoint (default: the bundled weights) in eval mode on `device`.

    The file is read with ``torch.load(weights_only=True)``: nothing in it is executed. Its HU window, role
    and network config are checked before the network is built.

    Args:
        path: a checkpoint written by `save_model`; None means the bundled default model.
        device: "auto" (a CUDA GPU if there is one), "cpu", "cuda", "cuda:N", "mps", or a torch.device.

    Returns:
        The network in eval mode on `device`, with ``hu_window``, ``role`` ("teacher" or "student") and
        ``checkpoint_metadata`` attributes.

    Raises:
        CheckpointError: the file is missing, a folder, unreadable, corrupt, unsafe to unpickle, of another
            format version, or its window/config/weights do not fit together.
        DefaultModelMissingError: `path` is None and no bundled model is installed.
        DeviceError: `device` does not exist on this machine.
    """
    path = Path(path) if path is not None else default_model_path()
    model = model_from_checkpoint(read_checkpoint(path), source=str(path))
    return model.to(resolve_device(device)).eval()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
