"""3D Slicer glue without Qt: MRML volume nodes in and out, and the worker process behind the panel.

`denoise_volume_node` and the other node helpers load on first use, so `TSCDenoiseLib.mrml.background`
and `TSCDenoiseLib.mrml.worker` import without VTK.
"""

from importlib import import_module
from typing import Any


def __getattr__(name: str) -> Any:
    nodes = import_module(".nodes", __name__)
    if hasattr(nodes, name) and not name.startswith("_"):
        return getattr(nodes, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
