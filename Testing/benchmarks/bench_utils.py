"""Timing and memory helpers shared by the benchmark scripts (not a test module)."""

from __future__ import annotations

import statistics
import threading
import time
from typing import Callable, Dict, List, Optional

import psutil
import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_times(candidates: Dict[str, Callable[[], object]], repeats: int, device: torch.device,
                      setups: Optional[Dict[str, Callable[[], object]]] = None) -> Dict[str, List[float]]:
    """Wall times of each candidate, run alternately (after one warm-up each) so that machine load hits all alike.

    `setups[name]`, where given, runs untimed before each call of candidate `name` (e.g. start a standby worker).
    """
    setups = setups or {}
    for name, fn in candidates.items():
        if name in setups:
            setups[name]()
        fn()
    times: Dict[str, List[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            if name in setups:
                setups[name]()
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return times


def interleaved_medians(candidates: Dict[str, Callable[[], object]], repeats: int, device: torch.device) -> Dict[str, float]:
    """Median of `interleaved_times` per candidate."""
    return {name: statistics.median(values) for name, values in interleaved_times(candidates, repeats, device).items()}


def interleaved_minima(candidates: Dict[str, Callable[[], object]], repeats: int, device: torch.device,
                       setups: Optional[Dict[str, Callable[[], object]]] = None) -> Dict[str, float]:
    """Minimum of `interleaved_times` per candidate: on a loaded machine, the run least disturbed by others."""
    return {name: min(values) for name, values in interleaved_times(candidates, repeats, device, setups).items()}


class PeakRSS:
    """Samples this process's resident memory in a thread; `.peak_increase` after the block, in bytes."""

    def __init__(self, interval: float = 0.002) -> None:
        self.interval = interval
        self.process = psutil.Process()
        self.peak_increase = 0

    def __enter__(self) -> "PeakRSS":
        self.baseline = self.process.memory_info().rss
        self._peak = self.baseline
        self._running = True
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while self._running:
            self._peak = max(self._peak, self.process.memory_info().rss)
            time.sleep(self.interval)

    def __exit__(self, *exc) -> None:
        self._running = False
        self._thread.join()
        self._peak = max(self._peak, self.process.memory_info().rss)
        self.peak_increase = self._peak - self.baseline
