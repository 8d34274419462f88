"""The Slicer module's code and its Qt Designer panel agree (no Slicer needed: the files are parsed)."""

import ast
import hashlib
import re
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

from TSCDenoiseLib.core.resources import sample_path

MODULE_DIR = Path(__file__).resolve().parents[2] / "TSCDenoise"
MODULE_FILE = MODULE_DIR / "TSCDenoise.py"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "TSCDenoise.ui"
REQUIREMENTS = MODULE_DIR / "Resources" / "requirements.txt"

# Every widget the module's code touches, with the class its code relies on.
EXPECTED_WIDGETS = {
    "adaptSecondsSpinBox": "QSpinBox",
    "applyButton": "QPushButton",
    "deviceComboBox": "QComboBox",
    "deviceInfoLabel": "QLabel",
    "estimateLabel": "QLabel",
    "fadeSlider": "ctkSliderWidget",
    "loadSampleButton": "QPushButton",
    "logTextEdit": "QPlainTextEdit",
    "modelPathLineEdit": "ctkPathLineEdit",
    "progressBar": "QProgressBar",
    "settingsCollapsibleButton": "ctkCollapsibleButton",
    "sideBySideButton": "QPushButton",
    "slabSizeSpinBox": "QSpinBox",
    "statusLabel": "QLabel",
    "strengthSlider": "ctkSliderWidget",
}
# Parameters the widget keeps in sync by hand (not bound with SlicerParameterName), and their widget:
# modelPath is a str ("" by default: a pathlib.Path field would show "." in the file field), and the
# device menu lists only the devices the probe found, which a Choice connector cannot do.
MANUAL_PARAMETERS = {"modelPath": "modelPathLineEdit", "device": "deviceComboBox"}
# Widget class that parameterNodeWrapper's GUI connectors pair with each parameter type.
CONNECTOR_CLASS = {
    "vtkMRMLScalarVolumeNode": "qMRMLNodeComboBox",
    "bool": "QCheckBox",
    "pathlib.Path": "ctkPathLineEdit",
    "str": "QComboBox",  # with a Choice annotation
    "int": "QSpinBox",
    "float": "ctkSliderWidget",  # needs a bounded float (WithinRange), else the connector raises
}


@pytest.fixture(scope="module")
def module_tree():
    source = MODULE_FILE.read_text(encoding="utf-8")
    compile(source, str(MODULE_FILE), "exec")  # the module file compiles
    return ast.parse(source)


@pytest.fixture(scope="module")
def ui_widgets():
    root = ElementTree.parse(UI_FILE).getroot()
    widgets = {}
    for element in root.iter("widget"):
        name = element.get("name")
        assert name not in widgets, f"widget name {name!r} is used twice in {UI_FILE.name}"
        widgets[name] = element
    return root, widgets


def _used_ui_names(tree):
    return {node.attr for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
            and node.value.attr == "ui" and isinstance(node.value.value, ast.Name) and node.value.value.id == "self"}


def _parameters(tree):
    """(name, annotation source, default source) of the @parameterNodeWrapper class's fields."""
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "TSCDenoiseParameterNode")
    assert any(getattr(d, "id", None) == "parameterNodeWrapper" for d in cls.decorator_list)
    return [(f.target.id, ast.unparse(f.annotation), ast.unparse(f.value) if f.value else None)
            for f in cls.body if isinstance(f, ast.AnnAssign)]


def _property(widget, name):
    element = widget.find(f"property[@name='{name}']")
    if element is None:
        return None
    value = element[0]
    return [s.text for s in value] if value.tag == "stringlist" else value.text


def test_every_widget_the_code_uses_exists_with_the_expected_class(module_tree, ui_widgets):
    _, widgets = ui_widgets
    used = _used_ui_names(module_tree)
    assert used == set(EXPECTED_WIDGETS), (
        f"update EXPECTED_WIDGETS: used but not listed {sorted(used - set(EXPECTED_WIDGETS))}, "
        f"listed but unused {sorted(set(EXPECTED_WIDGETS) - used)}")
    for name, cls in EXPECTED_WIDGETS.items():
        assert name in widgets, f"TSCDenoise.py uses self.ui.{name}, which {UI_FILE.name} does not define"
        assert widgets[name].get("class") == cls, f"{name} is a {widgets[name].get('class')}, the code expects {cls}"


def test_each_parameter_has_one_widget_of_a_class_its_connector_accepts(module_tree, ui_widgets):
    _, widgets = ui_widgets
    bound = {}
    for name, widget in widgets.items():
        parameter = _property(widget, "SlicerParameterName")
        if parameter is not None:
            assert parameter not in bound, f"parameter {parameter} is bound to {bound[parameter]} and {name}"
            bound[parameter] = name
    parameters = _parameters(module_tree)
    assert set(bound) == {p for p, _, _ in parameters} - set(MANUAL_PARAMETERS)
    source = MODULE_FILE.read_text(encoding="utf-8")
    for parameter, widget in MANUAL_PARAMETERS.items():
        assert widget in widgets and f"self._parameterNode.{parameter} = " in source, (parameter, widget)
    for parameter, annotation, default in parameters:
        if parameter in MANUAL_PARAMETERS:
            continue
        base = re.sub(r"^Annotated\[(\w+(?:\.\w+)?),.*\]$", r"\1", annotation)
        widget = widgets[bound[parameter]]
        assert widget.get("class") == CONNECTOR_CLASS[base], f"{parameter}: {annotation} needs a {CONNECTOR_CLASS[base]}"
        if base == "str":
            assert "Choice(" in annotation, f"{parameter}: a QComboBox connector needs a Choice annotation"
            choices = ast.literal_eval(re.search(r"Choice\((\[.*?\])\)", annotation).group(1))
            assert ast.literal_eval(default) in choices
        if base == "int":
            low, high = map(int, re.search(r"WithinRange\((\d+), (\d+)\)", annotation).groups())
            assert (int(_property(widget, "minimum")), int(_property(widget, "maximum"))) == (low, high)
            assert low <= ast.literal_eval(default) <= high
        if base == "float":
            low, high = map(float, re.search(r"WithinRange\(([\d.]+), ([\d.]+)\)", annotation).groups())
            assert (float(_property(widget, "minimum")), float(_property(widget, "maximum"))) == (low, high)
            assert low <= ast.literal_eval(default) <= high
            assert low <= float(_property(widget, "value")) <= high


def test_volume_selectors_get_the_scene_and_offer_only_scalar_volumes(ui_widgets):
    root, widgets = ui_widgets
    receivers = {c.findtext("receiver") for c in root.iter("connection")
                 if c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)" and c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"}
    selectors = [name for name, w in widgets.items() if w.get("class") == "qMRMLNodeComboBox"]
    assert set(selectors) == {"inputSelector", "outputSelector"} and set(selectors) <= receivers
    for name in selectors:
        assert _property(widgets[name], "nodeTypes") == ["vtkMRMLScalarVolumeNode"]
        assert "vtkMRMLLabelMapVolumeNode" in _property(widgets[name], "hideChildNodeTypes")
    assert _property(widgets["outputSelector"], "noneEnabled") == "true"
    assert _property(widgets["outputSelector"], "noneDisplay") == "Create new volume"
    assert _property(widgets["inputSelector"], "addEnabled") == "false"


def test_custom_widget_classes_are_declared(ui_widgets):
    root, widgets = ui_widgets
    declared = {c.findtext("class") for c in root.iter("customwidget")}
    custom = {w.get("class") for w in widgets.values() if not w.get("class").startswith("Q")}
    assert custom <= declared, f"declare {sorted(custom - declared)} under <customwidgets>"
    assert root.find("widget").get("class") == "qMRMLWidget" and root.findtext("class") == "TSCDenoise"


def test_slab_size_tooltip_tells_the_trade_off(ui_widgets):
    _, widgets = ui_widgets
    assert "GPU memory" in _property(widgets["slabSizeSpinBox"], "toolTip")


def test_module_classes_follow_the_scripted_module_pattern(module_tree):
    classes = {n.name: [ast.unparse(b) for b in n.bases] for n in module_tree.body if isinstance(n, ast.ClassDef)}
    assert classes["TSCDenoise"] == ["ScriptedLoadableModule"]
    assert classes["TSCDenoiseWidget"][0] == "ScriptedLoadableModuleWidget"
    assert classes["TSCDenoiseLogic"] == ["ScriptedLoadableModuleLogic"]
    assert classes["TSCDenoiseTest"] == ["ScriptedLoadableModuleTest"]
    source = MODULE_FILE.read_text(encoding="utf-8")
    assert 'loadUI(self.resourcePath("UI/TSCDenoise.ui"))' in source and UI_FILE.is_file()


def test_sample_data_checksums_match_the_bundled_files(module_tree):
    source = MODULE_FILE.read_text(encoding="utf-8")
    for name in ("ldct_test.nii.gz", "ndct_test.nii.gz"):
        digest = hashlib.sha256(sample_path(name).read_bytes()).hexdigest()
        constant = {"ldct_test.nii.gz": "SAMPLE_LOW_DOSE_FILE", "ndct_test.nii.gz": "SAMPLE_NORMAL_DOSE_FILE"}[name]
        assert re.search(rf'{constant}: "SHA256:{digest}"', source), f"update SAMPLE_CHECKSUMS for {name} to {digest}"


def test_requirements_file_pins_minimum_versions_and_holds_only_what_the_slicer_path_needs():
    lines = [line.split("#")[0].strip() for line in REQUIREMENTS.read_text().splitlines()]
    requirements = [line for line in lines if line]
    assert requirements and all(re.fullmatch(r"[A-Za-z0-9_.\-]+>=[0-9.]+", r) for r in requirements)
    names = {re.split(r"[<>=]", r)[0].lower() for r in requirements}
    # Nothing on the Slicer path imports MONAI (a test in Testing/ checks the imports); torch comes from
    # the PyTorch extension; psutil stops the worker's process tree on cancel.
    assert names == {"psutil"}, names


def test_model_path_parameter_defaults_to_empty_not_dot(module_tree):
    fields = {name: (annotation, default) for name, annotation, default in _parameters(module_tree)}
    assert fields["modelPath"] == ("str", "''"), fields["modelPath"]


def test_device_choices_include_mps(module_tree):
    fields = {name: (annotation, default) for name, annotation, default in _parameters(module_tree)}
    choices = ast.literal_eval(re.search(r"Choice\((\[.*?\])\)", fields["device"][0]).group(1))
    assert choices == ["auto", "cuda", "mps", "cpu"]


# What Slicer's base classes provide (Base/Python/slicer/ScriptedLoadableModule.py), for the check below.
BASE_METHODS = {
    "TSCDenoiseWidget": {"resourcePath", "cleanup", "onReload", "onReloadAndTest", "onEditSource", "enter", "exit",
                         "addObserver", "removeObserver", "removeObservers", "hasObserver", "observer"},
    "TSCDenoiseLogic": {"getParameterNode", "getAllParameterNodes", "createParameterNode"},
    "TSCDenoiseTest": {"delayDisplay", "setUp", "tearDown"},
}


def test_methods_called_on_self_exist_in_the_class_or_its_slicer_base(module_tree):
    """E.g. resourcePath exists on the module and its widget but not on ScriptedLoadableModuleLogic."""
    for cls in (n for n in module_tree.body if isinstance(n, ast.ClassDef) and n.name in BASE_METHODS):
        own = {f.name for f in cls.body if isinstance(f, ast.FunctionDef)}
        called = {node.func.attr for node in ast.walk(cls)
                  if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                  and isinstance(node.func.value, ast.Name) and node.func.value.id == "self"}
        unknown = {name for name in called - own - BASE_METHODS[cls.name] if not name.startswith("assert")}
        assert not unknown, f"{cls.name} calls self.{sorted(unknown)}, which neither it nor its Slicer base class defines"


def _class(tree, name):
    return next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name)


def _logic_calls(function):
    """Names of the `self.logic.<name>(...)` calls in `function`."""
    return {node.func.attr for node in ast.walk(function)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Attribute) and node.func.value.attr == "logic"
            and isinstance(node.func.value.value, ast.Name) and node.func.value.value.id == "self"}


def test_methods_the_widget_calls_on_its_logic_exist(module_tree):
    logic = {f.name for f in _class(module_tree, "TSCDenoiseLogic").body if isinstance(f, ast.FunctionDef)}
    called = _logic_calls(_class(module_tree, "TSCDenoiseWidget"))
    assert called - logic - BASE_METHODS["TSCDenoiseLogic"] == set()


def test_the_standby_worker_is_stopped_whenever_the_panel_goes_away(module_tree):
    """A standby worker (an idle process with torch loaded) must not outlive the module, the scene or a reload."""
    widget = {f.name: f for f in _class(module_tree, "TSCDenoiseWidget").body if isinstance(f, ast.FunctionDef)}
    for method in ("cleanup", "exit", "onSceneStartClose", "onReload"):
        assert "stopStandby" in _logic_calls(widget[method]), f"TSCDenoiseWidget.{method} leaves the standby running"
    for method in ("enter", "onSceneEndClose"):
        assert "prepareStandby" in _logic_calls(widget[method]), f"TSCDenoiseWidget.{method} starts no standby"


def test_the_strength_slider_is_bound_to_the_parameter_and_reaches_the_run(module_tree, ui_widgets):
    from TSCDenoiseLib.core.volume_checks import STRENGTH_RANGE

    _, widgets = ui_widgets
    fields = {name: (annotation, default) for name, annotation, default in _parameters(module_tree)}
    assert fields["strength"] == ("Annotated[float, WithinRange(0.25, 2.0)]", "1.0")
    assert fields["autoStrength"] == ("bool", "True")  # automatic by default, as in the library and the CLI
    automatic = widgets["autoStrengthCheckBox"]
    assert automatic.get("class") == "QCheckBox" and _property(automatic, "SlicerParameterName") == "autoStrength"
    assert _property(automatic, "checked") == "true"
    slider = widgets["strengthSlider"]
    assert slider.get("class") == "ctkSliderWidget" and _property(slider, "SlicerParameterName") == "strength"
    assert (float(_property(slider, "minimum")), float(_property(slider, "maximum"))) == STRENGTH_RANGE
    assert float(_property(slider, "singleStep")) == 0.05 and float(_property(slider, "value")) == 1.0
    tip = _property(slider, "toolTip")
    assert "below 1 keeps more texture" in tip and "above 1 smooths more" in tip
    # the panel's Denoise passes it to the logic, which passes it to the worker's run
    widget = {f.name: f for f in _class(module_tree, "TSCDenoiseWidget").body if isinstance(f, ast.FunctionDef)}
    calls = [n for n in ast.walk(widget["onApplyButton"]) if isinstance(n, ast.Call)
             and getattr(n.func, "attr", None) == "startDenoising"]
    assert len(calls) == 1 and {k.arg: ast.unparse(k.value) for k in calls[0].keywords}["strength"] == \
        "'auto' if node.autoStrength else node.strength"
    # the slider is greyed out while Automatic is on
    enabled = [ast.unparse(n.value) for n in ast.walk(widget["updateGui"]) if isinstance(n, ast.Assign)
               and ast.unparse(n.targets[0]) == "self.ui.strengthSlider.enabled"]
    assert enabled == ["bool(node) and (not node.autoStrength) and (not running)"]
    logic = {f.name: f for f in _class(module_tree, "TSCDenoiseLogic").body if isinstance(f, ast.FunctionDef)}
    runs = [n for n in ast.walk(logic["startDenoising"]) if isinstance(n, ast.Call)
            and getattr(n.func, "id", None) == "NodeDenoiseRun"]
    assert len(runs) == 1 and {k.arg: ast.unparse(k.value) for k in runs[0].keywords}["strength"] == "strength"
    process = [n for n in ast.walk(logic["process"]) if isinstance(n, ast.Call)
               and getattr(n.func, "attr", None) == "startDenoising"]
    assert {k.arg: ast.unparse(k.value) for k in process[0].keywords}["strength"] == "strength"
    for method in ("startDenoising", "process"):  # a script that names no strength gets the panel's default
        arguments = logic[method].args
        defaults = dict(zip([a.arg for a in arguments.args][-len(arguments.defaults):], arguments.defaults))
        assert ast.literal_eval(defaults["strength"]) == "auto"
