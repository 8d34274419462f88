"""Which Slicer APIs a scripted module's source uses, and whether each use is guarded (no Slicer needed).

`api_uses(source)` walks the module's AST and returns every attribute chain rooted at a Slicer name
(`slicer`, the scripted modules it imports such as `SampleData` and `PyTorchUtils`, and names imported
from them), written as in the source with calls kept: ``slicer.util.launchConsoleProcess``,
``SampleData.SampleDataLogic().downloadSamples``. A use is *guarded* when it sits in an ``if`` whose
test has ``hasattr(..., "<its last name>")``, or in a ``try`` body whose handler catches ImportError or
AttributeError: a Slicer that lacks the API then takes another branch instead of failing.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Set

SLICER_ROOTS = ("slicer", "SampleData", "PyTorchUtils")
GUARD_EXCEPTIONS = {"ImportError", "ModuleNotFoundError", "AttributeError"}


@dataclass
class ApiUse:
    name: str
    line: int
    guarded: bool
    keywords: Set[str] = field(default_factory=set)


def _chain(node: ast.AST, aliases: Dict[str, str]) -> Optional[str]:
    """"a.b().c" for Attribute/Call/Name chains whose root is a Slicer name, else None."""
    if isinstance(node, ast.Name):
        return aliases.get(node.id)
    if isinstance(node, ast.Attribute):
        base = _chain(node.value, aliases)
        return None if base is None else f"{base}.{node.attr}"
    if isinstance(node, ast.Call):
        base = _chain(node.func, aliases)
        return None if base is None else f"{base}()"
    return None


def _lookup_candidates(name: str) -> List[str]:
    """`name`, then its prefixes cut before each "()" (longest first): what the version table is searched for."""
    cuts = [name[:i] for i in range(len(name)) if name.startswith("()", i)]
    return [name] + sorted(set(cuts), key=len, reverse=True)


def _aliases(tree: ast.AST) -> Dict[str, str]:
    """Local names bound to Slicer names by import statements anywhere in the module."""
    aliases = {root: root for root in SLICER_ROOTS}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in SLICER_ROOTS:
                    aliases[alias.asname or alias.name.split(".")[0]] = alias.name if alias.asname else alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in SLICER_ROOTS:
            for alias in node.names:
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return aliases


def _guards(node: ast.AST, parents: Dict[ast.AST, ast.AST]) -> tuple:
    """(hasattr names tested by enclosing ifs, whether an enclosing try catches a guard exception)."""
    names, caught = set(), False
    child, parent = node, parents.get(node)
    while parent is not None:
        if isinstance(parent, ast.If) and child is not parent.test:
            for call in ast.walk(parent.test):
                if isinstance(call, ast.Call) and getattr(call.func, "id", None) == "hasattr" and len(call.args) == 2 \
                        and isinstance(call.args[1], ast.Constant):
                    names.add(call.args[1].value)
        if isinstance(parent, ast.Try) and child in parent.body:
            for handler in parent.handlers:
                types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
                if any(getattr(t, "id", None) in GUARD_EXCEPTIONS for t in types):
                    caught = True
        child, parent = parent, parents.get(parent)
    return names, caught


def api_uses(source: str) -> List[ApiUse]:
    """Every maximal Slicer attribute chain used in `source` (imports included), with its guard status."""
    tree = ast.parse(source)
    aliases = _aliases(tree)
    parents = {child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}
    # Names bound by a guarded import (`try: import slicer.packaging as p / except ImportError:`): the
    # import is what fails on an older Slicer, and the except branch handles it, so their uses are guarded.
    guarded_aliases = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)) and _guards(node, parents)[1]:
            guarded_aliases |= {a.asname or a.name.split(".")[0] for a in node.names}
    guarded_aliases.discard("slicer")  # `import slicer.x` binds `slicer` itself: never a guard
    uses = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.split(".")[0] in SLICER_ROOTS]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in SLICER_ROOTS:
            names = [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, (ast.Attribute, ast.Name)) and not isinstance(parents.get(node), ast.Attribute):
            name = _chain(node, aliases)
            names = [name] if name and "." in name else []
        else:
            continue
        for name in names:
            tested, caught = _guards(node, parents)
            parent = parents.get(node)
            keywords = {k.arg for k in parent.keywords if k.arg} if isinstance(parent, ast.Call) and parent.func is node else set()
            root = node
            while isinstance(root, (ast.Attribute, ast.Call)):
                root = root.value if isinstance(root, ast.Attribute) else root.func
            by_alias = isinstance(root, ast.Name) and root.id in guarded_aliases
            guarded = caught or by_alias or name.rsplit(".", 1)[-1].rstrip("()") in tested
            uses.append(ApiUse(name, node.lineno, guarded, keywords))
    return uses
