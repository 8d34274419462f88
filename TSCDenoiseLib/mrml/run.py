"""One denoising run of a volume node in a worker process, followed without blocking (no Qt needed).

`NodeDenoiseRun` is what the Slicer module's logic owns: `start()` copies the input voxels to a private
temporary file and starts the worker; `poll()` (from a GUI timer, or any loop) turns the worker's
events into the callbacks `on_status(text)`, `on_progress(done, total, seconds_left)`, `on_log(line)`,
and, once the worker has exited, publishes the result into the output node (with the input's geometry,
and the difference volume when asked) and calls `on_finished(output_node, error)` exactly once.
`cancel()` returns at once; the next polls finish the run with `DenoiseCancelled`. The scene is only
changed when the whole result is there. Given a `standby` (a `StandbyWorker` started ahead of time, with
torch already imported), the run is handed to it; when it cannot take the run (ended, expired, another
Python), or exits before reading the job, the run starts a fresh worker exactly as without one.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Optional, Sequence, Union

from ..errors import DenoiseCancelled, TSCDenoiseError
from .background import DenoiseProcess, LaunchFn, StandbyWorker, start_denoise_process
from .nodes import check_output_node, create_difference_volume, describe_model, new_image_like, publish_output, \
    volume_voxels

StatusFn = Callable[[str], None]
ProgressFn = Callable[[int, int, Optional[float]], None]
FinishedFn = Callable[[Any, Optional[BaseException]], None]


class NodeDenoiseRun:
    """Denoise `input_node` into `output_node` (new when None) in a child process."""

    def __init__(
        self,
        input_node: Any,
        output_node: Any = None,
        model_path: Union[str, "os.PathLike[str]", None] = None,
        device: str = "auto",
        slab_size: Union[str, int] = "auto",
        amp: bool = True,
        create_difference: bool = False,
        adapt_seconds: float = 0.0,
        strength: Union[str, float] = "auto",
        python_executable: Union[str, Sequence[str], None] = None,
        work_dir: Union[str, "os.PathLike[str]", None] = None,
        launch: Optional[LaunchFn] = None,
        standby: Optional[StandbyWorker] = None,
        on_status: Optional[StatusFn] = None,
        on_progress: Optional[ProgressFn] = None,
        on_log: Optional[StatusFn] = None,
        on_finished: Optional[FinishedFn] = None,
    ) -> None:
        self.input_node, self.output_node = input_node, output_node
        self.options = dict(model_path=model_path, device=device, slab_size=slab_size, amp=amp,
                            python_executable=python_executable, work_dir=work_dir, adapt_seconds=adapt_seconds,
                            strength=strength)
        self.create_difference = create_difference
        self.launch = launch
        self.standby = standby  # used up by start() once the nodes pass its checks: it takes the run, or is stopped
        self.used_standby = False  # whether the worker that ran the job was the standby
        self.on_status, self.on_progress, self.on_log, self.on_finished = on_status, on_progress, on_log, on_finished
        self.process: Optional[DenoiseProcess] = None
        self.difference_node: Any = None
        self.error: Optional[BaseException] = None
        self.finished = False
        self.device_description: Optional[str] = None
        self.slices_per_second: Optional[float] = None
        self.started_at: Optional[float] = None
        self.seconds: Optional[float] = None
        self._compute_started_at: Optional[float] = None
        self.phase = "starting"  # then "adapting" (with adapt_seconds) and "denoising"
        self.adaptation: Optional[dict] = None  # the worker's "adapted" event: summary, used, gain_db, seconds
        self._adapt_started_at: Optional[float] = None

    def start(self) -> "NodeDenoiseRun":
        """Check the nodes and start the worker; raises (InvalidInputError, OSError) with nothing left behind."""
        voxels = volume_voxels(self.input_node)
        check_output_node(self.input_node, self.output_node)
        self.started_at = time.monotonic()
        standby, self.standby = self.standby, None
        self.process = start_denoise_process(voxels, standby=standby, launch=self.launch, spacing=self._spacing(),
                                             **self.options)
        self.used_standby = self.process is standby
        self._status("Loading the model...")
        return self

    def _spacing(self) -> Optional[tuple]:
        return tuple(self.input_node.GetSpacing()) if self.options["adapt_seconds"] else None

    def _standby_lost_the_job(self) -> bool:
        if not isinstance(self.process, StandbyWorker):
            return False
        self.process.wait()  # it has exited: join its readers, so an "accepted" still in the pipe is seen
        return self.process.lost_job

    def _restart_fresh(self) -> None:
        """The standby exited before reading the job: run it in a fresh worker, as without a standby."""
        lost = self.process
        for line in lost.log_lines():
            self._call(self.on_log, line)
        lost.cleanup()
        self._call(self.on_log, "worker: the standby worker ended before taking the job; starting a fresh one")
        self.used_standby = False
        self.process = DenoiseProcess(volume_voxels(self.input_node), spacing=self._spacing(),
                                      **self.options).start(self.launch)

    @property
    def running(self) -> bool:
        return self.process is not None and not self.finished

    def poll(self) -> bool:
        """Handle what the worker reported since the last call; True while the run is not finished."""
        if self.process is None or self.finished:
            return False
        exited = not self.process.running  # read before draining, so no event after it is missed
        if exited and self._standby_lost_the_job():
            try:
                self._restart_fresh()
            except (TSCDenoiseError, OSError, ValueError) as exc:
                self.error, self.finished = exc, True
                self.seconds = time.monotonic() - (self.started_at or time.monotonic())
                self._call(self.on_finished, None, exc)
                return False
            return True
        for line in self.process.log_lines():
            self._call(self.on_log, line)
        for event in self.process.poll():
            self._on_event(event)
        if exited:
            self._finish()
        return not self.finished

    def cancel(self) -> None:
        """Stop the worker and its children without waiting; the run finishes with DenoiseCancelled."""
        if self.running:
            self.process.cancel()
            self._status("Cancelling...")

    def wait(self, poll_seconds: float = 0.05, timeout: Optional[float] = None) -> Any:
        """Poll until finished (for scripts and tests); returns the output node or raises the run's error."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll():
            if deadline is not None and time.monotonic() > deadline:
                self.cancel()
                deadline = None
            time.sleep(poll_seconds)
        if self.error is not None:
            raise self.error
        return self.output_node

    def _on_event(self, event: dict) -> None:
        kind = event.get("event")
        if kind == "adapting":
            self.phase, self._adapt_started_at = "adapting", time.monotonic()
            self._status(f"Adapting the model to this scan (up to {event.get('budget_s', 0):g} s)...")
            self._call(self.on_log, f"worker: adapting the model to this scan, budget {event.get('budget_s', 0):g} s")
        elif kind == "adapted":
            self.adaptation = event
            self._status(event.get("summary", ""))
            self._call(self.on_log, event.get("summary", ""))
        elif kind == "progress" and event.get("phase") == "adapt":
            done, total = int(event["done"]), int(event["total"])
            elapsed = time.monotonic() - (self._adapt_started_at or time.monotonic())
            self._call(self.on_progress, done, total, elapsed / done * (total - done) if done else None)
        elif kind == "start":
            self.phase = "denoising"
            self.device_description = event.get("device")
            self._compute_started_at = time.monotonic()
            self._status(f"Denoising {event.get('slices')} slices on {event.get('device')}, "
                         f"{event.get('slab_size')} per pass")
            self._call(self.on_log, f"worker: {event.get('slices')} slices on {event.get('device')}, "
                                    f"slab {event.get('slab_size')}")
        elif kind == "progress":
            done, total = int(event["done"]), int(event["total"])
            self._call(self.on_progress, done, total, self._seconds_left(done, total))
        elif kind == "notice":
            self._status(event.get("message", ""))
            self._call(self.on_log, event.get("message", ""))
        elif kind == "done":
            self.slices_per_second = event.get("slices_per_second")
        elif kind == "error":
            self._call(self.on_log, "error: " + str(event.get("message", "")))

    def _seconds_left(self, done: int, total: int) -> Optional[float]:
        if not done or self._compute_started_at is None:
            return None
        elapsed = time.monotonic() - self._compute_started_at
        return elapsed / done * (total - done)

    def _finish(self) -> None:
        process = self.process
        process.wait()  # the child has exited: this joins the readers, so the last lines are in the queues
        for line in process.log_lines():
            self._call(self.on_log, line)
        for event in process.poll():
            self._on_event(event)
        try:
            result = process.result()
            check_output_node(self.input_node, self.output_node)
            image, voxels = new_image_like(self.input_node)
            voxels[...] = result
            self.output_node = publish_output(self.input_node, image, self.output_node,
                                              model_description=describe_model(process.model_path))
            if self.create_difference:
                self.difference_node = create_difference_volume(self.input_node, self.output_node)
        except DenoiseCancelled as exc:
            self.error = exc
        except (TSCDenoiseError, OSError, ValueError) as exc:
            self.error = exc
        finally:
            process.cleanup()
            self.finished = True
            self.seconds = time.monotonic() - (self.started_at or time.monotonic())
        self._call(self.on_finished, None if self.error else self.output_node, self.error)

    def _status(self, text: str) -> None:
        self._call(self.on_status, text)

    @staticmethod
    def _call(callback: Optional[Callable], *args: Any) -> None:
        if callback is not None:
            callback(*args)
