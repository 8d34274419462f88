"""Submodules that load on first attribute access (PEP 562), as MONAI bundle configs reach them:
`TSCDenoiseLib.training.data.read_datalist` after a bare `import TSCDenoiseLib`."""

from importlib import import_module
from importlib.util import find_spec
from typing import Any, Callable


def submodule_getattr(package: str) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` for `package` that imports its submodules on first use."""

    def __getattr__(name: str) -> Any:
        if not name.startswith("_") and find_spec(f"{package}.{name}") is not None:
            return import_module(f".{name}", package)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
