"""Save an adapted model: a normal checkpoint whose metadata says it was adapted, from what, on what scan."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Union

from torch import nn

from ..core.checkpoint import save_model
from .report import AdaptationReport

PathLike = Union[str, os.PathLike]


def adaptation_metadata(report: AdaptationReport, source_model: Optional[str], scan_name: Optional[str],
                        shape: Sequence[int], spacing: Sequence[float]) -> Dict[str, Any]:
    """The "adaptation" metadata entry: the source model, the scan's file name, shape and spacing (no
    patient data), and the report (settings, time, the safeguard's result)."""
    return {
        "adapted": True,
        "source_model": source_model or "bundled default model",
        "scan": {"name": scan_name or "", "shape": [int(s) for s in shape],
                 "spacing_mm": [round(float(s), 6) for s in spacing]},
        "report": report.as_metadata(),
    }


def save_adapted_model(model: nn.Module, path: PathLike, report: AdaptationReport, source_model: Optional[str] = None,
                       scan_name: Optional[str] = None, shape: Sequence[int] = (), spacing: Sequence[float] = (),
                       overwrite: bool = False) -> Path:
    """Write `model` (the model `adapt_model` returned) with `core.checkpoint.save_model` (atomic).

    The metadata of the model it came from is kept under its own keys; "adaptation" is added. When the
    safeguard kept the original, the file holds the original's weights and says so (report.used).
    """
    metadata = dict(getattr(model, "checkpoint_metadata", {}) or {})
    metadata["adaptation"] = adaptation_metadata(report, source_model, scan_name, shape, spacing)
    return save_model(model, path, role=getattr(model, "role", "student"), overwrite=overwrite, **metadata)
