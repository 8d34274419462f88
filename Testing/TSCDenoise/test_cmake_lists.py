"""The Slicer extension's CMake files list every file the module needs, at the paths the code expects.

CMake is not needed: the CMake text is parsed with regular expressions (comments removed first).
"""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODULE_DIR = ROOT / "TSCDenoise"
LIB_DIR = ROOT / "TSCDenoiseLib"
TOP_CMAKE = ROOT / "CMakeLists.txt"
MODULE_CMAKE = MODULE_DIR / "CMakeLists.txt"

_COMMENT_OR_STRING = re.compile(r'#\[(=*)\[.*?\]\1\]|"(?:\\.|[^"\\])*"|#[^\n]*', re.S)
_COMMAND = re.compile(r"\b([A-Za-z_]\w*)\s*\(([^()]*)\)")
_TOKEN = re.compile(r'"((?:\\.|[^"\\])*)"|([^\s"]+)')
_VARIABLE = re.compile(r"\$\{(\w+)\}")


def strip_comments(text: str) -> str:
    """CMake text without line and bracket comments ('#' inside quoted arguments is kept)."""
    return _COMMENT_OR_STRING.sub(lambda m: m.group(0) if m.group(0).startswith('"') else "", text)


def commands(text: str) -> list[tuple[str, list[str]]]:
    """(lower-case command name, arguments) of each command, in order (quotes removed)."""
    result = []
    for match in _COMMAND.finditer(strip_comments(text)):
        arguments = [t.group(1) if t.group(1) is not None else t.group(2) for t in _TOKEN.finditer(match.group(2))]
        result.append((match.group(1).lower(), arguments))
    return result


def calls(text: str, name: str) -> list[list[str]]:
    return [arguments for command, arguments in commands(text) if command == name.lower()]


def expand(value: str, variables: dict[str, str]) -> str:
    """Replace the ${VAR} whose value is known (a single-valued set()); leave the others."""
    for _ in range(10):
        expanded = _VARIABLE.sub(lambda m: variables.get(m.group(1), m.group(0)), value)
        if expanded == value:
            return value
        value = expanded
    return value


def module_variables(text: str) -> dict[str, str]:
    variables = {"CMAKE_CURRENT_SOURCE_DIR": str(MODULE_DIR)}
    for arguments in calls(text, "set"):
        if len(arguments) == 2:
            variables[arguments[0]] = expand(arguments[1], variables)
    return variables


def list_variable(text: str, name: str) -> list[str]:
    """Values given to `name` by set(name ...) and list(APPEND name ...), ${VAR} expanded."""
    variables = module_variables(text)
    values: list[str] = []
    for command, arguments in commands(text):
        if command == "set" and arguments[:1] == [name]:
            values = list(arguments[1:])
        elif command == "list" and arguments[:2] == ["APPEND", name]:
            values += arguments[2:]
    return [expand(value, variables) for value in values]


def relative(path: Path) -> str:
    """`path` relative to the repository, or as given when it is not inside it (or not expanded)."""
    try:
        return path.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return str(path)


@pytest.fixture(scope="module")
def module_cmake() -> str:
    return MODULE_CMAKE.read_text()


@pytest.fixture(scope="module")
def top_cmake() -> str:
    return TOP_CMAKE.read_text()


# --- (a) every file of the Slicer path is listed, and nothing else ------------------------------------------

# What the Slicer module imports: the top level and these subpackages (numpy, torch, SimpleITK, pydicom only).
SLICER_SUBPACKAGES = ("networks", "core", "io", "mrml", "adaptation", "noise")
# Training and evaluation need MONAI, astra-toolbox, scipy or matplotlib: the extension does not ship them.
NOT_SHIPPED = ("training", "evaluation")


def test_every_subpackage_is_either_on_the_slicer_path_or_not_shipped():
    subpackages = {p.parent.name for p in LIB_DIR.glob("*/__init__.py")}
    assert subpackages - set(SLICER_SUBPACKAGES) - set(NOT_SHIPPED) == set(), "a new subpackage must be placed"


def slicer_path_files() -> set:
    files = {p.name for p in LIB_DIR.glob("*.py")}
    for sub in SLICER_SUBPACKAGES:
        files |= {f"{sub}/{p.name}" for p in (LIB_DIR / sub).glob("*.py")}
    return files


def test_every_slicer_path_file_is_listed_and_nothing_else(module_cmake):
    listed = list_variable(module_cmake, "TSCDenoiseLib_PYTHON_FILES")
    assert listed, "TSCDenoise/CMakeLists.txt has no set(TSCDenoiseLib_PYTHON_FILES ...)"
    wanted = slicer_path_files()
    not_listed = sorted(wanted - set(listed))
    extra = sorted(set(listed) - wanted)
    duplicated = sorted({f for f in listed if listed.count(f) > 1})
    assert not not_listed, f"TSCDenoiseLib files missing from TSCDenoise/CMakeLists.txt: {not_listed}"
    assert not extra, f"TSCDenoise/CMakeLists.txt lists files that are not on the Slicer path (or do not exist): {extra}"
    assert not duplicated, f"TSCDenoiseLib files listed twice: {duplicated}"
    assert not re.search(r"\bfile\s*\(\s*GLOB", strip_comments(module_cmake), re.I), "list the files, no file(GLOB)"


def test_every_package_folder_is_either_shipped_or_not_on_purpose():
    folders = {p.name for p in LIB_DIR.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert folders == set(SLICER_SUBPACKAGES) | set(NOT_SHIPPED), f"decide whether Slicer needs {folders}"


def test_tscdenoiselib_files_are_copied_next_to_the_module(module_cmake):
    """Each listed file is copied to <binary dir>/TSCDenoiseLib/ and given to the macro by that absolute path."""
    text = strip_comments(module_cmake)
    loops = re.findall(r"foreach\s*\(\s*(\w+)\s+IN\s+LISTS\s+TSCDenoiseLib_PYTHON_FILES\s*\)(.*?)endforeach", text,
                       re.S | re.I)
    assert len(loops) == 1, "expected one foreach(<var> IN LISTS TSCDenoiseLib_PYTHON_FILES)"
    var, body = loops[0]
    copies = calls(body, "configure_file")
    assert [
        "${CMAKE_CURRENT_SOURCE_DIR}/../TSCDenoiseLib/${%s}" % var,
        "${CMAKE_CURRENT_BINARY_DIR}/TSCDenoiseLib/${%s}" % var,
        "COPYONLY",
    ] in copies, copies
    assert ["APPEND", "MODULE_PYTHON_SCRIPTS", "${CMAKE_CURRENT_BINARY_DIR}/TSCDenoiseLib/${%s}" % var] in calls(
        body, "list")


def test_module_scripts_exist(module_cmake):
    scripts = [s for s in list_variable(module_cmake, "MODULE_PYTHON_SCRIPTS") if "${" not in s]
    assert "TSCDenoise.py" in scripts, scripts
    missing = [s for s in scripts if not (MODULE_DIR / s).is_file()]
    assert not missing, f"module scripts listed in TSCDenoise/CMakeLists.txt that do not exist: {missing}"


# --- (b) every module resource is listed -------------------------------------------------------------------


def test_every_module_resource_is_listed(module_cmake):
    listed = list_variable(module_cmake, "MODULE_PYTHON_RESOURCES")
    assert listed, "TSCDenoise/CMakeLists.txt has no set(MODULE_PYTHON_RESOURCES ...)"
    on_disk = {
        p.relative_to(MODULE_DIR).as_posix()
        for p in (MODULE_DIR / "Resources").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and not p.name.startswith(".")
    }
    not_listed = sorted(on_disk - set(listed))
    missing = sorted(set(listed) - on_disk)
    assert not not_listed, f"files under TSCDenoise/Resources/ missing from MODULE_PYTHON_RESOURCES: {not_listed}"
    assert not missing, f"MODULE_PYTHON_RESOURCES lists files that do not exist: {missing}"


# --- (c) default weights and sample data land where TSCDenoiseLib looks for them ---------------------------


def data_files(text: str) -> dict[str, str]:
    """{destination under qt-scripted-modules/: source relative to the repository} of the data files."""
    variables = module_variables(text)
    result = {}
    for arguments in calls(text, "tscdenoise_add_data_file"):
        assert len(arguments) == 2, arguments
        source, destination = (expand(a, variables) for a in arguments)
        result[destination] = relative(Path(source))
    return result


def test_data_file_helper_copies_into_the_build_tree_and_installs(module_cmake):
    text = strip_comments(module_cmake)
    bodies = re.findall(r"function\s*\(\s*tscdenoise_add_data_file\s+(\w+)\s+(\w+)\s*\)(.*?)endfunction", text,
                        re.S | re.I)
    assert len(bodies) == 1, "expected one function(tscdenoise_add_data_file source destination)"
    source, destination, body = bodies[0]
    assert ["${%s}" % source, "${CMAKE_BINARY_DIR}/${Slicer_QTSCRIPTEDMODULES_LIB_DIR}/${%s}" % destination,
            "COPYONLY"] in calls(body, "configure_file")
    installs = calls(body, "install")
    assert len(installs) == 1 and installs[0][:2] == ["FILES", "${%s}" % source], installs
    install = " ".join(installs[0])
    assert "DESTINATION ${Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR}/" in install, install
    assert "COMPONENT RuntimeLibraries" in install, install


def in_package(path: Path) -> str:
    """`path` relative to the folder holding TSCDenoiseLib/ (qt-scripted-modules/ in the extension)."""
    import TSCDenoiseLib

    return path.resolve().relative_to(Path(TSCDenoiseLib.__file__).resolve().parent.parent).as_posix()


def test_default_weights_go_where_checkpoint_looks_first(module_cmake):
    from TSCDenoiseLib.core.resources import DEFAULT_MODEL_CANDIDATES

    expected = in_package(DEFAULT_MODEL_CANDIDATES[0])
    assert expected == "TSCDenoiseLib/models/model.pt"
    files = data_files(module_cmake)
    assert files.get(expected) == "training/models/model.pt", files
    assert files.get("TSCDenoiseLib/models/LICENSE") == "training/LICENSE", files


def test_sample_data_is_bundled_with_its_license(module_cmake):
    from TSCDenoiseLib.core.resources import SAMPLE_LOW_DOSE_FILE, SAMPLE_NORMAL_DOSE_FILE, SAMPLE_DATA_CANDIDATES

    folder = in_package(SAMPLE_DATA_CANDIDATES[0])
    assert folder == "TSCDenoiseLib/sample_data"
    files = data_files(module_cmake)
    for name in (SAMPLE_LOW_DOSE_FILE, SAMPLE_NORMAL_DOSE_FILE, "LICENSE"):
        destination = f"{folder}/{name}"
        assert files.get(destination) == f"Resources/SampleData/cranium/{name}", (destination, files)


def test_every_data_file_source_exists(module_cmake):
    files = data_files(module_cmake)
    assert files
    missing = sorted(source for source in files.values() if not (ROOT / source).is_file())
    assert not missing, f"data files listed in TSCDenoise/CMakeLists.txt that do not exist: {missing}"


# --- (d) extension metadata and structure ------------------------------------------------------------------

TOP_LEVEL_PATTERNS = {
    "cmake_minimum_required": r"\bcmake_minimum_required\s*\(\s*VERSION\s+\S+",
    "project(TSCDenoise)": r"\bproject\s*\(\s*TSCDenoise\s*\)",
    "EXTENSION_HOMEPAGE": r'\bset\s*\(\s*EXTENSION_HOMEPAGE\s+"https?://[^"]+"\s*\)',
    'EXTENSION_CATEGORY "Filtering"': r'\bset\s*\(\s*EXTENSION_CATEGORY\s+"Filtering"\s*\)',
    "EXTENSION_CONTRIBUTORS": r'\bset\s*\(\s*EXTENSION_CONTRIBUTORS\s+"[^"]+"\s*\)',
    "EXTENSION_DESCRIPTION": r'\bset\s*\(\s*EXTENSION_DESCRIPTION\s+"[^"]+"\s*\)',
    "EXTENSION_ICONURL": r'\bset\s*\(\s*EXTENSION_ICONURL\s+"https?://[^"]+"\s*\)',
    "EXTENSION_SCREENSHOTURLS": r'\bset\s*\(\s*EXTENSION_SCREENSHOTURLS\s+"[^"]*"\s*\)',
    'EXTENSION_DEPENDS "PyTorch"': r'\bset\s*\(\s*EXTENSION_DEPENDS\s+"(?:[^"]*\s)?PyTorch(?:\s[^"]*)?"\s*\)',
    "find_package(Slicer REQUIRED)": r"\bfind_package\s*\(\s*Slicer\s+REQUIRED\s*\)",
    "include(${Slicer_USE_FILE})": r"\binclude\s*\(\s*\$\{Slicer_USE_FILE\}\s*\)",
    "add_subdirectory(TSCDenoise)": r"\badd_subdirectory\s*\(\s*TSCDenoise\s*\)",
    "include(${Slicer_EXTENSION_GENERATE_CONFIG})": r"\binclude\s*\(\s*\$\{Slicer_EXTENSION_GENERATE_CONFIG\}\s*\)",
    "include(${Slicer_EXTENSION_CPACK})": r"\binclude\s*\(\s*\$\{Slicer_EXTENSION_CPACK\}\s*\)",
}


@pytest.mark.parametrize("what", TOP_LEVEL_PATTERNS)
def test_top_level_cmake_has(top_cmake, what):
    assert re.search(TOP_LEVEL_PATTERNS[what], strip_comments(top_cmake), re.I), f"CMakeLists.txt lacks {what}"


def test_icon_url_names_a_file_of_this_repository(top_cmake):
    text = strip_comments(top_cmake)
    homepage = re.search(r'EXTENSION_HOMEPAGE\s+"https://github\.com/([^/"]+/[^/"]+?)/?"', text)
    icon = re.search(r'EXTENSION_ICONURL\s+"https://raw\.githubusercontent\.com/([^/"]+/[^/"]+)/[^/"]+/([^"]+)"', text)
    assert homepage and icon, "EXTENSION_HOMEPAGE / EXTENSION_ICONURL are not GitHub URLs"
    assert icon.group(1) == homepage.group(1), (icon.group(1), homepage.group(1))
    assert (ROOT / icon.group(2)).is_file(), f"EXTENSION_ICONURL names {icon.group(2)}, which is not in the repository"


# --- (e) module build and tests ----------------------------------------------------------------------------


def test_module_is_a_scripted_module_with_tests(module_cmake):
    text = strip_comments(module_cmake)
    assert ["MODULE_NAME", "TSCDenoise"] in calls(text, "set")
    builds = calls(text, "slicerMacroBuildScriptedModule")
    assert len(builds) == 1, builds
    build = " ".join(builds[0])
    for part in ("NAME ${MODULE_NAME}", "SCRIPTS ${MODULE_PYTHON_SCRIPTS}", "RESOURCES ${MODULE_PYTHON_RESOURCES}"):
        assert part in build, (part, build)
    assert "WITH_GENERIC_TESTS" in builds[0], build
    testing = re.findall(r"\bif\s*\(\s*BUILD_TESTING\s*\)(.*?)\bendif\s*\(", text, re.S | re.I)
    assert any(["SCRIPT", "${MODULE_NAME}.py"] in calls(body, "slicer_add_python_unittest") for body in testing), \
        "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py) inside if(BUILD_TESTING)"
