"""Fixtures of the fault suite: small real inputs, a tiny checkpoint, the CLI in a real child process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from TSCDenoiseLib.core.checkpoint import save_model
from TSCDenoiseLib.io.geometry import VolumeGeometry

REPO = Path(__file__).resolve().parents[2]


def ct_volume(shape=(4, 32, 32), seed: int = 0) -> np.ndarray:
    """A small CT-like volume in HU: air around a noisy water disc."""
    z, y, x = shape
    yy, xx = np.mgrid[:y, :x]
    disc = (yy - y / 2) ** 2 + (xx - x / 2) ** 2 < (min(x, y) / 2.5) ** 2
    volume = np.where(disc, 40.0, -1000.0)[None].repeat(z, 0)
    return (volume + np.random.default_rng(seed).normal(0, 20, shape)).astype(np.float32)


def geometry(spacing=(0.8, 0.8, 2.0), origin=(-10.0, -10.0, 5.0)) -> VolumeGeometry:
    return VolumeGeometry(spacing=spacing, origin=origin, direction=(1, 0, 0, 0, 1, 0, 0, 0, 1))


@pytest.fixture
def checkpoint(tiny_net, tmp_path) -> Path:
    return save_model(tiny_net, tmp_path / "student.pt", role="student")


@pytest.fixture
def nifti(tmp_path) -> Path:
    from TSCDenoiseLib.io import write_ct

    return write_ct(ct_volume(), geometry(), tmp_path / "input" / "ct.nii.gz")


def run_cli(*args, env=None, **popen):
    """`python -m TSCDenoiseLib ARGS` in a child process; returns the CompletedProcess (text)."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "TSCDenoiseLib", *map(str, args)], capture_output=True, text=True,
                          env=environment, cwd=popen.pop("cwd", REPO), timeout=popen.pop("timeout", 300), **popen)


def one_line(stderr: str) -> str:
    """The single line a refusal prints (after any progress lines), checked to be no traceback."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.strip().splitlines() if line.startswith("tscdenoise ")]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.fixture
def small_disk(tmp_path):
    """A folder on a real, tiny filesystem (tmpfs of 96 KiB): writes beyond it fail with ENOSPC."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (the RLIMIT_FSIZE cases cover short writes without it)")
    mount = tmp_path / "small_disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    filler = mount / "filler"  # leave 12 KiB: any output bigger than that fails part-way
    filler.write_bytes(b"\0" * (96 - 12) * 1024)
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)
