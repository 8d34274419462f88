"""Score denoisers against normal-dose CT on a datalist split; write a JSON and a Markdown table.

Methods: the low-dose input itself, the classical filter (anisotropic diffusion tuned on another
split), and every model checkpoint given. All are run through the product's own paths
(``denoise_volume``, ``load_model``) on whole volumes read with ``read_ct``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable, Dict, Mapping, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from ..core.metrics import (
    SOFT_TISSUE_WINDOW,
    SquareRoi,
    edge_gradient_ratio,
    find_flat_tissue_rois,
    flat_soft_tissue_mask,
    hu_bias,
    noise_power_spectrum_2d,
    noise_std,
    nps_summary,
    nps_variance,
    psnr,
    radial_average,
    rmse,
    ssim,
)

FULL_WINDOW = (-1024.0, 3072.0)
LOW_DOSE_LABEL = "LDCT input"
CLASSICAL_LABEL = "anisotropic diffusion"
COLUMNS = (
    ("psnr_db", "PSNR [-160, 240] (dB)"),
    ("ssim", "SSIM [-160, 240]"),
    ("rmse_hu", "RMSE (HU)"),
    ("psnr_db_full", "PSNR [-1024, 3072] (dB)"),
    ("ssim_full", "SSIM [-1024, 3072]"),
    ("noise_std_hu", "noise std, flat tissue (HU)"),
    ("bias_hu", "mean bias, flat tissue (HU)"),
    ("nps_peak_frequency", "noise NPS peak (cycles/mm)"),
    ("nps_mean_frequency", "noise NPS mean freq. (cycles/mm)"),
    ("edge_ratio", "edge gradient ratio"),
    ("seconds", "time (s)"),
)


class RoiSpectrum(NamedTuple):
    """Radial NPS (HU²·mm² on frequencies in cycles/mm) of values in square ROIs, and its summary.

    Peak and mean frequency are None when the values hold no power (e.g. an image minus itself).
    """

    frequencies: np.ndarray
    nps: np.ndarray
    peak_frequency: Optional[float]
    mean_frequency: Optional[float]
    variance: float


def pixel_spacing_yx(spacing: Sequence[float]) -> Tuple[float, float]:
    """(Δy, Δx) in mm, the NPS functions' array order, from the (x, y, z) spacing ``read_ct`` gives."""
    return float(spacing[1]), float(spacing[0])


def roi_mask(shape: Sequence[int], rois: Sequence[SquareRoi]) -> np.ndarray:
    """Boolean (Z, Y, X) mask of the pixels inside any of ``rois``."""
    mask = np.zeros(tuple(shape), dtype=bool)
    for roi in rois:
        mask[roi.index()] = True
    return mask


def texture_rois(reference: np.ndarray, size: int = 32, count: int = 16, margin: int = 5) -> list:
    """:func:`find_flat_tissue_rois` of the reference, kept ``margin`` pixels in-plane from any non-soft tissue.

    The margin keeps edges out of the ROIs' noise: a method that blurs a bone or air edge would otherwise
    leak it into image - reference beside the edge and read as noise there.
    """
    reference = np.asarray(reference, dtype=np.float32)
    guarded = np.where(flat_soft_tissue_mask(reference, margin=margin), reference, np.float32(1e4))
    return find_flat_tissue_rois(guarded, size=size, count=count)


def roi_spectrum(values: np.ndarray, rois: Sequence[SquareRoi], spacing: Sequence[float]) -> RoiSpectrum:
    """NPS of (Z, Y, X) ``values`` in ``rois``, each ROI plane-detrended; ``spacing`` is (x, y, z) mm.

    The variance is the exact integral of the 2D NPS (the detrended variance in the ROIs).
    """
    pixel = pixel_spacing_yx(spacing)
    nps_2d = noise_power_spectrum_2d(values, rois, pixel, detrend="plane")
    frequencies, radial = radial_average(nps_2d, pixel)
    peak = mean = None
    if radial.sum() > 0:
        summary = nps_summary(frequencies, radial)
        peak, mean = summary.peak_frequency, summary.mean_frequency
    return RoiSpectrum(frequencies, radial, peak, mean, nps_variance(nps_2d, pixel))


def score(image: np.ndarray, reference: np.ndarray, spacing: Optional[Sequence[float]] = None,
          rois: Optional[Sequence[SquareRoi]] = None) -> Dict[str, Optional[float]]:
    """All figures for one (Z, Y, X) HU volume against its normal-dose reference.

    Noise std and bias are measured inside ``rois`` when given (and not empty), else in
    :func:`flat_soft_tissue_mask` of the reference. With ``spacing`` ((x, y, z) mm, as ``read_ct`` gives
    it) come the texture figures too: peak and mean frequency (cycles/mm) of the NPS of image - reference
    in ``rois`` (default: :func:`texture_rois` of the reference; None without any ROI or noise),
    and :func:`edge_gradient_ratio` (below 1: blurred edges).
    """
    flat = roi_mask(reference.shape, rois) if rois else flat_soft_tissue_mask(reference)
    figures: Dict[str, Optional[float]] = {
        "psnr_db": psnr(image, reference, SOFT_TISSUE_WINDOW),
        "ssim": ssim(image, reference, SOFT_TISSUE_WINDOW),
        "rmse_hu": rmse(image, reference),
        "psnr_db_full": psnr(image, reference, FULL_WINDOW),
        "ssim_full": ssim(image, reference, FULL_WINDOW),
        "noise_std_hu": noise_std(image, reference, flat),
        "bias_hu": hu_bias(image, reference, flat),
    }
    if spacing is not None:
        rois = texture_rois(reference) if rois is None else rois
        noise = roi_spectrum(image.astype(np.float32) - reference.astype(np.float32), rois, spacing) if rois else None
        figures.update(noise_texture_figures(noise, image, reference))
    return figures


def noise_texture_figures(noise: Optional[RoiSpectrum], image: np.ndarray,
                          reference: np.ndarray) -> Dict[str, Optional[float]]:
    """Peak and mean frequency of the noise spectrum (None without one) and the edge gradient ratio."""
    return {"nps_peak_frequency": noise.peak_frequency if noise else None,
            "nps_mean_frequency": noise.mean_frequency if noise else None,
            "edge_ratio": edge_gradient_ratio(image, reference)}


def _load_pairs(entries: Sequence[dict]) -> list:
    from ..io import read_ct

    pairs = []
    for entry in entries:
        low, geometry = read_ct(entry["ldct"])
        high, _ = read_ct(entry["ndct"])
        pairs.append((low, high, geometry.spacing))
    return pairs


def _run_method(method: Callable[[np.ndarray, Sequence[float]], np.ndarray], pairs: list,
                rois: Sequence[list]) -> Dict[str, Optional[float]]:
    """Slice-weighted mean of each figure over the volumes, plus the total run time.

    ``rois`` holds each reference's :func:`texture_rois`, found once for all methods.
    """
    scores, weights, seconds = [], [], 0.0
    for (low, high, spacing), volume_rois in zip(pairs, rois):
        started = time.perf_counter()
        output = method(low, spacing)
        seconds += time.perf_counter() - started
        noise = roi_spectrum(output.astype(np.float32) - high, volume_rois, spacing) if volume_rois else None
        scores.append({**score(output, high), **noise_texture_figures(noise, output, high)})
        weights.append(low.shape[0])
    return {**_weighted_means(scores, weights), "seconds": round(seconds, 2)}


def _weighted_means(scores: Sequence[Mapping[str, Optional[float]]],
                    weights: Sequence[int]) -> Dict[str, Optional[float]]:
    """Weighted mean of each figure over the volumes that have it; None where none has."""
    means: Dict[str, Optional[float]] = {}
    for name in scores[0]:
        known = [(figures[name], weight) for figures, weight in zip(scores, weights) if figures[name] is not None]
        total = sum(weight for _, weight in known)
        means[name] = round(sum(value * weight for value, weight in known) / total, 4) if known else None
    return means


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
    from ..core.atomic import atomic_output_file
    from ..core.checkpoint import load_model
    from .baselines import DEFAULT_CONDUCTANCES, DEFAULT_ITERATIONS, anisotropic_diffusion, tune_anisotropic_diffusion
    from ..training.data import read_datalist
    from ..errors import InvalidInputError
    from ..core.inference import denoise_volume
    from ..networks.tscnet import has_noise_map

    splits = read_datalist(datalist)
    if split not in splits:
        raise InvalidInputError(f"Datalist {datalist} has no {split!r} split; it has {', '.join(splits)}.")
    pairs = _load_pairs(splits[split])
    rois = [texture_rois(high) for _, high, _ in pairs]
    results: Dict[str, dict] = {LOW_DOSE_LABEL: _run_method(lambda low, spacing: low, pairs, rois)}
    settings: Dict[str, dict] = {}
    if classical:
        if tune_split not in splits:
            raise InvalidInputError(f"Datalist {datalist} has no {tune_split!r} split to tune the classical filter on.")
        tuned = tune_anisotropic_diffusion(_load_pairs(splits[tune_split]), conductances or DEFAULT_CONDUCTANCES,
                                           iterations or DEFAULT_ITERATIONS)
        settings[CLASSICAL_LABEL] = tuned
        conductance, count = tuned["conductance"], tuned["iterations"]
        results[CLASSICAL_LABEL] = _run_method(
            lambda low, spacing: anisotropic_diffusion(low, spacing, conductance, count), pairs, rois)
    for name, path in (models or {}).items():
        model = load_model(path, device=device)
        settings[name] = {"checkpoint": str(path), "network": type(model).__name__,
                          **{k: v for k, v in model.checkpoint_metadata.items() if isinstance(v, (int, float, str))},
                          "strength": "auto" if has_noise_map(model) else 1.0}  # denoise_volume's default
        results[name] = _run_method(
            lambda low, spacing: denoise_volume(low, model, slab_size=slab_size, device=device), pairs, rois)
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
    caption = (f"{report['split']} split of {Path(report['datalist']).name}: {report['volumes']} volume(s), "
               f"{report['slices']} slices; PSNR/SSIM after clipping to the window (data range = its width), "
               "RMSE over whole slices, noise and bias in flat soft tissue of the reference; noise NPS: power "
               "spectrum of image - reference in the flattest 32-pixel squares of the reference (lower mean "
               "frequency: coarser, blotchier noise); edge ratio below 1: blurred edges.")
    return "\n".join([caption, "", *table_lines(report["results"], COLUMNS)])


def table_lines(rows: Mapping[str, Mapping[str, Optional[float]]], columns: Sequence[Tuple[str, str]]) -> list:
    """Markdown table lines (header, rule, one row per entry of ``rows``) of the (key, title) ``columns``."""
    header = "| method | " + " | ".join(title for _, title in columns) + " |"
    rule = "| --- | " + " | ".join("---:" for _ in columns) + " |"
    body = [f"| {name} | " + " | ".join(format_figure(key, figures.get(key)) for key, _ in columns) + " |"
            for name, figures in rows.items()]
    return [header, rule, *body]


def format_figure(key: str, value: Optional[float]) -> str:
    """One figure as table text: SSIM to 4 decimals, frequencies and ratios to 3, the rest to 2."""
    if value is None:
        return ""
    if key.startswith("ssim"):
        return f"{value:.4f}"
    if "frequency" in key or key.endswith("ratio"):
        return f"{value:.3f}"
    return f"{value:.2f}"
