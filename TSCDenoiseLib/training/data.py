"""Datalists, cached low-dose simulation and MONAI datasets/loaders for paired CT.

A datalist is JSON ``{"training": [{"ndct": ..., "ldct": ...}, ...], "validation": [...]}``
(optionally ``"test"``) with paths relative to the datalist's folder. Entries without
``ldct`` get one simulated once and cached on disk (see :func:`presimulate_pairs`).
"""

from __future__ import annotations

import hashlib
import json
from contextlib import contextmanager
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import InvalidInputError, TSCDenoiseError

SPLITS = ("training", "validation", "test")


def read_datalist(path: str | Path, require_ldct: bool = True) -> dict[str, list[dict]]:
    """Entries per split with absolute paths; errors name the split, entry index and file."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"Datalist {path} does not exist.")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise InvalidInputError(f"Datalist {path} is not valid JSON: {error}.") from error
    if not isinstance(raw, dict) or not isinstance(raw.get("training"), list):
        raise InvalidInputError(
            f'Datalist {path} needs a "training" list: {{"training": [{{"ndct": ..., "ldct": ...}}], "validation": [...]}}.'
        )
    datalist = {}
    for split in SPLITS:
        if split not in raw:
            continue
        datalist[split] = [_resolve_entry(entry, f"{path.name} {split}[{i}]", path.parent, require_ldct)
                           for i, entry in enumerate(raw[split])]
    return datalist


def _resolve_entry(entry, name: str, base: Path, require_ldct: bool) -> dict:
    if isinstance(entry, str):
        entry = {"ndct": entry}
    if not isinstance(entry, dict) or "ndct" not in entry:
        raise InvalidInputError(
            f"{name}: every entry needs an 'ndct' file (and an 'ldct' file, or simulation turned on); got {entry!r}."
        )
    if require_ldct and "ldct" not in entry:
        raise InvalidInputError(
            f"{name}: unpaired entry (no 'ldct' for {entry['ndct']}); add its low-dose file or turn on "
            "low-dose simulation (simulate_low_dose: true)."
        )
    resolved = dict(entry)
    for key in ("ndct", "ldct"):
        if key in entry:
            file = Path(entry[key])
            file = file if file.is_absolute() else base / file
            if not file.exists():
                raise InvalidInputError(f"{name}: {key} file {file} does not exist.")
            resolved[key] = str(file)
    return resolved


@contextmanager
def _our_errors_unwrapped():
    """Re-raise our own error (which names the file and the fix) out of MONAI's "applying transform" wrappers."""
    try:
        yield
    except RuntimeError as error:
        cause = error
        while cause is not None and not isinstance(cause, TSCDenoiseError):
            cause = cause.__cause__
        if cause is None:
            raise
        raise cause from None


def _cache_key(source: Path, dose: float, seed: int, parameters: dict) -> str:
    stat = source.stat()
    description = json.dumps(
        [str(source.resolve()), stat.st_size, stat.st_mtime_ns, dose, seed, sorted(parameters.items())], default=str
    )
    return hashlib.sha256(description.encode()).hexdigest()[:16]


def presimulate_pairs(
    entries: Sequence[dict], cache_dir: str | Path, dose: float = 0.25, seed: int = 0, **simulation_parameters
) -> list[dict]:
    """Give every entry an ``ldct``: simulated from its ``ndct`` once, then reused from ``cache_dir``.

    The cache file name hashes the source (path, size, modification time) and the simulation
    parameters, so a changed source or dose makes a new file instead of reusing a stale one.
    """
    from ..io import read_ct, write_ct
    from .simulation import simulate_low_dose

    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    paired = []
    for index, entry in enumerate(entries):
        if "ldct" in entry:
            paired.append(dict(entry))
            continue
        source = Path(entry["ndct"])
        stem = source.name.split(".")[0]
        target = cache_dir / f"{stem}-ldct-{_cache_key(source, dose, seed, simulation_parameters)}.nii.gz"
        if not target.exists():
            volume, geometry = read_ct(source)
            low_dose = simulate_low_dose(volume, dose, seed=seed + index, pixel_spacing=geometry.spacing[0],
                                         **simulation_parameters)
            write_ct(low_dose.astype(np.float32), geometry, target)
        paired.append({**entry, "ldct": str(target)})
    return paired


def training_loader(
    entries: Sequence[dict],
    window=None,
    patch_size: int = 64,
    samples_per_volume: int = 8,
    batch_size: int = 2,
    simulate: bool = False,
    dose_range: Sequence[float] = (0.25, 0.25),
    cache_rate: float = 1.0,
    num_workers: int = 0,
    shuffle: bool = True,
):
    """MONAI ``CacheDataset`` + ``DataLoader`` of paired 2D patches.

    Each batch holds ``batch_size * samples_per_volume`` patches. Loading and checking are
    cached; patch drawing, simulation and flips run per epoch.
    """
    from monai.data import CacheDataset, DataLoader

    from .transforms import training_transforms

    transform = training_transforms(window, patch_size, samples_per_volume, simulate, dose_range)
    with _our_errors_unwrapped():
        dataset = CacheDataset(list(entries), transform=transform, cache_rate=cache_rate, num_workers=None, progress=False)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers)
    return dataset, loader


def slice_dataset(entries: Sequence[dict], window=None, transform=None):
    """Every axial slice of the paired volumes as a MONAI ``Dataset`` item (1, X, Y), normalized.

    `transform` loads, checks and normalizes a pair of volumes (default: ``volume_transforms(window)``;
    the bundle passes its ``validate#preprocessing``).
    """
    from monai.data import Dataset

    from .transforms import NOISE_STRENGTH_KEY, volume_transforms

    load = transform if transform is not None else volume_transforms(window)
    slices = []
    for entry in entries:
        with _our_errors_unwrapped():
            pair = load(dict(entry))
        extra = {key: pair[key] for key in (NOISE_STRENGTH_KEY,) if key in pair}  # per pair, not per slice
        for z in range(pair["ndct"].shape[-1]):
            slices.append({**{key: pair[key][..., z].as_tensor().clone() for key in ("ldct", "ndct")}, **extra})
    return Dataset(slices)
