"""Every Slicer API that TSCDenoise.py calls exists in the oldest supported Slicer (5.6), or is guarded.

SLICER_APIS lists each API the module uses with the first Slicer version that has it and the file of
Slicer's source (at tag v<version>.0) that defines it; for calls made with keywords, the keywords that
version accepts. The versions were read from Slicer's source at tags v5.6.0, v5.8.0, v5.10.0 and
v5.12.0 (e.g. ``git show v5.10.0:Modules/Scripted/SampleData/SampleData.py``). A new API must be added
here with its first version, looked up the same way, before the module may use it.
"""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from slicer_api_usage import _lookup_candidates, api_uses  # noqa: E402

MODULE_FILE = Path(__file__).resolve().parents[2] / "TSCDenoise" / "TSCDenoise.py"
OLDEST_SUPPORTED = (5, 6)

UTIL = "Base/Python/slicer/util.py"
SAMPLE_DATA = "Modules/Scripted/SampleData/SampleData.py"
SLM = "Base/Python/slicer/ScriptedLoadableModule.py"
PNW = "Base/Python/slicer/parameterNodeWrapper/"
APP = "Base/QTCore/qSlicerCoreApplication.h"
SCENE = "Libs/MRML/Core/vtkMRMLScene.h"
PYTORCH = "SlicerPyTorch: PyTorchUtils/PyTorchUtils.py"

# name as written in the module (calls kept as "()") -> (first version, where, keywords accepted or None)
SLICER_APIS = {
    "slicer": ("5.6", "Base/Python/slicer/__init__.py", None),
    "slicer.ScriptedLoadableModule.ScriptedLoadableModule": ("5.6", SLM, None),
    "slicer.ScriptedLoadableModule.ScriptedLoadableModule.__init__": ("5.6", SLM, None),
    "slicer.ScriptedLoadableModule.ScriptedLoadableModuleLogic": ("5.6", SLM, None),
    "slicer.ScriptedLoadableModule.ScriptedLoadableModuleLogic.__init__": ("5.6", SLM, None),
    "slicer.ScriptedLoadableModule.ScriptedLoadableModuleTest": ("5.6", SLM, None),
    "slicer.ScriptedLoadableModule.ScriptedLoadableModuleWidget": ("5.6", SLM, None),
    "slicer.ScriptedLoadableModule.ScriptedLoadableModuleWidget.__init__": ("5.6", SLM, None),
    "slicer.ScriptedLoadableModule.ScriptedLoadableModuleWidget.setup": ("5.6", SLM, None),
    "slicer.ScriptedLoadableModule.ScriptedLoadableModuleWidget.onReload": ("5.6", SLM, None),
    "slicer.util.VTKObservationMixin": ("5.6", UTIL, None),
    "slicer.util.VTKObservationMixin.__init__": ("5.6", UTIL, None),
    "slicer.i18n.tr": ("5.6", "Base/Python/slicer/i18n.py", None),
    "slicer.i18n.translate": ("5.6", "Base/Python/slicer/i18n.py", None),
    "slicer.parameterNodeWrapper.parameterNodeWrapper": ("5.6", PNW + "wrapper.py", None),
    "slicer.parameterNodeWrapper.Choice": ("5.6", PNW + "validators.py", None),
    "slicer.parameterNodeWrapper.WithinRange": ("5.6", PNW + "validators.py", None),
    "slicer.vtkMRMLScalarVolumeNode": ("5.6", "Libs/MRML/Core/vtkMRMLScalarVolumeNode.h", None),
    "slicer.vtkMRMLLayoutNode.SlicerLayoutSideBySideView": ("5.6", "Libs/MRML/Core/vtkMRMLLayoutNode.h", None),
    "slicer.app.connect": ("5.6", APP, None),
    "slicer.app.layoutManager": ("5.6", "Base/QTGUI/qSlicerApplication.h", None),
    # QApplication's own methods; Slicer 5.6's util.py calls them the same way (tryWithErrorDisplay, logProcessOutput)
    "slicer.app.processEvents": ("5.6", UTIL, None),
    "slicer.app.setOverrideCursor": ("5.6", UTIL, None),
    "slicer.app.restoreOverrideCursor": ("5.6", UTIL, None),
    "slicer.app.temporaryPath": ("5.6", APP, None),
    "slicer.mrmlScene": ("5.6", UTIL, None),  # the application's scene, as util.py v5.6.0 uses it
    "slicer.mrmlScene.AddNewNodeByClass": ("5.6", SCENE, None),
    "slicer.mrmlScene.Clear": ("5.6", SCENE, None),
    "slicer.mrmlScene.StartCloseEvent": ("5.6", SCENE, None),
    "slicer.mrmlScene.EndCloseEvent": ("5.6", SCENE, None),
    "slicer.mrmlScene.GetFirstNodeByClass": ("5.6", SCENE, None),
    "slicer.mrmlScene.GetNodeByID": ("5.6", SCENE, None),
    "slicer.mrmlScene.GetNumberOfNodes": ("5.6", SCENE, None),
    "slicer.util.loadUI": ("5.6", UTIL, None),
    "slicer.util.childWidgetVariables": ("5.6", UTIL, None),
    "slicer.util.arrayFromVolume": ("5.6", UTIL, None),
    "slicer.util.updateVolumeFromArray": ("5.6", UTIL, None),
    "slicer.util.loadVolume": ("5.6", UTIL, None),
    "slicer.util.setSliceViewerLayers": ("5.6", UTIL, {"background", "foreground", "label", "foregroundOpacity",
                                                        "labelOpacity", "fit", "rotateToVolumePlane"}),
    "slicer.util.tryWithErrorDisplay": ("5.6", UTIL, {"message", "show", "waitCursor"}),
    "slicer.util.confirmOkCancelDisplay": ("5.6", UTIL, {"text", "windowTitle", "parent"} | {"detailedText"}),
    "slicer.util.errorDisplay": ("5.6", UTIL, {"text", "windowTitle", "parent", "standardButtons", "detailedText"}),
    # 5.6-5.10: (args, useStartupEnvironment, updateEnvironment, cwd); blocking/logCallback/completedCallback: 5.12
    "slicer.util.launchConsoleProcess": ("5.6", UTIL, {"args", "useStartupEnvironment", "updateEnvironment", "cwd"}),
    "slicer.util.pip_install": ("5.6", UTIL, {"requirements"}),  # **kwargs only from 5.12
    "SampleData": ("5.6", SAMPLE_DATA, None),
    "SampleData.SampleDataLogic": ("5.6", SAMPLE_DATA, None),
    "SampleData.SampleDataLogic.registerCustomSampleDataSource": ("5.6", SAMPLE_DATA, {
        "category", "sampleName", "uris", "fileNames", "nodeNames", "customDownloader", "thumbnailFileName",
        "loadFileType", "loadFiles", "loadFileProperties", "checksums"}),
    "SampleData.SampleDataLogic.registerCustomSampleDataCategory": ("5.12", SAMPLE_DATA, None),
    "SampleData.SampleDataLogic.sampleDataSourcesByCategory": ("5.6", SAMPLE_DATA, None),
    "SampleData.SampleDataLogic().downloadSamples": ("5.6", SAMPLE_DATA, None),
    "slicer.packaging": ("5.12", "Base/Python/slicer/packaging.py", None),
    "slicer.packaging.pip_ensure": ("5.12", "Base/Python/slicer/packaging.py", None),
    "slicer.packaging.load_requirements": ("5.12", "Base/Python/slicer/packaging.py", None),
    # The PyTorch extension (EXTENSION_DEPENDS), imported under try/except ImportError.
    "PyTorchUtils": ("5.6", PYTORCH, None),
    "PyTorchUtils.PyTorchUtilsLogic": ("5.6", PYTORCH, None),
    "PyTorchUtils.PyTorchUtilsLogic().installTorch": ("5.6", PYTORCH, {
        "askConfirmation", "forceComputationBackend", "torchVersionRequirement", "torchvisionVersionRequirement"}),
}


def _version(text: str) -> tuple:
    return tuple(int(part) for part in text.split("."))


def problems(source: str) -> list:
    """One line per API use that a supported Slicer may lack, or that the table does not know."""
    found = []
    for use in api_uses(source):
        entry = next((SLICER_APIS[c] for c in _lookup_candidates(use.name) if c in SLICER_APIS), None)
        if entry is None:
            found.append(f"line {use.line}: {use.name} is not in SLICER_APIS: look up the first Slicer version that "
                         "has it (git show v5.6.0:<file>) and add it")
            continue
        first, where, keywords = entry
        if _version(first) > OLDEST_SUPPORTED and not use.guarded:
            found.append(f"line {use.line}: {use.name} exists only from Slicer {first} ({where}); Slicer "
                         f"{'.'.join(map(str, OLDEST_SUPPORTED))} lacks it: use an API every supported version has, "
                         "or guard it (hasattr / try-except)")
        if keywords is not None and use.keywords - keywords and not use.guarded:
            found.append(f"line {use.line}: {use.name} called with {sorted(use.keywords - keywords)}, which Slicer "
                         f"{first} does not accept")
    return found


def test_module_uses_only_apis_every_supported_slicer_has():
    assert problems(MODULE_FILE.read_text(encoding="utf-8")) == []


def _insert_in_register_sample_data(source: str, statement: str) -> str:
    anchor = "    import SampleData\n"
    assert anchor in source
    return source.replace(anchor, anchor + "    " + statement + "\n", 1)


def test_a_512_only_call_is_flagged(tmp_path):
    """The defect of issue 12: registerCustomSampleDataCategory (5.12 only) called unguarded at start-up."""
    source = _insert_in_register_sample_data(
        MODULE_FILE.read_text(encoding="utf-8"),
        'SampleData.SampleDataLogic.registerCustomSampleDataCategory("TSCDenoise", title="TSCDenoise")')
    copy = tmp_path / "TSCDenoise.py"
    copy.write_text(source, encoding="utf-8")
    found = problems(copy.read_text(encoding="utf-8"))
    assert len(found) == 1 and "registerCustomSampleDataCategory exists only from Slicer 5.12" in found[0], found


def test_the_same_call_guarded_by_hasattr_passes():
    source = _insert_in_register_sample_data(
        MODULE_FILE.read_text(encoding="utf-8"),
        'if hasattr(SampleData.SampleDataLogic, "registerCustomSampleDataCategory"): '
        'SampleData.SampleDataLogic.registerCustomSampleDataCategory("TSCDenoise", title="TSCDenoise")')
    assert problems(source) == []


def test_a_keyword_added_in_512_is_flagged():
    source = MODULE_FILE.read_text(encoding="utf-8").replace(
        "useStartupEnvironment=False,", "useStartupEnvironment=False, blocking=False,", 1)
    assert "blocking=False" in source
    found = problems(source)
    assert any("launchConsoleProcess called with ['blocking']" in line for line in found), found


def test_an_unknown_api_is_flagged():
    source = _insert_in_register_sample_data(MODULE_FILE.read_text(encoding="utf-8"),
                                             "slicer.util.someFutureHelper()")
    found = problems(source)
    assert len(found) == 1 and "slicer.util.someFutureHelper is not in SLICER_APIS" in found[0], found


def test_slicer_packaging_must_be_imported_before_use():
    """`import slicer` does not import slicer.packaging (Base/Python/slicer/__init__.py, v5.12.0)."""
    source = MODULE_FILE.read_text(encoding="utf-8")
    assert "hasattr(slicer, \"packaging\")" not in source
    assert "import slicer.packaging" in source


@pytest.mark.parametrize("name", sorted(n for n, (v, _, _) in SLICER_APIS.items() if v == "5.6"))
def test_table_versions_are_well_formed(name):
    first, where, _ = SLICER_APIS[name]
    assert _version(first) >= (5, 6) and where
