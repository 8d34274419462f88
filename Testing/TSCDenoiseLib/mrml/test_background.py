"""The worker process the Slicer module runs: real child processes, real pipes, real cancellation."""

import os
import stat
import sys
import time

import numpy as np
import psutil
import pytest

from TSCDenoiseLib.mrml.background import DenoiseProcess
from TSCDenoiseLib.core.checkpoint import save_model
from TSCDenoiseLib.errors import InvalidInputError, TSCDenoiseError
from TSCDenoiseLib.core.inference import denoise_volume


def _ct(shape, seed=0):
    rng = np.random.default_rng(seed)
    return (np.where(rng.random(shape) < 0.5, 30.0, -1000.0) + rng.normal(0, 25, shape)).round().astype(np.int16)


def _run_to_end(process, timeout=120.0):
    events, deadline = [], time.monotonic() + timeout
    while process.running or not events or events[-1]["event"] not in ("done", "error"):
        events += process.poll()
        assert time.monotonic() < deadline, f"worker did not finish; events so far: {events[-3:]}"
        if not process.running:
            process.wait()
            time.sleep(0.05)
            events += process.poll()
            break
        time.sleep(0.05)
    return events


@pytest.fixture
def checkpoint(tiny_net, tmp_path):
    return save_model(tiny_net, tmp_path / "student.pt")


def test_worker_result_equals_the_engine_and_progress_is_reported(tiny_net, checkpoint, tmp_path):
    volume = _ct((6, 32, 40))
    process = DenoiseProcess(volume, checkpoint, device="cpu", slab_size=2, work_dir=tmp_path).start()
    events = _run_to_end(process)
    result = process.result()
    np.testing.assert_array_equal(result, denoise_volume(volume, tiny_net, device="cpu", slab_size=2))
    assert result.dtype == np.int16

    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "done"
    assert events[0]["device"] == "cpu" and events[0]["slab_size"] == 2 and events[0]["slices"] == 6
    assert [(e["done"], e["total"]) for e in events if e["event"] == "progress"] == [(2, 6), (4, 6), (6, 6)]
    assert events[-1]["slices_per_second"] > 0
    process.cleanup()
    assert not process.folder.exists()


def test_bad_input_comes_back_as_the_engines_clear_message(checkpoint, tmp_path):
    normalized = np.random.default_rng(0).random((2, 16, 16)).astype(np.float32)
    process = DenoiseProcess(normalized, checkpoint, device="cpu", work_dir=tmp_path).start()
    with pytest.raises(InvalidInputError, match="normalized intensities"):
        process.result()
    assert process.wait() == 2
    assert not process.output_path.exists()


def test_a_bad_checkpoint_is_a_failure_with_its_message(tmp_path):
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    process = DenoiseProcess(_ct((2, 16, 16)), broken, device="cpu", work_dir=tmp_path).start()
    with pytest.raises(TSCDenoiseError, match="not a readable checkpoint") as caught:
        process.result()
    assert not isinstance(caught.value, InvalidInputError)
    assert process.wait() == 1


def test_a_crash_reports_the_exit_code_and_stderr(tmp_path):
    process = DenoiseProcess(_ct((2, 16, 16)), python_executable=[sys.executable, "-c", "import sys; sys.exit('boom')"],
                             work_dir=tmp_path).start()
    with pytest.raises(TSCDenoiseError, match="exit code 1.*boom"):
        process.result()


def test_cancel_kills_the_whole_process_tree(checkpoint, tmp_path):
    # A launcher that stays alive as the worker's parent, as Slicer's PythonSlicer launcher does.
    launcher = tmp_path / "launcher.sh"
    launcher.write_text(f'#!/bin/sh\n"{sys.executable}" "$@"\nstatus=$?\nexit $status\n')
    launcher.chmod(launcher.stat().st_mode | stat.S_IEXEC)
    process = DenoiseProcess(_ct((400, 128, 128)), checkpoint, device="cpu", slab_size=1,
                             python_executable=str(launcher), work_dir=tmp_path).start()
    deadline = time.monotonic() + 120
    while not any(e["event"] == "progress" for e in process.poll()):
        assert process.running and time.monotonic() < deadline
        time.sleep(0.02)
    tree = [psutil.Process(process.process.pid)] + psutil.Process(process.process.pid).children(recursive=True)
    assert len(tree) >= 2  # the launcher and the Python worker
    process.cancel()
    gone, alive = psutil.wait_procs(tree, timeout=10)
    assert not alive, f"still running after cancel: {alive}"
    with pytest.raises(TSCDenoiseError, match="cancelled"):
        process.result()
    assert not process.output_path.exists()
    assert not any(name.startswith(".output.npy") for name in os.listdir(process.folder))
