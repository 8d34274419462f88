"""The device probe (a child process) and the panel's setup path where torch is missing or broken."""

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from TSCDenoiseLib.core.checkpoint import save_model
from TSCDenoiseLib.mrml import probe
from TSCDenoiseLib.mrml.worker import EVENT_PREFIX

ROOT = Path(__file__).resolve().parents[3]
MODULE_FILE = ROOT / "TSCDenoise" / "TSCDenoise.py"

# Makes `import torch` fail as where PyTorch is not installed (or its DLLs do not load).
_TORCH_BLOCKER = textwrap.dedent("""
    import importlib.abc, sys

    class _NoTorch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch.") or name == "torchvision" or name.startswith("torchvision."):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, _NoTorch())
""")


@pytest.fixture
def no_torch_env(tmp_path):
    """Environment whose Python processes (and their children) cannot import torch."""
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(_TORCH_BLOCKER)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(blocker), str(ROOT), env.get("PYTHONPATH", "")])
    check = subprocess.run([sys.executable, "-c", "import torch"], env=env, capture_output=True, text=True)
    assert check.returncode != 0 and "No module named 'torch'" in check.stderr
    return env


def _module_level_tscdenoiselib_imports() -> list:
    """`import`s of TSCDenoiseLib that TSCDenoise.py runs when Slicer loads it (outside functions)."""
    tree = ast.parse(MODULE_FILE.read_text(encoding="utf-8"))
    lines = []
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("TSCDenoiseLib"):
            lines.append(ast.unparse(node))
        elif isinstance(node, ast.Import) and any(a.name.startswith("TSCDenoiseLib") for a in node.names):
            lines.append(ast.unparse(node))
    return lines


def test_probe_without_torch_reports_it_and_exits_cleanly(no_torch_env):
    result = subprocess.run([sys.executable, "-m", "TSCDenoiseLib.mrml.probe", "--measure"], env=no_torch_env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    info = probe.info_from_events(json.loads(line[len(EVENT_PREFIX):]) for line in result.stdout.splitlines()
                                  if line.startswith(EVENT_PREFIX))
    assert info["torch"] is None and "No module named 'torch'" in info["torch_error"]
    assert info["devices"] == [{"id": "cpu", "name": "CPU"}]
    assert probe.describe_devices(info, "auto") == "PyTorch is not installed yet; Denoise offers to install it."
    assert probe.device_choices(info) == ["auto", "cpu"] and probe.estimate_text(info, "auto", (3, 8, 8)) == ""


def test_setup_path_works_without_torch_and_never_imports_it(no_torch_env, tmp_path):
    """What the panel's setup() and first Denoise do in Slicer's process, with torch impossible to import.

    The module's own imports of TSCDenoiseLib, the probe started and followed as TSCDenoiseLogic does,
    the texts the panel shows, and a run whose worker cannot import torch: each works or reports it, and
    torch is never imported in this process.
    """
    imports = "\n".join(_module_level_tscdenoiselib_imports())
    assert "TSCDenoiseLib" in imports
    script = textwrap.dedent(f"""
        import json, sys, time
        IMPORTS
        import TSCDenoiseLib.mrml.background, TSCDenoiseLib.mrml.run, TSCDenoiseLib.mrml.nodes
        from TSCDenoiseLib.mrml.background import ChildProcess
        from TSCDenoiseLib.mrml import probe
        import numpy as np, slicer
        from slicer.util import updateVolumeFromArray

        child = ChildProcess(probe.probe_command(sys.executable, measure=True), {str(tmp_path)!r}).start()
        events = []
        while child.running or not events:
            events += child.poll()
            if not child.running:
                child.wait(); events += child.poll(); break
            time.sleep(0.05)
        info = probe.info_from_events(events)
        texts = [probe.describe_devices(info, "auto"), probe.estimate_text(info, "auto", (3, 8, 8))]

        scene = slicer.vtkMRMLScene()
        node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "ct")
        updateVolumeFromArray(node, np.full((2, 8, 8), 40, dtype=np.int16))
        finished = []
        run = TSCDenoiseLib.mrml.run.NodeDenoiseRun(node, device="cpu", work_dir={str(tmp_path)!r},
                                                    on_finished=lambda n, e: finished.append(str(e))).start()
        while run.poll():
            time.sleep(0.05)
        print(json.dumps({{"info": info, "texts": texts, "finished": finished,
                          "torch_imported": "torch" in sys.modules}}))
    """).replace("IMPORTS", imports)
    result = subprocess.run([sys.executable, "-c", script], env=no_torch_env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["torch_imported"] is False
    assert report["info"]["torch"] is None
    assert report["texts"] == ["PyTorch is not installed yet; Denoise offers to install it.", ""]
    assert len(report["finished"]) == 1 and "No module named 'torch'" in report["finished"][0]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("TSCDenoise-")] == []


def test_module_file_never_imports_torch_outside_its_self_test():
    tree = ast.parse(MODULE_FILE.read_text(encoding="utf-8"))
    test_class = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "TSCDenoiseTest")
    in_test = {id(n) for n in ast.walk(test_class)}
    for node in ast.walk(tree):
        if id(node) in in_test:
            continue
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) else []
        assert not any(n == "torch" or n.startswith("torch.") for n in names), ast.unparse(node)
        assert not any(n.startswith("TSCDenoiseLib.core.device") for n in names), ast.unparse(node)


def test_probe_with_torch_lists_the_cpu_and_measures_its_speed(tiny_net, tmp_path):
    checkpoint = save_model(tiny_net, tmp_path / "student.pt")
    info = probe.probe(measure_speed=True, model_path=str(checkpoint))
    import torch

    assert info["torch"] == torch.__version__
    assert info["devices"][0] == {"id": "cpu", "name": "CPU"}
    assert info["seconds_per_megapixel"]["cpu"] > 0
    assert len(info["devices"]) == 1 + torch.cuda.device_count() + int(torch.backends.mps.is_available())


GPU_INFO = {"torch": "2.4.0", "devices": [
    {"id": "cpu", "name": "CPU"},
    {"id": "cuda:0", "name": "NVIDIA RTX A4000", "free_gib": 14.2, "total_gib": 15.7},
    {"id": "mps", "name": "Apple GPU (Metal)"}],
    "seconds_per_megapixel": {"cpu": 3.0, "cuda:0": 0.01}}


def test_device_menu_offers_only_what_exists():
    assert probe.device_choices(GPU_INFO) == ["auto", "cuda", "mps", "cpu"]
    assert probe.device_choices({"torch": "2.4.0", "devices": [{"id": "cpu", "name": "CPU"}]}) == ["auto", "cpu"]
    assert probe.device_choices(None) == ["auto", "cpu"]  # before the probe answered
    assert probe.describe_devices(GPU_INFO, "auto") == "cuda:0: NVIDIA RTX A4000, 14.2 of 15.7 GiB free (PyTorch 2.4.0)"
    assert probe.describe_devices(GPU_INFO, "mps").startswith("mps: Apple GPU")
    broken = {"torch": None, "torch_error": "OSError: [WinError 126] c10.dll could not be loaded"}
    assert "does not load" in probe.describe_devices(broken, "auto") and "c10.dll" in probe.describe_devices(broken, "auto")


def test_a_device_the_engine_cannot_use_is_not_offered():
    info = {"torch": "2.4.0", "devices": [{"id": "cpu", "name": "CPU"},
                                          {"id": "mps", "name": "Apple GPU (Metal)", "usable": False,
                                           "error": "RuntimeError: Input type and weight type differ"}]}
    assert probe.device_choices(info) == ["auto", "cpu"]
    assert probe.resolve_choice(info, "mps") == "cpu"
    assert probe.describe_devices(info, "auto") == \
        "cpu: CPU (PyTorch 2.4.0); Apple GPU (Metal) found but not usable by this version"


def test_engine_smoke_run_reports_success_and_the_error():
    assert probe.engine_runs_on("cpu") is None
    assert "Unknown device" in probe.engine_runs_on("no-such-device")


def test_estimate_uses_the_measured_speed_and_warns_on_cpu():
    shape = (120, 512, 512)  # 31.5 megapixels
    assert probe.estimate_seconds(GPU_INFO, "auto", shape) == pytest.approx(0.01 * 120 * 512 * 512 / 1e6)
    assert probe.estimate_seconds(GPU_INFO, "cpu", shape) == pytest.approx(3.0 * 120 * 512 * 512 / 1e6)
    assert probe.estimate_seconds(GPU_INFO, "mps", shape) is None  # not measured
    cpu_only = {"torch": "2.4.0", "devices": [{"id": "cpu", "name": "CPU"}], "seconds_per_megapixel": {"cpu": 3.0}}
    text = probe.estimate_text(cpu_only, "auto", shape)
    assert text.startswith("Only the CPU is available: expected: about 2 min for 120 slices of 512 x 512")
    assert "Expected: about" in probe.estimate_text(GPU_INFO, "auto", shape)
    assert probe.format_duration(42) == "42 s" and probe.format_duration(5400) == "1 h 30 min"
