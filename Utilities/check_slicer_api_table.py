"""Check the Slicer API table of Testing/TSCDenoise/test_slicer_api_versions.py against Slicer's source.

The pytest check needs no Slicer; this script checks the table itself, where a git copy of Slicer is at
hand (``git clone --bare https://github.com/Slicer/Slicer``): for each API defined in Slicer's Python
code, that it is defined at every release tag from its stated first version on and missing before it,
and that every keyword TSCDenoise.py passes is accepted at each of those tags.

    python Utilities/check_slicer_api_table.py /path/to/Slicer.git [v5.6.0 v5.8.0 v5.10.0 v5.12.0]

Exit code 0 when the table agrees with the source; one line per disagreement otherwise. APIs defined in
C++ (vtkMRML*, qSlicer* methods) and those of other extensions (PyTorchUtils) are listed as not checked.
"""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "Testing" / "TSCDenoise"))
from slicer_api_usage import api_uses  # noqa: E402
from test_slicer_api_versions import SLICER_APIS  # noqa: E402

DEFAULT_TAGS = ["v5.6.0", "v5.8.0", "v5.10.0", "v5.12.0"]
# Python files of Slicer where the checked names live (and the class holding them), by the prefix of
# the name as the module writes it.
PYTHON_SOURCES = {
    "slicer.util.": ("Base/Python/slicer/util.py", ""),
    "slicer.packaging.": ("Base/Python/slicer/packaging.py", ""),
    "SampleData.SampleDataLogic.": ("Modules/Scripted/SampleData/SampleData.py", "SampleDataLogic."),
    "SampleData.SampleDataLogic().": ("Modules/Scripted/SampleData/SampleData.py", "SampleDataLogic."),
    "slicer.ScriptedLoadableModule.": ("Base/Python/slicer/ScriptedLoadableModule.py", ""),
    "slicer.i18n.": ("Base/Python/slicer/i18n.py", ""),
}


def show(git_dir: str, tag: str, path: str):
    result = subprocess.run(["git", "-C", git_dir, "show", f"{tag}:{path}"], capture_output=True, text=True)
    return result.stdout if result.returncode == 0 else None


def definition(tree: ast.AST, dotted: str):
    """The FunctionDef/ClassDef for "name" or "Class.method" in `tree`, or None."""
    scope = tree.body
    found = None
    for part in dotted.split("."):
        found = next((n for n in scope if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name == part), None)
        if found is None:
            return None
        scope = found.body
    return found


def main(argv) -> int:
    if not argv:
        print(__doc__)
        return 2
    git_dir, tags = argv[0], argv[1:] or DEFAULT_TAGS
    used_keywords = {}
    for use in api_uses((ROOT / "TSCDenoise" / "TSCDenoise.py").read_text(encoding="utf-8")):
        used_keywords.setdefault(use.name, set()).update(use.keywords)
    problems, checked, unchecked = [], 0, []
    for name, (first, _where, _keywords) in sorted(SLICER_APIS.items()):
        prefix = next((p for p in PYTHON_SOURCES if name.startswith(p)), None)
        if prefix is None or name.endswith(".__init__"):
            unchecked.append(name)
            continue
        checked += 1
        path, scope = PYTHON_SOURCES[prefix]
        local = scope + name[len(prefix):].replace("()", "")
        for tag in tags:
            text = show(git_dir, tag, path)
            node = definition(ast.parse(text), local) if text else None
            expected = tuple(int(x) for x in tag[1:].split(".")[:2]) >= tuple(int(x) for x in first.split("."))
            if (node is not None) != expected:
                problems.append(f"{name}: {'defined' if node else 'missing'} at {tag}, but the table says from {first}")
            if node is not None and isinstance(node, ast.FunctionDef) and expected:
                accepted = {a.arg for a in node.args.args + node.args.kwonlyargs}
                rejected = used_keywords.get(name, set()) - accepted
                if rejected and node.args.kwarg is None:
                    problems.append(f"{name} at {tag} does not accept {sorted(rejected)}")
    for line in problems:
        print(line)
    print(f"{checked} APIs checked at {', '.join(tags)}; {len(problems)} disagreements; "
          f"not checked here (C++ or other extensions): {len(unchecked)}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
