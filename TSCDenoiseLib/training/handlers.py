"""Ignite/MONAI event handlers for training: best-model checkpoints in the engine's format, a JSONL log."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
from ignite.engine import Engine, Events
from torch import nn

from ..core.atomic import atomic_output_file
from ..core.checkpoint import read_checkpoint, save_model
from .engines import loss_terms_output
from ..core.intensity import HUWindow
from ..errors import CheckpointError


class BestModelSaver:
    """Attach to an evaluator: whenever its key metric improves, write `network` with `save_model`.

    Unlike MONAI's ``CheckpointSaver`` (which saves the whole training state for resuming), this writes
    the deployable one-file checkpoint (weights, config, HU window, role) that ``load_model`` reads,
    and records the metric, epoch and `metadata` (a dict, and/or keyword arguments) in it (and, given the
    stage's `run` record, the teacher a student trained against; given the trainer's `iterations_per_epoch`,
    the training iterations up to that epoch). Under DDP only rank 0 writes.

    A `resumed` run starts from the best that the file at `path` records for an epoch before the one it
    resumes at, so an interruption never lets a worse epoch replace it; a file from later epochs (an
    abandoned earlier try) or of another metric is replaced at the first validation, as in a fresh run.
    """

    def __init__(
        self,
        network: nn.Module,
        path: str | Path,
        role: str,
        hu_window: HUWindow | Sequence[float] | None = None,
        higher_is_better: bool = True,
        run: Any = None,
        metadata: Optional[dict] = None,
        iterations_per_epoch: Optional[int] = None,
        resumed: bool = False,
        **more_metadata: Any,
    ) -> None:
        self.network = network
        self.run = run
        self.path = Path(path)
        self.role = role
        self.hu_window = HUWindow.from_any(hu_window)
        self.higher_is_better = higher_is_better
        self.iterations_per_epoch = iterations_per_epoch
        self.metadata = {**(metadata or {}), **more_metadata}
        self.best: Optional[float] = None
        self.resumed = resumed
        self._checked_earlier_best = False

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_rank() != 0:
            return  # every rank holds the same weights under DDP; rank 0 alone writes them
        name = engine.state.key_metric_name
        value = float(engine.state.metrics[name])
        if not self._checked_earlier_best:
            self._checked_earlier_best = True
            if self.resumed:
                self.best = self._earlier_best(name, engine.state.epoch)
        if math.isnan(value):
            return
        improved = self.best is None or (value > self.best if self.higher_is_better else value < self.best)
        if not improved:
            return
        self.best = value
        self.path.parent.mkdir(parents=True, exist_ok=True)
        run_metadata = self.run.metadata() if self.run is not None else {}
        save_model(self.network, self.path, role=self.role, hu_window=self.hu_window, overwrite=True,
                   **self.metadata, **run_metadata, best_metric=name, best_metric_value=round(value, 4),
                   epoch=engine.state.epoch, **self._iterations(engine.state.epoch))

    def _earlier_best(self, name: str, epoch: int) -> Optional[float]:
        """The metric value the file at `path` records, if it was written before `epoch` for metric `name`."""
        if not self.path.is_file():
            return None
        try:
            recorded = read_checkpoint(self.path).get("metadata", {})
        except CheckpointError:  # unreadable: nothing to keep, the first validation replaces it
            return None
        if recorded.get("best_metric") != name or int(recorded.get("epoch", epoch)) >= epoch:
            return None
        value = recorded.get("best_metric_value")
        return float(value) if isinstance(value, (int, float)) else None

    def _iterations(self, epoch: int) -> dict:
        # The evaluator counts its own iterations; the trainer's, at the end of `epoch`, follow from the epoch length.
        return {} if self.iterations_per_epoch is None else {"iterations": epoch * self.iterations_per_epoch}


class TrainingLog:
    """Attach to a trainer: append JSON lines with the loss terms every `interval` iterations, and at
    each epoch's end the learning rate, the validator's latest metrics (if one is given) and a
    parameter checksum (equal on every rank under DDP).

    A fresh run starts a fresh log; a run resumed from a training state keeps the records up to the
    resumed iteration and appends after them.
    """

    def __init__(
        self,
        path: str | Path,
        network: nn.Module,
        optimizer: Optional[torch.optim.Optimizer] = None,
        interval: int = 10,
        output_transform: Optional[Callable] = None,
        validator: Optional[Engine] = None,
    ) -> None:
        self.path = Path(path)
        self.network = network
        self.optimizer = optimizer
        self.validator = validator
        self.interval = max(1, int(interval))
        self.output_transform = output_transform
        self._started = time.perf_counter()

    def attach(self, engine: Engine) -> None:
        # The log is opened at the first iteration, not here: a resumed run knows its starting iteration only
        # after the checkpoint loader has run, and a start that fails before training must not touch the log.
        self._opened = False
        engine.add_event_handler(Events.ITERATION_STARTED, self.open_log)
        engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.interval), self.log_iteration)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.log_epoch)

    def open_log(self, engine: Engine) -> None:
        """At the run's first iteration: keep the records from before it (a resumed run appends to its log;
        a fresh run, starting at iteration 1, keeps none), drop any written after that point by an earlier try."""
        if self._opened:
            return
        self._opened = True
        first = engine.state.iteration  # already counted: 1 for a fresh run, resumed + 1 after a resume
        kept = [line for line in self._read_lines() if json.loads(line).get("iteration", 0) < first]
        with atomic_output_file(self.path, overwrite=True, suffix=".jsonl") as tmp:
            tmp.write_text("".join(line + "\n" for line in kept))

    def _read_lines(self) -> list:
        if not self.path.is_file():
            return []
        lines = []
        for line in self.path.read_text().splitlines():
            try:
                json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a killed run
            lines.append(line)
        return lines

    def _append(self, record: dict) -> None:
        record["seconds"] = round(time.perf_counter() - self._started, 2)
        with self.path.open("a") as log:
            log.write(json.dumps(record) + "\n")

    def log_iteration(self, engine: Engine) -> None:
        terms = (self.output_transform or loss_terms_output)(engine.state.output)
        self._append({"epoch": engine.state.epoch, "iteration": engine.state.iteration, **terms})

    def log_epoch(self, engine: Engine) -> None:
        with torch.no_grad():
            checksum = float(sum(p.double().sum() for p in self.network.parameters()))
        record = {"epoch": engine.state.epoch, "iteration": engine.state.iteration, "parameter_sum": checksum}
        if self.optimizer is not None:
            record["lr"] = self.optimizer.param_groups[0]["lr"]
        if self.validator is not None and self.validator.state.epoch == engine.state.epoch:
            record.update({name: float(value) for name, value in self.validator.state.metrics.items()})
        self._append(record)
