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


def test_backend_info_reports_the_active_dcn_backend():
    info = TSCDenoiseLib.backend_info()
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
