"""Run the denoising worker in a child process and follow it without blocking (no Qt needed).

The caller (the Slicer module's timer, or any loop) calls `poll()` for new events, `cancel()` to stop
the whole process tree, and `result()` once the worker is done. Files go to a private temporary
folder that `cleanup()` removes.
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
from typing import Any, Deque, Dict, List, Optional, Sequence, Union

import numpy as np

from ..errors import EXIT_OK, DenoiseCancelled, TSCDenoiseError, exception_for_exit_code
from .worker import EVENT_PREFIX

_PACKAGE_PARENT = Path(__file__).resolve().parent.parent
Event = Dict[str, Any]


class DenoiseProcess:
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
    ) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="TSCDenoise-", dir=work_dir))
        self.input_path, self.output_path = self.folder / "input.npy", self.folder / "output.npy"
        self.model_path = model_path
        np.save(self.input_path, np.ascontiguousarray(volume), allow_pickle=False)
        python = python_executable or sys.executable
        command = [python] if isinstance(python, str) else list(python)
        command += ["-m", "TSCDenoiseLib.mrml.worker", str(self.input_path), str(self.output_path),
                    "--device", str(device), "--slab-size", str(slab_size)]
        if model_path is not None:
            command += ["--model", os.fspath(model_path)]
        if not amp:
            command.append("--no-amp")
        if not check_hu:
            command.append("--no-check-hu")
        self.command = command
        self.events: "queue.Queue[Event]" = queue.Queue()
        self.stderr_tail: Deque[str] = deque(maxlen=20)
        self.error: Optional[Event] = None
        self.process: Optional[subprocess.Popen] = None
        self.cancelled = False
        self._readers: List[threading.Thread] = []

    def start(self) -> "DenoiseProcess":
        """Start the child in its own process group (so cancel reaches its children too)."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_PACKAGE_PARENT), env.get("PYTHONPATH", "")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        group = {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP} if os.name == "nt" else {"start_new_session": True}
        self.process = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                        env=env, cwd=self.folder, **group)
        self._readers = [threading.Thread(target=reader, daemon=True) for reader in (self._read_events, self._read_stderr)]
        for reader in self._readers:
            reader.start()
        return self

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def poll(self) -> List[Event]:
        """Events that arrived since the last call (never blocks)."""
        events = []
        while True:
            try:
                events.append(self.events.get_nowait())
            except queue.Empty:
                return events

    def wait(self, timeout: Optional[float] = None) -> int:
        """Wait for the child to exit; returns its exit code."""
        return self.process.wait(timeout)

    def result(self) -> np.ndarray:
        """The denoised array; raises the worker's error (InvalidInputError for bad input) otherwise."""
        code = self.wait()
        for reader in self._readers:  # the last lines may still be in the pipes
            reader.join(timeout=10)
        if self.cancelled:
            raise DenoiseCancelled("Denoising was cancelled.")
        if code == EXIT_OK and self.output_path.is_file():
            return np.load(self.output_path, allow_pickle=False)
        if self.error is not None:
            raise exception_for_exit_code(code, self.error["message"])
        details = " | ".join(self.stderr_tail) or "no output"
        raise TSCDenoiseError(f"The denoising process stopped unexpectedly (exit code {code}): {details}")

    def cancel(self, grace_seconds: float = 3.0) -> None:
        """Stop the worker and every process it started; no output is kept."""
        if self.process is None or self.process.poll() is not None:
            return
        self.cancelled = True
        if os.name == "nt":
            subprocess.run(["taskkill", "/F", "/T", "/PID", str(self.process.pid)], capture_output=True)
        else:
            _terminate_group(self.process.pid, grace_seconds)
        self.process.wait()

    def cleanup(self) -> None:
        """Remove the temporary folder (input and output arrays)."""
        shutil.rmtree(self.folder, ignore_errors=True)

    def _read_events(self) -> None:
        for line in self.process.stdout:
            if not line.startswith(EVENT_PREFIX):
                continue
            try:
                event = json.loads(line[len(EVENT_PREFIX):])
            except json.JSONDecodeError:
                continue
            if event.get("event") == "error":
                self.error = event
            self.events.put(event)

    def _read_stderr(self) -> None:
        for line in self.process.stderr:
            if line.strip():
                self.stderr_tail.append(line.rstrip())


def _terminate_group(group_id: int, grace_seconds: float) -> None:
    """SIGTERM to every process of the group, SIGKILL to those still there after the grace period."""
    try:
        os.killpg(group_id, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline:
        try:
            os.killpg(group_id, 0)  # does any member still exist?
        except ProcessLookupError:
            return
        time.sleep(0.05)
    try:
        os.killpg(group_id, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
