"""What this installation can compute with, asked in a child process: ``python -m TSCDenoiseLib.mrml.probe``.

The Slicer panel never imports torch in Slicer's own process (that would freeze the GUI on first
entry, hold GPU memory the worker needs, and break the panel when torch is broken). It runs this
probe in the background instead, caches the answer and refreshes it after an install. One event line
(``info``) is printed: torch's version (or why it cannot be imported), the devices that exist (CPU,
each CUDA GPU with its name and free memory, Apple ``mps``) and, with ``--measure``, the measured
seconds per megapixel of one slice through the model on each device (after a warm-up), from which the
panel estimates a run's duration. Exit code 0 whenever the event was printed.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any, Dict, Iterable, List, Optional, Sequence, Union

from .worker import emit

MEASURE_SIZE = 256  # one 256 x 256 slice: a fraction of a second on a CPU, representative per pixel


def device_list(torch: Any) -> List[Dict[str, Any]]:
    """The devices torch can use here: cpu first, then each CUDA GPU (name, free/total GiB), then mps."""
    devices: List[Dict[str, Any]] = [{"id": "cpu", "name": "CPU"}]
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            entry: Dict[str, Any] = {"id": f"cuda:{index}", "name": torch.cuda.get_device_name(index)}
            try:
                free, total = torch.cuda.mem_get_info(index)
                entry.update(free_gib=round(free / 2**30, 1), total_gib=round(total / 2**30, 1))
            except RuntimeError:
                pass
            devices.append(entry)
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append({"id": "mps", "name": "Apple GPU (Metal)"})
    return devices


def engine_runs_on(device_id: str) -> Optional[str]:
    """None when TSCDenoiseLib's engine denoises a tiny volume on `device_id`, else the error it raised.

    Used for devices torch offers but the engine may not handle yet (Apple ``mps``): the panel lists a
    device only when a real run through ``denoise_volume`` works on it.
    """
    import numpy as np
    import torch

    from ..core.inference import denoise_volume
    from ..networks import TSCNet

    try:
        torch.manual_seed(0)
        tiny = TSCNet(base_channels=8, num_attention_blocks=1, num_dems=1, attention_reduction=4).eval()
        volume = np.full((1, 16, 16), 40.0, dtype=np.float32)
        denoise_volume(volume, tiny, device=device_id, slab_size=1, check_hu=False)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def measure(model_path: Optional[str], device_id: str) -> float:
    """Seconds per megapixel of one axial slice through the model on `device_id` (after one warm-up pass)."""
    import numpy as np

    from ..core.checkpoint import load_model
    from ..core.device import resolve_device
    from ..core.inference import denoise_volume

    device = resolve_device(device_id)
    model = load_model(model_path, device=device)
    rng = np.random.default_rng(0)
    slab = (rng.normal(40.0, 20.0, (1, MEASURE_SIZE, MEASURE_SIZE))).astype(np.float32)
    # strength 1.0: the time per slice of the network; "auto"'s one estimate per volume (0.2 s) is not per slice
    denoise_volume(slab, model, device=device, slab_size=1, strength=1.0)  # warm-up: kernels, allocator, autotuning
    started = time.perf_counter()
    denoise_volume(slab, model, device=device, slab_size=1, strength=1.0)
    return (time.perf_counter() - started) / (MEASURE_SIZE * MEASURE_SIZE / 1e6)


def probe(measure_speed: bool = False, model_path: Optional[str] = None) -> Dict[str, Any]:
    """The ``info`` event's fields; never raises (a broken torch is reported in ``torch_error``)."""
    from ..version import __version__

    info: Dict[str, Any] = {"tscdenoise": __version__, "python": sys.version.split()[0], "torch": None,
                            "devices": [{"id": "cpu", "name": "CPU"}]}
    try:
        import torch
    except Exception as exc:  # missing, or broken (a DLL that does not load, a half-finished install)
        info["torch_error"] = f"{type(exc).__name__}: {exc}"
        return info
    info["torch"] = torch.__version__
    try:
        info["devices"] = device_list(torch)
    except Exception as exc:  # a driver problem: the CPU still works
        info["device_error"] = f"{type(exc).__name__}: {exc}"
    for entry in info["devices"]:
        if entry["id"] == "mps":  # torch offers it; list it only if the engine really runs there
            error = engine_runs_on("mps")
            entry["usable"] = error is None
            if error:
                entry["error"] = error
    if measure_speed:
        speeds: Dict[str, float] = {}
        for entry in info["devices"][:1] + [d for d in info["devices"][1:]
                                            if d["id"] == "cuda:0" or (d["id"] == "mps" and d.get("usable"))]:
            try:
                speeds[entry["id"]] = round(measure(model_path, entry["id"]), 4)
            except Exception as exc:
                info.setdefault("measure_errors", {})[entry["id"]] = f"{type(exc).__name__}: {exc}"
        info["seconds_per_megapixel"] = speeds
    return info


# --- the parent's side: Qt-free helpers the Slicer panel uses to show the probe's answer -----------------


def probe_command(python_executable: Union[str, Sequence[str]], measure: bool = False,
                  model_path: Optional[str] = None) -> List[str]:
    """The command line that runs this probe with `python_executable` (PythonSlicer inside Slicer)."""
    command = [python_executable] if isinstance(python_executable, str) else list(python_executable)
    command += ["-m", "TSCDenoiseLib.mrml.probe"] + (["--measure"] if measure else [])
    return command + (["--model", str(model_path)] if model_path else [])


def info_from_events(events: Iterable[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """The fields of the probe's ``info`` event among `events`, or None."""
    for event in events:
        if event.get("event") == "info":
            return {k: v for k, v in event.items() if k != "event"}
    return None


def device_choices(info: Optional[Dict[str, Any]]) -> List[str]:
    """What the device menu offers: "auto" and "cpu", plus "cuda" / "mps" where the probe found them usable."""
    ids = [d["id"] for d in (info or {}).get("devices", []) if d.get("usable", True)]
    choices = ["auto"]
    if any(i.startswith("cuda") for i in ids):
        choices.append("cuda")
    if "mps" in ids:
        choices.append("mps")
    return choices + ["cpu"]


def resolve_choice(info: Optional[Dict[str, Any]], choice: str) -> str:
    """The device id a menu choice runs on, as the worker resolves it ("auto": the first CUDA GPU, else the CPU)."""
    ids = [d["id"] for d in (info or {}).get("devices", []) if d.get("usable", True)]
    if choice in ("auto", "cuda"):
        return next((i for i in ids if i.startswith("cuda")), "cpu")
    return choice if choice in ids else "cpu"


def describe_devices(info: Optional[Dict[str, Any]], choice: str) -> str:
    """One line for the panel: what `choice` means here (GPU name, free memory), or why torch is not usable."""
    if info is None:
        return "Looking for devices..."
    if info.get("torch") is None:
        error = info.get("torch_error", "")
        if "No module named" in error or not error:
            return "PyTorch is not installed yet; Denoise offers to install it."
        return f"PyTorch does not load ({error}); Denoise offers to reinstall it."
    device_id = resolve_choice(info, choice)
    entry = next((d for d in info.get("devices", []) if d["id"] == device_id), {"id": device_id, "name": device_id})
    text = f"{entry['id']}: {entry['name']}"
    if "free_gib" in entry:
        text += f", {entry['free_gib']} of {entry['total_gib']} GiB free"
    text += f" (PyTorch {info['torch']})"
    unusable = [d["name"] for d in info.get("devices", []) if not d.get("usable", True)]
    return text + (f"; {', '.join(unusable)} found but not usable by this version" if unusable else "")


def format_duration(seconds: float) -> str:
    """"45 s", "3 min", "1 h 20 min"."""
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 90 else f"{minutes // 60} h {minutes % 60} min"


def estimate_seconds(info: Optional[Dict[str, Any]], choice: str, shape: Sequence[int]) -> Optional[float]:
    """Expected seconds to denoise a (Z, Y, X) volume on `choice`, from the probe's measured speed, or None."""
    speeds = (info or {}).get("seconds_per_megapixel") or {}
    device_id = resolve_choice(info, choice)
    speed = speeds.get(device_id, speeds.get("cuda:0") if device_id.startswith("cuda") else None)
    if speed is None or len(shape) != 3:
        return None
    z, y, x = shape
    return float(speed) * z * y * x / 1e6


def estimate_text(info: Optional[Dict[str, Any]], choice: str, shape: Sequence[int]) -> str:
    """The panel's estimate line, with a warning when the run would be on the CPU."""
    if info is None or info.get("torch") is None:
        return ""
    seconds = estimate_seconds(info, choice, shape)
    on_cpu = resolve_choice(info, choice) == "cpu"
    duration = f"about {format_duration(seconds)}" if seconds is not None else "an unknown time"
    text = f"Expected: {duration} for {shape[0]} slices of {shape[2]} x {shape[1]}"
    if on_cpu:
        gpus = [d for d in info.get("devices", []) if d["id"] != "cpu"]
        text = ("Only the CPU is available: " if not gpus else "Running on the CPU: ") + text[0].lower() + text[1:]
        return text + ". A CUDA GPU is much faster."
    return text + "."


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m TSCDenoiseLib.mrml.probe", description=__doc__.splitlines()[0])
    parser.add_argument("--measure", action="store_true", help="also time one slice through the model per device")
    parser.add_argument("--model", help="checkpoint to time (default: the bundled default model)")
    args = parser.parse_args(argv)
    emit("info", **probe(args.measure, args.model))
    return 0


if __name__ == "__main__":
    sys.exit(main())
