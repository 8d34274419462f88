"""Score denoisers against normal-dose CT on a datalist split; write a JSON and a Markdown table.

Methods: the low-dose input itself, the classical filter (anisotropic diffusion tuned on another
split), and every model checkpoint given. All are run through the product's own paths
(``denoise_volume``, ``load_model``) on whole volumes read with ``read_ct``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable, Dict, Mapping, Optional, Sequence

import numpy as np

from .metrics import SOFT_TISSUE_WINDOW, flat_soft_tissue_mask, hu_bias, noise_std, psnr, rmse, ssim

FULL_WINDOW = (-1024.0, 3072.0)
LOW_DOSE_NAME = "LDCT input"
CLASSICAL_NAME = "anisotropic diffusion"
COLUMNS = (
    ("psnr_db", "PSNR [-160, 240] (dB)"),
    ("ssim", "SSIM [-160, 240]"),
    ("rmse_hu", "RMSE (HU)"),
    ("psnr_db_full", "PSNR [-1024, 3072] (dB)"),
    ("ssim_full", "SSIM [-1024, 3072]"),
    ("noise_std_hu", "noise std, flat tissue (HU)"),
    ("bias_hu", "mean bias, flat tissue (HU)"),
    ("seconds", "time (s)"),
)


def score(image: np.ndarray, reference: np.ndarray) -> Dict[str, float]:
    """All figures for one (Z, Y, X) HU volume against its normal-dose reference."""
    flat = flat_soft_tissue_mask(reference)
    return {
        "psnr_db": psnr(image, reference, SOFT_TISSUE_WINDOW),
        "ssim": ssim(image, reference, SOFT_TISSUE_WINDOW),
        "rmse_hu": rmse(image, reference),
        "psnr_db_full": psnr(image, reference, FULL_WINDOW),
        "ssim_full": ssim(image, reference, FULL_WINDOW),
        "noise_std_hu": noise_std(image, reference, flat),
        "bias_hu": hu_bias(image, reference, flat),
    }


def _load_pairs(entries: Sequence[dict]) -> list:
    from .io import read_ct

    pairs = []
    for entry in entries:
        low, geometry = read_ct(entry["ldct"])
        high, _ = read_ct(entry["ndct"])
        pairs.append((low, high, geometry.spacing))
    return pairs


def _run_method(method: Callable[[np.ndarray, Sequence[float]], np.ndarray], pairs: list) -> Dict[str, float]:
    """Slice-weighted mean of each figure over the volumes, plus the total run time."""
    totals: Dict[str, float] = {}
    slices, seconds = 0, 0.0
    for low, high, spacing in pairs:
        started = time.perf_counter()
        output = method(low, spacing)
        seconds += time.perf_counter() - started
        for name, value in score(output, high).items():
            totals[name] = totals.get(name, 0.0) + value * low.shape[0]
        slices += low.shape[0]
    return {**{name: round(value / slices, 4) for name, value in totals.items()}, "seconds": round(seconds, 2)}


def evaluate_models(
    datalist: str | Path,
    models: Optional[Mapping[str, str | Path]] = None,
    split: str = "test",
    classical: bool = True,
    tune_split: str = "validation",
    conductances: Sequence[float] | None = None,
    iterations: Sequence[int] | None = None,
    output_dir: str | Path | None = None,
    device: str = "auto",
    slab_size: int | str = "auto",
    overwrite: bool = False,
) -> dict:
    """Score the low-dose input, the tuned classical filter and each model on `split` of `datalist`.

    The filter's (conductance, iterations) grid defaults to ``classical.DEFAULT_*``. Writes
    ``evaluation.json`` and ``evaluation.md`` to `output_dir` (if given) and returns the results.
    """
    from .atomic import atomic_output_file
    from .checkpoint import load_model
    from .classical import DEFAULT_CONDUCTANCES, DEFAULT_ITERATIONS, anisotropic_diffusion, tune_anisotropic_diffusion
    from .data import read_datalist
    from .errors import InvalidInputError
    from .inference import denoise_volume

    splits = read_datalist(datalist)
    if split not in splits:
        raise InvalidInputError(f"Datalist {datalist} has no {split!r} split; it has {', '.join(splits)}.")
    pairs = _load_pairs(splits[split])
    results: Dict[str, dict] = {LOW_DOSE_NAME: _run_method(lambda low, spacing: low, pairs)}
    settings: Dict[str, dict] = {}
    if classical:
        if tune_split not in splits:
            raise InvalidInputError(f"Datalist {datalist} has no {tune_split!r} split to tune the classical filter on.")
        tuned = tune_anisotropic_diffusion(_load_pairs(splits[tune_split]), conductances or DEFAULT_CONDUCTANCES,
                                           iterations or DEFAULT_ITERATIONS)
        settings[CLASSICAL_NAME] = tuned
        conductance, count = tuned["conductance"], tuned["iterations"]
        results[CLASSICAL_NAME] = _run_method(
            lambda low, spacing: anisotropic_diffusion(low, spacing, conductance, count), pairs)
    for name, path in (models or {}).items():
        model = load_model(path, device=device)
        settings[name] = {"checkpoint": str(path), "network": type(model).__name__,
                          **{k: v for k, v in model.checkpoint_metadata.items() if isinstance(v, (int, float, str))}}
        results[name] = _run_method(
            lambda low, spacing: denoise_volume(low, model, slab_size=slab_size, device=device), pairs)
    report = {
        "datalist": str(datalist),
        "split": split,
        "volumes": len(pairs),
        "slices": int(sum(low.shape[0] for low, _, _ in pairs)),
        "windows": {"soft_tissue": list(SOFT_TISSUE_WINDOW), "full": list(FULL_WINDOW)},
        "results": results,
        "settings": settings,
    }
    if output_dir is not None:
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        with atomic_output_file(output_dir / "evaluation.json", overwrite) as tmp:
            Path(tmp).write_text(json.dumps(report, indent=2) + "\n")
        with atomic_output_file(output_dir / "evaluation.md", overwrite) as tmp:
            Path(tmp).write_text(markdown_table(report) + "\n")
    return report


def markdown_table(report: dict) -> str:
    """The results as a Markdown table, one row per method."""
    header = "| method | " + " | ".join(title for _, title in COLUMNS) + " |"
    rule = "| --- | " + " | ".join("---:" for _ in COLUMNS) + " |"
    rows = [
        f"| {name} | " + " | ".join(_format(key, figures.get(key)) for key, _ in COLUMNS) + " |"
        for name, figures in report["results"].items()
    ]
    caption = (f"{report['split']} split of {Path(report['datalist']).name}: {report['volumes']} volume(s), "
               f"{report['slices']} slices; PSNR/SSIM after clipping to the window (data range = its width), "
               "RMSE over whole slices, noise and bias in flat soft tissue of the reference.")
    return "\n".join([caption, "", header, rule, *rows])


def _format(key: str, value) -> str:
    if value is None:
        return ""
    return f"{value:.4f}" if key.startswith("ssim") else f"{value:.2f}"
