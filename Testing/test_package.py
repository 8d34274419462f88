import json
import re
import subprocess
import sys
from pathlib import Path

import TSCDenoiseLib

ROOT = Path(__file__).resolve().parents[1]


def test_version_matches_pyproject():
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^version = "([^"]+)"', pyproject, re.M).group(1) == TSCDenoiseLib.__version__


def test_runtime_info_reports_the_active_dcn_backend():
    info = TSCDenoiseLib.runtime_info()
    assert info["dcn_backend"]["cpu"] == "torch"  # measured faster than torchvision's CPU kernel
    assert info["torch"]


def test_cli_info_prints_json_and_exits_zero():
    result = subprocess.run([sys.executable, "-m", "TSCDenoiseLib", "info", "--json"], capture_output=True,
                            text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["tscdenoise"] == TSCDenoiseLib.__version__ and "default_model" in info


def test_cli_bad_usage_exits_two():
    result = subprocess.run([sys.executable, "-m", "TSCDenoiseLib", "no-such-command"], capture_output=True,
                            text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 2 and "invalid choice" in result.stderr


def test_package_import_is_lazy():
    code = "import sys, TSCDenoiseLib; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.stdout.strip() == "False", "importing TSCDenoiseLib must not import torch"


SLICER_PATH_CHECK = r"""
import sys, tempfile
from pathlib import Path
import numpy as np
import TSCDenoiseLib, TSCDenoiseLib.cli, TSCDenoiseLib.demo
import TSCDenoiseLib.core.checkpoint, TSCDenoiseLib.core.device, TSCDenoiseLib.core.export, TSCDenoiseLib.core.metrics
import TSCDenoiseLib.core.resources, TSCDenoiseLib.io.pipeline, TSCDenoiseLib.mrml.background, TSCDenoiseLib.mrml.worker
import TSCDenoiseLib.mrml.nodes
from TSCDenoiseLib.adaptation import adapt_model
from TSCDenoiseLib.core.inference import denoise_volume
from TSCDenoiseLib.io import VolumeGeometry, read_ct, write_ct
from TSCDenoiseLib.networks import TSCNet

# run the Slicer path once, so that imports made on first use are seen too
net = TSCNet(base_channels=4, num_attention_blocks=1, num_dems=1).eval()
volume = np.random.default_rng(0).normal(40.0, 20.0, (2, 24, 24)).astype(np.float32)
out = denoise_volume(volume, net, device="cpu")
adapt_model(np.random.default_rng(1).normal(40.0, 20.0, (2, 128, 128)).astype(np.float32), net, steps=1, device="cpu")
with tempfile.TemporaryDirectory() as folder:
    write_ct(out, VolumeGeometry(), Path(folder) / "x.nii.gz")
    read_ct(Path(folder) / "x.nii.gz")
heavy = ("monai", "astra", "scipy", "matplotlib", "ignite", "TSCDenoiseLib.training", "TSCDenoiseLib.evaluation")
print(" ".join(sorted(m for m in sys.modules if any(m == h or m.startswith(h + ".") for h in heavy))))
"""


def test_slicer_path_needs_no_training_or_evaluation_dependencies():
    result = subprocess.run([sys.executable, "-c", SLICER_PATH_CHECK], capture_output=True, text=True, cwd=ROOT,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"the Slicer path imported: {result.stdout.strip()}"
