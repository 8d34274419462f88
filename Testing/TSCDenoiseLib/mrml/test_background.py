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



def _cancel_kills_the_tree_and_leaves_no_output(process) -> float:
    """Cancel a running worker (behind its launcher); assert every process of its tree is gone, result() says
    cancelled and no output or partial output is left. Returns how long cancel() itself took (seconds)."""
    tree = [psutil.Process(process.process.pid)] + psutil.Process(process.process.pid).children(recursive=True)
    assert len(tree) >= 2  # the launcher and the Python worker
    started = time.perf_counter()
    process.cancel()
    seconds = time.perf_counter() - started
    gone, alive = psutil.wait_procs(tree, timeout=10)
    assert not alive, f"still running after cancel: {alive}"
    with pytest.raises(TSCDenoiseError, match="cancelled"):
        process.result()
    assert not process.output_path.exists()
    assert not any(name.startswith(".output.npy") for name in os.listdir(process.folder))
    return seconds

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
    _cancel_kills_the_tree_and_leaves_no_output(process)


# --- launching, reading and cancelling as inside Slicer -----------------------------------------------------

import subprocess  # noqa: E402
import threading  # noqa: E402

from TSCDenoiseLib.mrml.background import ChildProcess, read_lines  # noqa: E402
from TSCDenoiseLib.mrml.worker import EVENT_PREFIX  # noqa: E402

# A child that writes lines a Windows code page cannot decode, then far more than a pipe holds (64 KiB),
# then an event: if the reader stopped at the bad bytes, the child would block on the full pipe forever.
_NOISY_CHILD = (
    "import sys\n"
    "out = sys.stdout.buffer\n"
    "out.write(b'caf\\x81 \\x8d\\x8f\\x90 \\x9d undecodable in cp1252\\n'); out.flush()\n"
    "for i in range(4000): out.write(b'filler line %d ' % i + b'x' * 40 + b'\\n')\n"
    "out.write(b'\\x81\\x81\\n')\n"
    f"out.write(b'{EVENT_PREFIX}' + b'{{\"event\": \"done\", \"seconds\": 1}}\\n')\n"
    "out.flush()\n"
)


def _launch_like_slicer(encoding):
    """As slicer.util.launchConsoleProcess (5.6-5.10): text mode in a code page, stderr merged into stdout."""
    def launch(command, env_updates, cwd):
        env = dict(os.environ)
        env.update(env_updates)
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                                encoding=encoding, env=env, cwd=cwd)
    return launch


@pytest.mark.parametrize("launch", [None, _launch_like_slicer("cp1252")], ids=["binary", "text-cp1252"])
def test_output_readers_survive_undecodable_bytes_and_never_stall(tmp_path, launch):
    child = ChildProcess([sys.executable, "-c", _NOISY_CHILD], tmp_path).start(launch)
    code = child.wait(timeout=60)  # a stalled reader would leave the child blocked on a full pipe
    assert code == 0
    events = child.poll()
    assert [e["event"] for e in events] == ["done"]
    lines = child.log_lines()
    assert sum(line.startswith("filler line") for line in lines) >= 3000  # reading went on after bad bytes
    assert any("filler line 3999" in line for line in lines)


def test_read_lines_goes_on_after_a_chunk_it_cannot_decode():
    """A text stream in a code page raises UnicodeDecodeError: the reader drops that chunk and reads on."""
    read, write = os.pipe()

    def feed():
        with os.fdopen(write, "wb") as sink:
            sink.write(b"first \x81\n")
            sink.flush()
            time.sleep(0.3)  # a later chunk: it decodes again
            sink.write(b"after the bad bytes\n")

    writer = threading.Thread(target=feed)
    writer.start()
    seen = []
    with open(read, encoding="cp1252", buffering=1) as stream:
        read_lines(stream, seen.append)  # returns at end of file instead of raising
    writer.join()
    assert seen[-1:] == ["after the bad bytes"], seen


_STUBBORN_CHILD = (
    "import signal, sys, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    f"print('{EVENT_PREFIX}' + '{{\"event\": \"start\"}}', flush=True)\n"
    "time.sleep(120)\n"
)


def test_cancel_returns_at_once_and_poll_kills_a_child_that_ignores_sigterm(tmp_path):
    child = ChildProcess([sys.executable, "-c", _STUBBORN_CHILD], tmp_path).start()
    deadline = time.monotonic() + 60
    while not any(e["event"] == "start" for e in child.poll()):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    started = time.perf_counter()
    child.cancel(grace_seconds=0.5)
    assert time.perf_counter() - started < 0.2  # the GUI thread is never held
    assert child.cancelled
    deadline = time.monotonic() + 20
    while child.running:
        child.poll()  # the panel's timer: escalates to a kill after the grace period
        assert time.monotonic() < deadline, "the child survived cancel"
        time.sleep(0.05)


def test_cancel_reaches_the_worker_behind_a_launcher_without_psutil(checkpoint, tmp_path, monkeypatch):
    """launchConsoleProcess gives no process group; without psutil the worker's own pid (hello event) is used."""
    import TSCDenoiseLib.mrml.background as background

    monkeypatch.setattr(background, "_psutil", lambda: None)  # as where psutil is not installed
    launcher = tmp_path / "launcher.sh"
    launcher.write_text(f'#!/bin/sh\n"{sys.executable}" "$@"\nexit $?\n')
    launcher.chmod(launcher.stat().st_mode | stat.S_IEXEC)

    def launch_same_session(command, env_updates, cwd):
        env = dict(os.environ)
        env.update(env_updates)
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=cwd)

    process = DenoiseProcess(_ct((400, 128, 128)), checkpoint, device="cpu", slab_size=1,
                             python_executable=str(launcher), work_dir=tmp_path).start(launch_same_session)
    deadline = time.monotonic() + 120
    while not any(e["event"] == "progress" for e in process.poll()):
        assert process.running and time.monotonic() < deadline
        time.sleep(0.02)
    worker = process.worker_pid
    assert worker and worker != process.process.pid
    tree = [psutil.Process(process.process.pid), psutil.Process(worker)]
    process.cancel()
    gone, alive = psutil.wait_procs(tree, timeout=10)
    # The worker, orphaned when its launcher dies first, has exited but may wait as a zombie for an init
    # that does not reap (as in some containers): it runs no more.
    alive = [p for p in alive if _still_running(p)]
    assert not alive, f"still running after cancel: {alive}"
    with pytest.raises(TSCDenoiseError, match="cancelled"):
        process.result()


def _still_running(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_failed_start_leaves_no_temporary_input(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(OSError):
        DenoiseProcess(_ct((2, 16, 16)), python_executable=str(tmp_path / "no-such-python"), work_dir=work).start()
    assert list(work.iterdir()) == []


# --- the standby worker: started ahead of the run, torch already imported, one job ---------------------------

from pathlib import Path  # noqa: E402

from TSCDenoiseLib.mrml.background import StandbyWorker, start_denoise_process  # noqa: E402
from TSCDenoiseLib.mrml.background import worker_environment as background_environment  # noqa: E402
from TSCDenoiseLib.mrml.worker import CLOSED_SUFFIX  # noqa: E402


def _until(condition, timeout=120.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _ready_standby(work_dir, **options):
    standby = StandbyWorker(work_dir=work_dir, **options).start()
    _until(lambda: standby.ready is not None or not standby.running, what="the standby's ready event")
    assert standby.ready is not None, f"the standby did not get ready: {list(standby.stderr_tail)}"
    return standby


def _maps_torch(pid: int) -> bool:
    """Whether torch's shared library is mapped in `pid` (read from the OS, not from the worker's own report)."""
    return any("libtorch" in Path(m.path).name for m in psutil.Process(pid).memory_maps())


def test_a_standby_job_gives_the_fresh_workers_array_and_events(tiny_net, checkpoint, tmp_path):
    volume = _ct((6, 32, 40))
    fresh = DenoiseProcess(volume, checkpoint, device="cpu", slab_size=2, work_dir=tmp_path).start()
    fresh_events = _run_to_end(fresh)
    expected = fresh.result()
    fresh.cleanup()

    standby = _ready_standby(tmp_path)
    process = start_denoise_process(volume, standby=standby, model_path=checkpoint, device="cpu", slab_size=2,
                                    work_dir=tmp_path)
    assert process is standby and standby.submitted
    events = _run_to_end(process)
    result = process.result()
    np.testing.assert_array_equal(result, expected)
    np.testing.assert_array_equal(result, denoise_volume(volume, tiny_net, device="cpu", slab_size=2))
    assert result.dtype == np.int16
    strip = lambda evs: [{k: v for k, v in e.items() if k not in ("seconds", "slices_per_second")} for e in evs]
    assert strip(events) == strip(fresh_events)  # the same events: start, progress 2/4/6, done
    assert process.wait() == 0
    process.cleanup()
    assert list(tmp_path.iterdir()) == [checkpoint]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the worker's memory maps (Linux)")
def test_a_standby_has_torch_loaded_before_its_job_is_submitted(checkpoint, tmp_path):
    """What removes the fixed cost from the user's wait: torch is in the standby before the job exists."""
    standby = _ready_standby(tmp_path)
    assert "torch" in standby.ready["imported"]
    assert _maps_torch(standby.worker_pid)  # checked from outside, before the job is written
    assert not any(p.name == "input.npy" for p in standby.folder.iterdir())
    assert standby.submit(_ct((2, 16, 16)), checkpoint, device="cpu")
    assert standby.ready_at_submit
    events = _run_to_end(standby)
    assert standby.accepted["torch_preloaded"] is True and events[-1]["event"] == "done"
    assert standby.result().shape == (2, 16, 16)
    standby.cleanup()


def test_cancel_of_a_standby_job_kills_the_tree_and_leaves_no_output_or_folder(checkpoint, tmp_path):
    launcher = tmp_path / "launcher.sh"  # stays alive as the worker's parent, as PythonSlicer's launcher does
    launcher.write_text(f'#!/bin/sh\n"{sys.executable}" "$@"\nstatus=$?\nexit $status\n')
    launcher.chmod(launcher.stat().st_mode | stat.S_IEXEC)
    work = tmp_path / "work"
    work.mkdir()
    standby = _ready_standby(work, python_executable=str(launcher))
    process = start_denoise_process(_ct((400, 128, 128)), standby=standby, model_path=checkpoint, device="cpu",
                                    slab_size=1, python_executable=str(launcher), work_dir=work)
    assert process is standby
    _until(lambda: any(e["event"] == "progress" for e in process.poll()) or not process.running,
           what="the first progress event")
    assert _cancel_kills_the_tree_and_leaves_no_output(process) < 0.2
    process.cleanup()
    assert list(work.iterdir()) == []


def test_an_idle_standby_exits_by_itself_removes_its_folder_and_the_run_falls_back(tiny_net, checkpoint, tmp_path):
    standby = _ready_standby(tmp_path, idle_seconds=0.5)
    assert standby.wait(timeout=60) == 0  # exits on its own
    assert standby.expired is not None and standby.expired["reason"] == "idle"
    assert not standby.folder.exists() and not any(CLOSED_SUFFIX in p.name for p in tmp_path.iterdir())
    assert not standby.accepts(work_dir=tmp_path)
    volume = _ct((3, 24, 24))
    process = start_denoise_process(volume, standby=standby, model_path=checkpoint, device="cpu", work_dir=tmp_path)
    assert process is not standby and not standby.submitted
    np.testing.assert_array_equal(process.result(), denoise_volume(volume, tiny_net, device="cpu"))
    process.cleanup()
    assert list(tmp_path.iterdir()) == [checkpoint]


def test_a_dead_or_foreign_standby_is_stopped_and_a_fresh_worker_runs(tiny_net, checkpoint, tmp_path):
    volume = _ct((2, 24, 24))
    dead = _ready_standby(tmp_path)
    dead.process.kill()  # e.g. killed by the system while idle
    dead.wait(timeout=30)
    other_python = StandbyWorker(python_executable=[sys.executable, "-X", "utf8"], work_dir=tmp_path).start()
    for standby in (dead, other_python):
        process = start_denoise_process(volume, standby=standby, model_path=checkpoint, device="cpu",
                                        work_dir=tmp_path)
        assert process is not standby and not standby.submitted
        np.testing.assert_array_equal(process.result(), denoise_volume(volume, tiny_net, device="cpu"))
        process.cleanup()
    other_python.wait(timeout=30)  # stopped: killed, and its folder removed
    assert list(tmp_path.iterdir()) == [checkpoint]


def test_a_standby_whose_folder_is_claimed_refuses_the_job(checkpoint, tmp_path):
    """The race with an ending standby: it claims its folder first, so the parent's exclusive claim fails."""
    standby = _ready_standby(tmp_path)
    (standby.folder / "claim").write_text("")  # what the standby's own ending writes first
    assert not standby.submit(_ct((2, 16, 16)), checkpoint, device="cpu")
    assert not standby.submitted and not (standby.folder / "input.npy").exists()
    standby.stop()
    standby.wait(timeout=30)
    assert list(tmp_path.iterdir()) == [checkpoint]


_PARENT_OF_A_STANDBY = (
    "import sys, time\n"
    "from TSCDenoiseLib.mrml.background import StandbyWorker\n"
    "standby = StandbyWorker(work_dir=sys.argv[1]).start()\n"
    "while standby.ready is None and standby.running: time.sleep(0.05)\n"
    "print(standby.worker_pid, standby.folder, flush=True)\n"
    "time.sleep(600)\n"
)


def test_a_standby_exits_and_removes_its_folder_when_its_parent_is_gone(tmp_path):
    parent = subprocess.Popen([sys.executable, "-c", _PARENT_OF_A_STANDBY, str(tmp_path)], stdout=subprocess.PIPE,
                              text=True)
    standby = None
    try:
        pid, folder = parent.stdout.readline().split(maxsplit=1)
        standby, folder = psutil.Process(int(pid)), Path(folder.strip())
        assert _still_running(standby) and folder.is_dir()
        parent.kill()  # Slicer crashed: no cleanup() ran
        parent.wait(timeout=30)
        _until(lambda: not _still_running(standby), timeout=30, what="the orphaned standby to exit")
        _until(lambda: not folder.exists(), timeout=10, what="the standby's folder to be removed")
        assert list(tmp_path.iterdir()) == []
    finally:
        if parent.poll() is None:
            parent.kill()
        if standby is not None and _still_running(standby):  # it failed to exit: do not leave it behind
            standby.kill()


def test_a_standby_under_slicers_launcher_takes_its_job_and_its_heartbeats_stay_out_of_the_log(
        tiny_net, checkpoint, tmp_path):
    """launchConsoleProcess (5.6-5.12): no stdin, text-mode stdout in a code page, stderr merged into it."""
    standby = StandbyWorker(work_dir=tmp_path).start(_launch_like_slicer("cp1252"))
    _until(lambda: standby.ready is not None or not standby.running, what="the standby's ready event")
    time.sleep(2.5)  # idle: at least two heartbeat lines go by
    assert standby.running and standby.log_lines() == [] and standby.poll() == []
    volume = _ct((3, 24, 24))
    assert start_denoise_process(volume, standby=standby, model_path=checkpoint, device="cpu",
                                 work_dir=tmp_path) is standby
    events = _run_to_end(standby)
    assert [e["event"] for e in events] == ["start", "progress", "done"]
    np.testing.assert_array_equal(standby.result(), denoise_volume(volume, tiny_net, device="cpu"))
    standby.cleanup()
    assert list(tmp_path.iterdir()) == [checkpoint]


def test_the_worker_needs_input_and_output_unless_it_is_a_standby(tmp_path):
    done = subprocess.run([sys.executable, "-m", "TSCDenoiseLib.mrml.worker", "--device", "cpu"], capture_output=True,
                          text=True, cwd=tmp_path, env=dict(os.environ, **background_environment()), timeout=60)
    assert done.returncode == 2 and "INPUT and OUTPUT are required (or --standby FOLDER)" in done.stderr


# --- strength: passed to fresh and standby workers ---------------------------------------------------------

from TSCDenoiseLib.mrml.worker import build_parser, worker_arguments  # noqa: E402


def test_worker_arguments_carry_the_strength_only_when_it_is_not_auto(tmp_path):
    plain = worker_arguments(tmp_path / "in.npy", tmp_path / "out.npy", device="cpu")
    assert "--strength" not in plain and build_parser().parse_args(plain).strength == "auto"
    assert build_parser().parse_args(plain + ["--strength", "AUTO"]).strength == "auto"
    assert worker_arguments(tmp_path / "in.npy", tmp_path / "out.npy", device="cpu", strength=" Auto") == plain
    one = worker_arguments(tmp_path / "in.npy", tmp_path / "out.npy", device="cpu", strength=1.0)
    assert one[one.index("--strength") + 1] == "1.0" and build_parser().parse_args(one).strength == 1.0
    arguments = worker_arguments(tmp_path / "in.npy", tmp_path / "out.npy", device="cpu", strength=0.55)
    assert arguments[arguments.index("--strength") + 1] == "0.55" and build_parser().parse_args(arguments).strength == 0.55


def test_fresh_and_standby_workers_denoise_with_the_strength(tiny_noise_map_net, tmp_path):
    checkpoint = save_model(tiny_noise_map_net, tmp_path / "noise_map.pt")
    volume = _ct((4, 32, 40))
    expected = denoise_volume(volume, tiny_noise_map_net, device="cpu", slab_size=2, strength=0.5)
    assert not np.array_equal(expected, denoise_volume(volume, tiny_noise_map_net, device="cpu", slab_size=2))

    fresh = DenoiseProcess(volume, checkpoint, device="cpu", slab_size=2, work_dir=tmp_path, strength=0.5).start()
    _run_to_end(fresh)
    np.testing.assert_array_equal(fresh.result(), expected)
    fresh.cleanup()

    standby = _ready_standby(tmp_path)
    process = start_denoise_process(volume, standby=standby, model_path=checkpoint, device="cpu", slab_size=2,
                                    work_dir=tmp_path, strength=0.5)
    assert process is standby
    _run_to_end(process)
    np.testing.assert_array_equal(process.result(), expected)
    process.cleanup()


def test_a_strength_the_model_cannot_use_is_the_engines_clear_message(checkpoint, tmp_path):
    process = DenoiseProcess(_ct((2, 16, 16)), checkpoint, device="cpu", work_dir=tmp_path, strength=0.5).start()
    with pytest.raises(InvalidInputError, match="no noise-map input; use the default model, or strength 'auto' or 1.0"):
        process.result()
    assert process.wait() == 2
    assert not process.output_path.exists()
    process.cleanup()
