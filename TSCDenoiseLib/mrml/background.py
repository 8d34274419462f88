"""Run the denoising worker in a child process and follow it without blocking (no Qt needed).

The caller (the Slicer module's timer, or any loop) calls `poll()` for new events, `cancel()` to stop
the whole process tree, and `result()` once the worker is done. Files go to a private temporary
folder that `cleanup()` removes.

The child is started by a `launch(command, env_updates, cwd)` function: inside Slicer, one that calls
``slicer.util.launchConsoleProcess`` (it hides the console window on Windows and merges stderr into
stdout); elsewhere `popen_hidden`, which does the same with ``subprocess`` directly. The output readers
read the pipes' bytes and decode them with replacement, and never stop on undecodable bytes (a Windows
code page), so the pipe is always drained, progress never stalls and no event is lost. Cancel never blocks: it terminates the process tree (psutil where installed, as
SlicerMONAIAuto3DSeg does; else the launcher and the worker's own pid) and `poll()` escalates to a
kill after a grace period.

A fresh worker spends most of its fixed cost (~1.5 s) importing torch before its first slice.
`StandbyWorker` moves that out of the user's wait: started ahead of a run, it imports torch and the
engine, then waits for ONE job in its private folder (a file handshake: ``launchConsoleProcess`` gives
the child no stdin) and from then on is that job's `DenoiseProcess` in every respect: same events, same
cancel of the whole tree, same atomic output, one job per process. `start_denoise_process` hands a run
to a standby when one is alive, idle and started with the same Python, and else starts a fresh worker.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from typing import IO, Any, Callable, Deque, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np

from ..errors import EXIT_OK, DenoiseCancelled, TSCDenoiseError, exception_for_exit_code
from .worker import CLAIM_FILE, CLOSED_SUFFIX, EVENT_PREFIX, JOB_FILE, worker_arguments

_PACKAGE_PARENT = Path(__file__).resolve().parent.parent
Event = Dict[str, Any]
# launch(command, env_updates, cwd) -> a started Popen whose stdout (and stderr, unless merged) are pipes
LaunchFn = Callable[[List[str], Mapping[str, str], str], subprocess.Popen]
CANCEL_GRACE_SECONDS = 3.0
WORKER_MODULE = "TSCDenoiseLib.mrml.worker"
STANDBY_IDLE_SECONDS = 600.0  # a standby nobody uses exits by itself after this long
PythonCommand = Union[str, Sequence[str], None]


def python_command(python_executable: PythonCommand = None) -> List[str]:
    """The command prefix that runs Python: `python_executable` (a path, or a list such as a launcher's) or ours."""
    python = python_executable or sys.executable
    return [python] if isinstance(python, str) else list(python)


def worker_environment() -> Dict[str, str]:
    """Variables the child needs on top of the parent's: TSCDenoiseLib importable, unbuffered UTF-8 output."""
    python_path = os.pathsep.join(p for p in (str(_PACKAGE_PARENT), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": python_path, "PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8"}


def popen_hidden(command: List[str], env_updates: Mapping[str, str], cwd: str) -> subprocess.Popen:
    """Start `command` as slicer.util.launchConsoleProcess does (no console window on Windows), binary pipes.

    On POSIX the child gets its own session, so cancel can signal the whole group even without psutil.
    """
    env = dict(os.environ)
    env.update(env_updates)
    options: Dict[str, Any] = {}
    if os.name == "nt":
        info = subprocess.STARTUPINFO()
        info.dwFlags |= subprocess.STARTF_USESHOWWINDOW
        info.wShowWindow = 0  # SW_HIDE
        options["startupinfo"] = info
    else:
        options["start_new_session"] = True
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=cwd, **options)


def read_lines(stream: IO, on_line: Callable[[str], None]) -> None:
    """Call `on_line` for each line of `stream` (text or binary) until it closes; never stops on bad bytes.

    Binary lines are decoded as UTF-8 with replacement. A text stream opened with the locale's code page
    (as launchConsoleProcess does) raises UnicodeDecodeError on bytes it cannot map: that chunk is
    dropped and reading goes on, so the child never blocks on a full pipe.
    """
    while True:
        try:
            line = stream.readline()
        except UnicodeDecodeError:
            continue
        except (OSError, ValueError):  # closed under us
            return
        if not line:
            return
        if isinstance(line, bytes):
            line = line.decode("utf-8", errors="replace")
        on_line(line.rstrip("\r\n"))


def parse_event(line: str) -> Optional[Event]:
    """The JSON event carried by a worker output line, or None for any other line."""
    if not line.startswith(EVENT_PREFIX):
        return None
    try:
        event = json.loads(line[len(EVENT_PREFIX):])
    except json.JSONDecodeError:
        return None
    return event if isinstance(event, dict) and "event" in event else None


class ChildProcess:
    """A child Python process that reports JSON events on stdout, followed without blocking."""

    def __init__(self, command: List[str], cwd: Union[str, os.PathLike]) -> None:
        self.command = command
        self.cwd = str(cwd)
        self.events: "queue.Queue[Event]" = queue.Queue()
        self.log: "queue.Queue[str]" = queue.Queue()  # every non-event line, for a log box
        self.stderr_tail: Deque[str] = deque(maxlen=20)
        self.error: Optional[Event] = None
        self.process: Optional[subprocess.Popen] = None
        self.worker_pid: Optional[int] = None
        self.cancelled = False
        self._kill_deadline: Optional[float] = None
        self._own_group = False
        self._readers: List[threading.Thread] = []

    def start(self, launch: Optional[LaunchFn] = None) -> "ChildProcess":
        """Start the child with `launch` (default `popen_hidden`) and the threads that read its output."""
        self.process = (launch or popen_hidden)(self.command, worker_environment(), self.cwd)
        self._own_group = launch is None and os.name != "nt"  # popen_hidden made it a session leader
        # Read the bytes under a text-mode pipe (launchConsoleProcess opens it in the locale's code page):
        # a line it cannot decode would otherwise drop its whole buffered chunk, events included.
        streams = [getattr(s, "buffer", s) for s in (self.process.stdout, self.process.stderr) if s is not None]
        handlers = [self._on_stdout_line, self._on_stderr_line]
        self._readers = [threading.Thread(target=read_lines, args=(stream, handler), daemon=True)
                         for stream, handler in zip(streams, handlers)]
        for reader in self._readers:
            reader.start()
        return self

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def poll(self) -> List[Event]:
        """Events that arrived since the last call (never blocks); finishes a cancel that takes too long."""
        if self._kill_deadline is not None and time.monotonic() > self._kill_deadline and self.running:
            self._kill_deadline = None
            _signal_tree(self._tree_pids(), kill=True, group=self.process.pid if self._own_group else None)
        events = []
        while True:
            try:
                events.append(self.events.get_nowait())
            except queue.Empty:
                return events

    def log_lines(self) -> List[str]:
        """Output lines that are not events, since the last call (never blocks)."""
        lines = []
        while True:
            try:
                lines.append(self.log.get_nowait())
            except queue.Empty:
                return lines

    def wait(self, timeout: Optional[float] = None) -> int:
        """Wait for the child to exit, then for its output to be read; returns its exit code."""
        code = self.process.wait(timeout)
        for reader in self._readers:  # the last lines may still be in the pipes
            reader.join(timeout=10)
        return code

    def cancel(self, grace_seconds: float = CANCEL_GRACE_SECONDS) -> None:
        """Ask the child and every process it started to stop; returns at once (`poll()` kills stragglers)."""
        if self.process is None or self.process.poll() is not None:
            return
        if self.cancelled:  # asked twice: do not wait for the grace period
            _signal_tree(self._tree_pids(), kill=True, group=self.process.pid if self._own_group else None)
            return
        self.cancelled = True
        _signal_tree(self._tree_pids(), kill=False, group=self.process.pid if self._own_group else None)
        self._kill_deadline = time.monotonic() + grace_seconds

    def _tree_pids(self) -> List[int]:
        """The launcher, the worker and their descendants (descendants only where psutil is installed)."""
        pids = [self.process.pid] + ([self.worker_pid] if self.worker_pid else [])
        psutil = _psutil()
        if psutil is None:
            return pids
        for pid in list(pids):
            try:
                pids += [child.pid for child in psutil.Process(pid).children(recursive=True)]
            except psutil.Error:
                pass
        return list(dict.fromkeys(pids))

    def _on_stdout_line(self, line: str) -> None:
        event = parse_event(line)
        if event is None:
            if line.strip():
                self.stderr_tail.append(line)  # stderr merged into stdout (launchConsoleProcess)
                self.log.put(line)
            return
        if event["event"] == "hello":
            self.worker_pid = event.get("pid")
            return
        if event["event"] == "error":
            self.error = event
        self.events.put(event)

    def _on_stderr_line(self, line: str) -> None:
        if line.strip():
            self.stderr_tail.append(line)
            self.log.put(line)


class DenoiseProcess(ChildProcess):
    """One denoising run of `volume` (HU, (Z, Y, X)) in a child Python process."""

    def __init__(
        self,
        volume: np.ndarray,
        model_path: Union[str, os.PathLike, None] = None,
        device: str = "auto",
        slab_size: Union[str, int] = "auto",
        amp: bool = True,
        check_hu: bool = True,
        python_executable: Union[str, Sequence[str], None] = None,
        work_dir: Union[str, os.PathLike, None] = None,
        adapt_seconds: float = 0.0,
        spacing: Optional[Sequence[float]] = None,
        strength: Union[str, float] = "auto",
    ) -> None:
        folder = self._make_folder(work_dir)
        self.model_path = model_path
        try:
            self._save_input(volume)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)  # e.g. a full disk: leave no partial input behind
            raise
        arguments = worker_arguments(self.input_path, self.output_path, model_path, device, slab_size, amp, check_hu,
                                     adapt_seconds, spacing, strength)
        super().__init__(python_command(python_executable) + ["-m", WORKER_MODULE] + arguments, folder)

    def _make_folder(self, work_dir: Union[str, os.PathLike, None]) -> Path:
        self.folder = Path(tempfile.mkdtemp(prefix="TSCDenoise-", dir=work_dir))
        self.input_path, self.output_path = self.folder / "input.npy", self.folder / "output.npy"
        return self.folder

    def _save_input(self, volume: np.ndarray) -> None:
        np.save(self.input_path, np.ascontiguousarray(volume), allow_pickle=False)

    def start(self, launch: Optional[LaunchFn] = None) -> "DenoiseProcess":
        """Start the worker; on failure (e.g. no Python executable) the temporary folder is removed."""
        try:
            super().start(launch)
        except BaseException:
            self.cleanup()
            raise
        return self

    def result(self) -> np.ndarray:
        """The denoised array; raises the worker's error (InvalidInputError for bad input) otherwise."""
        if self.cancelled and self.running:
            try:
                self.process.wait(CANCEL_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                self._kill_deadline = None
                _signal_tree(self._tree_pids(), kill=True, group=self.process.pid if self._own_group else None)
        code = self.wait()
        if self.cancelled:
            raise DenoiseCancelled("Denoising was cancelled; nothing was written.")
        if code == EXIT_OK and self.output_path.is_file():
            return np.load(self.output_path, allow_pickle=False)
        if self.error is not None:
            raise exception_for_exit_code(code, self.error["message"])
        details = " | ".join(self.stderr_tail) or "no output"
        raise TSCDenoiseError(f"The denoising process stopped unexpectedly (exit code {code}): {details}")

    def cleanup(self) -> None:
        """Remove the temporary folder (input and output arrays)."""
        shutil.rmtree(self.folder, ignore_errors=True)


class StandbyWorker(DenoiseProcess):
    """A worker started before its job: it imports torch and the engine, then runs the ONE job `submit` gives it.

    Until `submit`, it waits in its private folder and exits by itself (removing the folder) after
    `idle_seconds` without a job, when this process is gone, or when `stop()` removes the folder. After a
    successful `submit` it is that job's `DenoiseProcess`: `poll`, `cancel`, `result` and `cleanup` as for
    a fresh worker. `ready` holds its ``ready`` event (what it imported) once the imports are done;
    `accepted` its ``accepted`` event once it has read the job.
    """

    def __init__(
        self,
        python_executable: PythonCommand = None,
        work_dir: Union[str, os.PathLike, None] = None,
        idle_seconds: float = STANDBY_IDLE_SECONDS,
    ) -> None:
        folder = self._make_folder(work_dir)
        self.model_path = None
        self.python = python_command(python_executable)
        self.idle_seconds = float(idle_seconds)
        self.ready: Optional[Event] = None
        self.accepted: Optional[Event] = None
        self.expired: Optional[Event] = None
        self.submitted = False
        self.ready_at_submit = False
        command = self.python + ["-m", WORKER_MODULE, "--standby", str(folder), "--idle-seconds",
                                 repr(self.idle_seconds), "--parent-pid", str(os.getpid())]
        # Not in its own folder: the standby renames and removes that folder when it ends without a job.
        ChildProcess.__init__(self, command, folder.parent)

    def accepts(self, python_executable: PythonCommand = None, work_dir: Union[str, os.PathLike, None] = None) -> bool:
        """Whether this standby can take a job now: alive, not yet used, same Python and temporary folder."""
        wanted_dir = Path(work_dir if work_dir is not None else tempfile.gettempdir()).resolve()
        return (not self.submitted and self.expired is None and self.running and self.folder.is_dir()
                and self.python == python_command(python_executable) and self.folder.parent.resolve() == wanted_dir)

    def submit(self, volume: np.ndarray, model_path: Union[str, os.PathLike, None] = None, **job: Any) -> bool:
        """Hand the standby its one job (DenoiseProcess's arguments); False when it can no longer take one.

        Args:
            volume: the HU array (Z, Y, X).
            model_path: the checkpoint (None: the bundled default).
            **job: `worker_arguments`' other options (device, slab_size, amp, check_hu, adapt_seconds, spacing,
                strength), as DenoiseProcess takes them.

        Returns:
            True when the job is handed over (from now on this object follows it), False when the standby
            has ended or is ending (its folder is then left to `stop()`): start a fresh worker instead.

        Raises:
            OSError: the input could not be written (e.g. a full disk); the standby is stopped, its folder removed.
            RuntimeError: a job was already submitted (one job per process).
        """
        if self.submitted:
            raise RuntimeError("This standby worker already has its job; start a new one.")
        if not self.running or self.expired is not None:
            return False
        try:  # exclusive: a standby that is ending claims the folder first, and then never runs a job
            os.close(os.open(self.folder / CLAIM_FILE, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except OSError:
            return False
        self.submitted, self.ready_at_submit = True, self.ready is not None
        self.model_path = model_path
        try:
            self._save_input(volume)
            arguments = worker_arguments(self.input_path, self.output_path, model_path, **job)
            staging = self.folder / (JOB_FILE + ".tmp")
            staging.write_text(json.dumps({"argv": arguments}), encoding="utf-8")
            os.replace(staging, self.folder / JOB_FILE)  # the standby sees the whole job or none of it
        except BaseException:
            self.stop()
            raise
        return True

    @property
    def lost_job(self) -> bool:
        """True when the standby exited after `submit` without taking the job (not cancelled): run it afresh."""
        return self.submitted and self.accepted is None and not self.cancelled and not self.running

    def stop(self) -> None:
        """End the standby (its whole tree, at once) and remove its folder; never blocks."""
        if self.running:
            _signal_tree(self._tree_pids(), kill=True, group=self.process.pid if self._own_group else None)
        self.cleanup()

    def cleanup(self) -> None:
        """Remove the temporary folder, and the one a standby that ended by itself may have left mid-removal."""
        super().cleanup()
        shutil.rmtree(self.folder.with_name(self.folder.name + CLOSED_SUFFIX), ignore_errors=True)

    def _on_stdout_line(self, line: str) -> None:
        event = parse_event(line)
        kind = event["event"] if event is not None else None
        if kind in ("ready", "accepted", "expired"):  # the standby's own life, not the job's events
            setattr(self, kind, event)
            return
        super()._on_stdout_line(line)


def start_denoise_process(
    volume: np.ndarray,
    standby: Optional[StandbyWorker] = None,
    launch: Optional[LaunchFn] = None,
    python_executable: PythonCommand = None,
    work_dir: Union[str, os.PathLike, None] = None,
    **job: Any,
) -> DenoiseProcess:
    """A started run of `volume`: on `standby` when it accepts the job, else in a fresh worker as before.

    Args:
        volume: the HU array (Z, Y, X).
        standby: a StandbyWorker, used up either way: it takes this job, or it is stopped and removed.
        launch: how a fresh worker is started (default `popen_hidden`).
        python_executable, work_dir: as DenoiseProcess; a standby started otherwise is not used.
        **job: DenoiseProcess's other arguments (model_path, device, slab_size, amp, check_hu, adapt_seconds, spacing,
            strength).

    Returns:
        The DenoiseProcess following the run (the standby itself when it took the job).

    Raises:
        OSError: the input could not be written or the worker could not start; nothing is left behind.
    """
    if standby is not None:
        if standby.accepts(python_executable, work_dir) and standby.submit(volume, **job):
            return standby
        standby.stop()
    return DenoiseProcess(volume, python_executable=python_executable, work_dir=work_dir, **job).start(launch)


def _psutil() -> Any:
    """The psutil module, or None where it is not installed (Slicer does not ship it; requirements.txt adds it)."""
    try:
        import psutil
    except ImportError:
        return None
    return psutil


def _signal_tree(pids: List[int], kill: bool, group: Optional[int] = None) -> None:
    """SIGTERM (or SIGKILL) to each pid, and to the process group `group` on POSIX; gone ones are skipped.

    On Windows both are TerminateProcess (os.kill), which opens no console window (taskkill would).
    """
    sig = signal.SIGKILL if (kill and os.name != "nt") else signal.SIGTERM
    if group is not None:
        try:
            os.killpg(group, sig)
        except (ProcessLookupError, PermissionError, OSError):
            pass
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError, OSError):
            pass
