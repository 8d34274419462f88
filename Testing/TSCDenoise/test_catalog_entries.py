"""The Extensions Index entries in Utilities/ExtensionsIndex/ agree with the top-level CMakeLists.txt.

Mirrors what Slicer/ExtensionsIndex's scripts/check_description_files.py checks without network access:
the entry's name equals the CMake project() name and does not start with "Slicer", the repository name
starts with "Slicer", the category is one the index accepts, EXTENSION_SCREENSHOTURLS is not empty and
matches its regular expression, and the images it names are files of this repository (small enough to
serve). Also: the wizard's "## NEXT_MODULE" marker, and the repository size limit (100 MB with .git).
"""

import json
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CATALOG_DIR = ROOT / "Utilities" / "ExtensionsIndex"
JSON_ENTRY = CATALOG_DIR / "TSCDenoise.json"
S4EXT_ENTRY = CATALOG_DIR / "TSCDenoise.s4ext"
RAW_PREFIX = "https://raw.githubusercontent.com/"

# From Slicer/ExtensionsIndex scripts/check_description_files.py (main, 2026): a subset that covers ours.
ACCEPTED_CATEGORIES_SUBSET = {"Filtering", "Segmentation", "Utilities", "Image Synthesis", "Examples"}
# Keys of Slicer's Schemas/slicer-extension-catalog-entry-schema-v1.0.1.json (v5.8.0 and newer).
SCHEMA_KEYS = {"$schema", "category", "scm_url", "scm_revision", "scm_type", "build_dependencies",
               "build_subdirectory", "enabled", "tier"}
SCHEMA_REQUIRED = {"$schema", "category", "scm_url"}


def cmake_set(name: str) -> str:
    text = (ROOT / "CMakeLists.txt").read_text()
    match = re.search(rf'set\s*\(\s*{name}\s+"([^"]*)"\s*\)', text)
    assert match, f"CMakeLists.txt has no set({name} \"...\")"
    return match.group(1)


def s4ext() -> dict:
    entries = {}
    for line in S4EXT_ENTRY.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.strip().partition(" ")
            entries[key] = value.strip()
    return entries


def repository_of(url: str) -> str:
    return re.match(r"https://github\.com/([^/]+/[^/]+?)/?$", url).group(1)


def test_json_entry_follows_the_schema_and_depends_on_pytorch():
    raw = JSON_ENTRY.read_bytes()
    assert b"\r" not in raw, "the index wants LF line endings"
    entry = json.loads(raw)
    assert SCHEMA_REQUIRED <= set(entry) <= SCHEMA_KEYS, set(entry) ^ SCHEMA_KEYS
    assert entry["$schema"].startswith("https://raw.githubusercontent.com/Slicer/Slicer/main/Schemas/"
                                       "slicer-extension-catalog-entry-schema-v1.0.1.json")
    assert entry["build_dependencies"] == ["PyTorch"] == cmake_set("EXTENSION_DEPENDS").split()
    assert 1 <= entry["tier"] <= 5 and entry["build_subdirectory"] == "."


def test_entries_agree_with_cmake():
    entry, old = json.loads(JSON_ENTRY.read_text()), s4ext()
    homepage = cmake_set("EXTENSION_HOMEPAGE")
    assert entry["scm_url"] == old["scmurl"] == old["homepage"] == homepage
    assert entry["scm_revision"] == old["scmrevision"]
    assert entry["category"] == old["category"] == cmake_set("EXTENSION_CATEGORY")
    assert old["depends"].split() == entry["build_dependencies"]
    assert old["iconurl"] == cmake_set("EXTENSION_ICONURL")
    assert old["screenshoturls"].split() == cmake_set("EXTENSION_SCREENSHOTURLS").split()
    assert old["description"] == cmake_set("EXTENSION_DESCRIPTION")
    assert old["contributors"] == cmake_set("EXTENSION_CONTRIBUTORS")
    assert old["scm"] == "git" and old["build_subdirectory"] == "."


def test_names_follow_the_index_rules():
    text = (ROOT / "CMakeLists.txt").read_text()
    project = re.search(r"project\s*\(\s*([^\s\)]+)", text, re.I).group(1)
    assert JSON_ENTRY.stem == S4EXT_ENTRY.stem == project
    assert not project.lower().startswith("slicer"), "the extension name must not start with 'Slicer'"
    repository = repository_of(cmake_set("EXTENSION_HOMEPAGE")).split("/")[1]
    assert repository.startswith("Slicer"), f"the repository name must start with 'Slicer', not {repository!r}"
    assert cmake_set("EXTENSION_CATEGORY") in ACCEPTED_CATEGORIES_SUBSET


def test_screenshots_and_icon_are_files_of_this_repository():
    text = (ROOT / "CMakeLists.txt").read_text()
    # the index's own pattern: nothing between the closing quote and ")"
    assert re.findall(r'set\s*\(EXTENSION_SCREENSHOTURLS\s*"([^"]+)"\)', text, re.I), "EXTENSION_SCREENSHOTURLS is empty"
    repository = repository_of(cmake_set("EXTENSION_HOMEPAGE"))
    urls = cmake_set("EXTENSION_SCREENSHOTURLS").split() + [cmake_set("EXTENSION_ICONURL")]
    for url in urls:
        assert url.startswith(f"{RAW_PREFIX}{repository}/main/"), url
        path = ROOT / url[len(f"{RAW_PREFIX}{repository}/main/"):]
        assert path.is_file(), f"{url} names {path}, which is not in the repository"
        assert path.suffix.lower() in (".png", ".jpg", ".jpeg", ".gif")
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" or path.suffix.lower() != ".png"
        assert path.stat().st_size < 300_000, f"{path.name} is {path.stat().st_size} bytes; keep screenshots small"


def test_top_level_cmake_keeps_the_wizard_marker():
    text = (ROOT / "CMakeLists.txt").read_text()
    assert re.search(r"^## NEXT_MODULE$", text, re.M), "the extension wizard inserts modules at '## NEXT_MODULE'"
    assert text.index("add_subdirectory(TSCDenoise)") < text.index("## NEXT_MODULE")


def repository_megabytes() -> tuple:
    """(history of HEAD as git stores it, checked-out tracked files) in MiB: what the index's clone holds."""
    objects = subprocess.run(["git", "-C", str(ROOT), "rev-list", "--objects", "HEAD"], capture_output=True,
                             check=True).stdout
    sizes = subprocess.run(["git", "-C", str(ROOT), "cat-file", "--batch-check=%(objectsize:disk)"],
                           input=b"\n".join(line.split(b" ")[0] for line in objects.splitlines()) + b"\n",
                           capture_output=True, check=True).stdout
    history = sum(int(size) for size in sizes.split())
    tracked = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z"], capture_output=True, check=True).stdout
    tree = sum((ROOT / name).stat().st_size for name in tracked.decode().split("\0") if name and (ROOT / name).is_file())
    return history / 2**20, tree / 2**20


def test_repository_stays_under_the_index_size_limit():
    """The index clones the repository and refuses more than 100 MB, .git included (check_repository_size)."""
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    try:
        history, tree = repository_megabytes()
    except (OSError, subprocess.CalledProcessError) as error:
        pytest.skip(f"git is not usable here: {error}")
    print(f"history {history:.1f} MiB + tree {tree:.1f} MiB = {history + tree:.1f} MiB")
    assert history + tree < 100, f"a clone would be {history + tree:.1f} MB with .git; the index limit is 100 MB"


def test_no_checkpoint_is_committed_twice_in_the_tree():
    tracked = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-s"], capture_output=True, text=True).stdout
    blobs = {}
    for line in tracked.splitlines():
        meta, path = line.split("\t", 1)
        if path.endswith((".pt", ".pth", ".onnx", ".pt2", ".ts")):
            blobs.setdefault(meta.split()[1], []).append(path)
    duplicated = {blob: paths for blob, paths in blobs.items() if len(paths) > 1}
    assert not duplicated, f"the same weights are committed at several paths: {duplicated}"
