"""Deployable exports of a TSC-Net: `torch.export` programs (.pt2), ONNX graphs (.onnx) and traced
TorchScript (.ts, for MONAI Deploy / Triton users; TorchScript is deprecated since PyTorch 2.9).

All use the pure-PyTorch deformable convolution (standard ops only: no torchvision needed to run
them) and take heights and widths that are multiples of 4; `load_exported` pads other sizes, as the
eager network does.
"""

from __future__ import annotations

import io
import os
import warnings
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence, Union

import torch
from torch import nn

from .atomic import check_output, write_bytes_atomically
from ..errors import ExportError
from ..networks.deform_conv import ModulatedDeformConv2d
from ..networks.tscnet import SIZE_MULTIPLE, noise_map_strength, pad_to_multiple

FORMATS = ("torch_export", "onnx", "torchscript")
PathLike = Union[str, os.PathLike]


def export_model(
    model: nn.Module,
    path: PathLike,
    format: str = "torch_export",
    example_shape: Sequence[int] = (2, 1, 64, 64),
    overwrite: bool = False,
) -> Path:
    """Export `model` (eval mode; dynamic batch, height and width) to `path`, written atomically.

    The graph is the model at strength 1.0 (its own noise level), whatever `noise_map_strength` says.

    The program is serialised in memory and written with Python's file I/O (torch's own writers abort the
    process on a full disk), then its size is checked before the rename: a full disk is an OutputWriteError.
    """
    if format not in FORMATS:
        raise ExportError(f"Unknown export format {format!r}; choose one of {FORMATS}.")
    check_output(path, overwrite, kind="file")
    n, c, h, w = example_shape
    n = max(n, 2)  # a batch of 1 would be specialised as a constant by the tracer
    example = torch.rand(n, c, _round_up(h), _round_up(w), device=next(model.parameters()).device)
    # Symbolic shapes cannot prove that padding makes a size divisible by 4, so the graph takes sizes
    # that are multiples of 4 already (the eager network's padding branch is then never taken).
    dims = {
        0: torch.export.Dim("batch", min=1, max=4096),
        2: SIZE_MULTIPLE * torch.export.Dim("height_quarter", min=2, max=2048),
        3: SIZE_MULTIPLE * torch.export.Dim("width_quarter", min=2, max=2048),
    }
    buffer = io.BytesIO()
    with _pure_torch_dcn(model), noise_map_strength(model, 1.0):
        if format == "onnx":
            _require_onnx()
            program = torch.onnx.export(model.eval(), (example,), dynamo=True, dynamic_shapes=(dims,),
                                        input_names=["slices"], output_names=["denoised"], verbose=False)
            buffer.write(program.model_proto.SerializeToString())
        elif format == "torchscript":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # the deprecation notice: the user chose the format
                warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape checks become constants, as intended
                with torch.no_grad():
                    traced = torch.jit.trace(model.eval(), example)
                torch.jit.save(traced, buffer)
        else:
            torch.export.save(torch.export.export(model.eval(), (example,), dynamic_shapes=(dims,)), buffer)
    return write_bytes_atomically(path, buffer.getvalue(), overwrite)


class PaddedExportedModel(nn.Module):
    """An exported TSC-Net graph that accepts any height and width (replicate-pad, run, crop)."""

    def __init__(self, graph: nn.Module) -> None:
        super().__init__()
        self.graph = graph

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padded, (h, w) = pad_to_multiple(x)
        return self.graph(padded)[..., :h, :w]


def load_exported(path: PathLike) -> nn.Module:
    """Load a .pt2 (torch.export) or TorchScript file written by `export_model` as a module for any slice size."""
    if zipfile.is_zipfile(path) and any("/code/" in name for name in zipfile.ZipFile(path).namelist()):
        return PaddedExportedModel(torch.jit.load(str(path), map_location="cpu"))
    return PaddedExportedModel(torch.export.load(str(path)).module())


@contextmanager
def _pure_torch_dcn(model: nn.Module) -> Iterator[None]:
    layers = [(m, m.backend) for m in model.modules() if isinstance(m, ModulatedDeformConv2d)]
    for layer, _ in layers:
        layer.backend = "torch"
    try:
        yield
    finally:
        for layer, backend in layers:
            layer.backend = backend


def _require_onnx() -> None:
    from ..lazy import require_optional

    require_optional("onnx", "export", "ONNX export")
    require_optional("onnxscript", "export", "ONNX export")


def _round_up(size: int) -> int:
    return -(-size // SIZE_MULTIPLE) * SIZE_MULTIPLE
