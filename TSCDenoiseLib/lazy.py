"""Submodules that load on first attribute access (PEP 562), as MONAI bundle configs reach them:
`TSCDenoiseLib.training.data.read_datalist` after a bare `import TSCDenoiseLib`."""

from __future__ import annotations

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


def require_optional(module: str, extra: str, purpose: str, package: str | None = None) -> Any:
    """Import optional `module`, or raise MissingDependencyError naming the pip extra that installs it.

    Args:
        module: the module to import (e.g. "astra").
        extra: the TSCDenoise extra that installs it ("data", "report", "export", "fast").
        purpose: what needs it, for the message ("Low-dose simulation").
        package: the pip package name when it differs from the module's (e.g. "astra-toolbox").

    Returns:
        The imported module.

    Raises:
        MissingDependencyError: the module is not installed (or fails to import).
    """
    try:
        return import_module(module)
    except Exception:  # ImportError, or e.g. a torchvision built for another torch (RuntimeError)
        raise missing_dependency(package or module, extra, purpose) from None


def missing_dependency(package: str, extra: str, purpose: str):
    """The MissingDependencyError that names the extra to install (for callers that tried the import themselves)."""
    from .errors import MissingDependencyError

    return MissingDependencyError(
        f"{purpose} needs {package}, which is not installed or fails to import: pip install 'TSCDenoise[{extra}]' "
        f"(or pip install {package})."
    )

