"""Image-quality report that shows noise texture, not only error: figures, NPS curves and PNG panels.

:func:`evaluate_methods` scores denoised versions of one volume against its normal-dose (NDCT) reference:
the error figures of :mod:`.evaluation` plus, in flat soft-tissue ROIs of the reference, the noise power
spectrum (NPS) of the noise (image - reference) and of the image itself (the texture a reader sees).
:func:`write_report` writes them as JSON, Markdown and PNG figures (needs matplotlib: the [report] extra).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..core.atomic import atomic_output_folder, check_output
from ..errors import InvalidInputError, MissingDependencyError  # noqa: F401  (re-exported)
from .scoring import (COLUMNS, FULL_WINDOW, RoiSpectrum, noise_texture_figures, roi_spectrum, score, table_lines,
                         texture_rois)
from ..core.metrics import SOFT_TISSUE_WINDOW, SquareRoi

REFERENCE_NAME = "NDCT reference"
FILES = {"metrics": "metrics.json", "markdown": "report.md", "panel": "panel.png",
         "differences": "differences.png", "nps": "nps.png", "rois": "rois.png"}
_ROI_TITLES = {"noise_std_hu": "noise std, flat ROIs (HU)", "bias_hu": "mean bias, flat ROIs (HU)"}
# The image NPS peak stays out of the table (it is in metrics.json): slow anatomy in the ROIs puts it
# in the lowest ring for almost any image, so it tells methods apart no better than the mean frequency.
REPORT_COLUMNS = (
    tuple((key, _ROI_TITLES.get(key, title)) for key, title in COLUMNS if key != "seconds")
    + (("texture_mean_frequency", "image NPS mean freq. (cycles/mm)"),
       ("texture_std_hu", "image std, flat ROIs (HU)"),
       ("seconds", "time (s)"))
)
HOW_TO_READ = (
    "PSNR, SSIM and RMSE say how close each image is to the normal-dose (NDCT) scan: higher PSNR and SSIM, "
    "lower RMSE, is closer. A filter that blurs everything can still score well on them, so the other columns "
    "look at the noise in flat soft tissue, where the NDCT shows little but its own grain. *Noise std* is how "
    "strong the noise left in the image (image - NDCT) is; it cannot fall to 0, because image - NDCT also "
    "holds the NDCT's own noise. The *noise NPS* (noise power spectrum) tells how that noise is spread over "
    "spatial frequencies: a lower peak or mean frequency means coarser, blotchier grain, the 'waxy' look of "
    "over-smoothing. The *image NPS* is the spectrum of the image itself in the same squares, the texture a "
    "reader sees: compare it with the NDCT reference row and its dashed curve in the NPS figure; far below it "
    "at high frequencies means fine texture was removed. Where a method's solid noise curve meets the black "
    "dashed NDCT curve, what is left in image - NDCT is mostly the NDCT's own noise. The *edge gradient ratio* "
    "compares the gradient across the reference's strongest edges: 1 keeps them, below 1 blurs them, above 1 "
    "overshoots. The NDCT reference row has image figures only: with a single scan its noise cannot be "
    "separated from the anatomy."
)


def evaluate_methods(reference: np.ndarray, methods: Mapping[str, np.ndarray], spacing: Sequence[float],
                     seconds: Optional[Mapping[str, float]] = None, roi_size: int = 32, roi_count: int = 16) -> dict:
    """Score each (Z, Y, X) HU volume of ``methods`` against the NDCT ``reference``; a JSON-ready dict.

    Up to ``roi_count`` flat ROIs of ``roi_size`` pixels are found once on the reference
    (:func:`.evaluation.texture_rois`); noise std, bias and both spectra are measured inside them.

    Args:
        reference: the normal-dose volume in HU, (Z, Y, X).
        methods: the volumes to score by name, each the reference's shape, in table order: the low-dose
            input first (e.g. "LDCT input"), then models and filters.
        spacing: voxel size (x, y, z) in mm, as ``read_ct`` gives it (the spectra's frequencies use it).
        seconds: optional run time of each method by name, copied into its figures.
        roi_size: side of the square flat-tissue ROIs, in pixels.
        roi_count: the most ROIs to use.

    Returns:
        ``{"windows", "shape", "spacing_mm", "rois", "slice", "reference", "methods", "nps"}``: the metric
        windows, the volume's shape and spacing, the ROIs and the representative slice for figures, the
        reference's own texture figures, per method its figures (PSNR/SSIM on both windows, RMSE, noise
        std, bias, noise and image NPS figures, edge ratio, ``seconds``), and the NPS curves per method.

    Raises:
        InvalidInputError: the reference is not 3D, no method is given, a method is named like the
            reference's row or has another shape, the spacing is not three positive sizes, or the reference
            has no flat soft-tissue square of ``roi_size`` pixels.
    """
    reference = np.asarray(reference, dtype=np.float32)
    _check_volumes(reference, methods, spacing)
    rois = texture_rois(reference, size=roi_size, count=roi_count)
    if not rois:
        raise InvalidInputError(
            f"The reference has no flat soft-tissue square of {roi_size} x {roi_size} pixels (all in [-150, 150] "
            "HU, 5 pixels from other tissue, std <= 20 HU), so noise texture cannot be measured; try a smaller "
            "roi_size.")
    figures: Dict[str, dict] = {}
    noise_curves: Dict[str, list] = {}
    image_curves: Dict[str, list] = {}
    texture = roi_spectrum(reference, rois, spacing)
    reference_figures = _image_texture_figures(texture)
    image_curves[REFERENCE_NAME] = _curve(texture)
    for name, volume in methods.items():
        volume = np.asarray(volume, dtype=np.float32)
        noise = roi_spectrum(volume - reference, rois, spacing)
        image = roi_spectrum(volume, rois, spacing)
        figures[name] = {**score(volume, reference, rois=rois), **noise_texture_figures(noise, volume, reference),
                         "nps_variance_hu2": noise.variance, **_image_texture_figures(image)}
        if seconds and name in seconds:
            figures[name]["seconds"] = float(seconds[name])
        noise_curves[name], image_curves[name] = _curve(noise), _curve(image)
    return {
        "windows": {"soft_tissue": list(SOFT_TISSUE_WINDOW), "full": list(FULL_WINDOW)},
        "shape": [int(n) for n in reference.shape],
        "spacing_mm": [float(s) for s in spacing],
        "rois": [roi._asdict() for roi in rois],
        "slice": _representative_slice(rois, reference.shape[0]),
        "reference": {"name": REFERENCE_NAME, **_json_safe(reference_figures)},
        "methods": {name: _json_safe(values) for name, values in figures.items()},
        "nps": {"frequencies": [float(f) for f in texture.frequencies], "noise": noise_curves, "image": image_curves},
    }


def _check_volumes(reference: np.ndarray, methods: Mapping[str, np.ndarray], spacing: Sequence[float]) -> None:
    if reference.ndim != 3:
        raise InvalidInputError(f"The reference must be a (Z, Y, X) volume, got shape {reference.shape}.")
    if not methods:
        raise InvalidInputError("Give at least one method (the low-dose input first) to compare with the reference.")
    if REFERENCE_NAME in methods:
        raise InvalidInputError(f"{REFERENCE_NAME!r} names the reference's own row; rename that method.")
    for name, volume in methods.items():
        if np.shape(volume) != reference.shape:
            raise InvalidInputError(f"Method {name!r} has shape {np.shape(volume)} but the reference has "
                                    f"{reference.shape}: every method must be the same (Z, Y, X) volume.")
    if len(spacing) != 3 or min(float(s) for s in spacing) <= 0:
        raise InvalidInputError(f"spacing must be three positive (x, y, z) sizes in mm, got {tuple(spacing)}.")


def _image_texture_figures(spectrum: RoiSpectrum) -> dict:
    return {"texture_peak_frequency": spectrum.peak_frequency, "texture_mean_frequency": spectrum.mean_frequency,
            "texture_std_hu": float(np.sqrt(spectrum.variance))}


def _curve(spectrum: RoiSpectrum) -> list:
    return [float(value) for value in spectrum.nps]


def _json_safe(figures: Mapping[str, Optional[float]]) -> dict:
    """Plain floats; None for missing or non-finite values (JSON has no inf, e.g. PSNR of identical images)."""
    return {key: None if value is None or not np.isfinite(value) else float(value) for key, value in figures.items()}


def _representative_slice(rois: Sequence[SquareRoi], depth: int) -> int:
    """The slice holding most ROIs; ties go to the one nearest the middle."""
    counts = Counter(roi.z for roi in rois)
    return max(counts, key=lambda z: (counts[z], -abs(z - (depth - 1) / 2), -z))


def write_report(report: dict, reference: np.ndarray, methods: Mapping[str, np.ndarray], out_dir: str | Path,
                 overwrite: bool = False) -> Dict[str, Path]:
    """Write metrics.json, report.md and the PNG figures of :func:`evaluate_methods`' ``report`` to ``out_dir``.

    ``reference`` and ``methods`` are the volumes it was computed from. The folder is written as a unit: the
    files go to a hidden sibling folder that is renamed to ``out_dir`` once all are written, so a full disk
    or an interrupt leaves nothing. An existing non-empty ``out_dir`` is refused unless ``overwrite``, and
    then replaced only if it holds nothing but a report's files. Returns the paths by kind.
    """
    figure_class = _figure_class()
    reference = np.asarray(reference, dtype=np.float32)
    _check_volumes(reference, methods, report["spacing_mm"])
    if list(methods) != list(report["methods"]):
        raise InvalidInputError(f"methods {list(methods)} are not the ones the report was computed for "
                                f"{list(report['methods'])}.")
    check_report_output(out_dir, overwrite)
    drawings = {"panel": _draw_panel, "differences": _draw_differences, "nps": _draw_nps, "rois": _draw_rois}
    with atomic_output_folder(out_dir, overwrite, owned=_is_report_folder, what="a report") as staging:
        for kind, draw in drawings.items():
            figure = figure_class(dpi=100, layout="constrained")
            draw(figure, report, reference, methods)
            figure.savefig(staging / FILES[kind], format="png", dpi=100)
        (staging / FILES["metrics"]).write_text(json.dumps(report, indent=2) + "\n")
        (staging / FILES["markdown"]).write_text(markdown_report(report) + "\n")
    return {kind: Path(out_dir) / name for kind, name in FILES.items()}


def check_report_output(out_dir: str | Path, overwrite: bool, inputs: Sequence[str | Path] = ()) -> Path:
    """Refuse a report folder that may not be written (before any work): see `core.atomic.check_output`."""
    return check_output(out_dir, overwrite, kind="folder", inputs=inputs, owned=_is_report_folder, what="a report")


def _is_report_folder(folder: Path) -> bool:
    """Whether `folder` holds nothing but files of a report (so --overwrite may replace it)."""
    return all(entry.is_file() and entry.name in FILES.values() for entry in folder.iterdir())


def _figure_class():
    """matplotlib's Figure; drawn with its Agg canvas, so pyplot's global backend is never touched."""
    from ..lazy import require_optional

    require_optional("matplotlib", "report", "The image-quality report's figures")  # first: a cached submodule
    return require_optional("matplotlib.figure", "report", "The image-quality report's figures",  # would hide it
                            package="matplotlib").Figure


def markdown_report(report: dict) -> str:
    """report.md: setup, how to read it, the table (the reference first) and the figures."""
    rois = [SquareRoi(**roi) for roi in report["rois"]]
    size, (dx, dy, dz) = rois[0].size, report["spacing_mm"]
    rows = {REFERENCE_NAME: report["reference"], **report["methods"]}
    return "\n".join([
        "# Image-quality report: error and noise texture against the normal-dose reference",
        "",
        f"Volume {' x '.join(map(str, report['shape']))} voxels (Z x Y x X), spacing {dx:.3f} x {dy:.3f} x "
        f"{dz:.3f} mm (x, y, z). Noise std, bias and both NPS are measured in {len(rois)} flat soft-tissue ROIs of "
        f"{size} x {size} pixels ({size * dx:.1f} x {size * dy:.1f} mm) found on the reference, on slices "
        f"{', '.join(str(z) for z in sorted({roi.z for roi in rois}))} ([rois.png](rois.png)). PSNR and SSIM are "
        f"computed after clipping to the window, [{_window(report, 'soft_tissue')}] or [{_window(report, 'full')}] "
        "HU (data range = its width); RMSE over whole slices.",
        "",
        "## How to read this",
        "",
        HOW_TO_READ,
        "",
        "## Figures",
        "",
        *table_lines(rows, REPORT_COLUMNS),
        "",
        f"![Slice {report['slice']} at the soft-tissue window, with a zoom](panel.png)",
        "",
        f"![Difference from the reference, slice {report['slice']}](differences.png)",
        "",
        "![Noise power spectra](nps.png)",
        "",
        "![Flat ROIs on the reference](rois.png)",
    ])


def _window(report: dict, name: str) -> str:
    low, high = report["windows"][name]
    return f"{low:g}, {high:g}"


# --- Figures: each draws onto a given matplotlib Figure ------------------------------------------------


def _columns_width(count: int, per_column: float = 3.2, most: float = 16.0) -> float:
    """Figure width in inches for ``count`` image columns, at most ``most`` (1600 px at 100 dpi)."""
    return min(most, per_column * count)


def _zoom_box(report: dict, shape: Sequence[int]) -> Tuple[int, int, int]:
    """(top, left, side) of a square around the representative slice's flattest ROI, inside the image."""
    z = report["slice"]
    roi = next(SquareRoi(**r) for r in report["rois"] if r["z"] == z)
    rows, columns = shape[-2:]
    side = min(rows, columns, max(2 * roi.size, 3 * min(rows, columns) // 8))
    top = int(np.clip(roi.y + roi.size // 2 - side // 2, 0, rows - side))
    left = int(np.clip(roi.x + roi.size // 2 - side // 2, 0, columns - side))
    return top, left, side


def _show(axes, image: np.ndarray, window: Sequence[float], cmap: str = "gray"):
    axes.set_xticks([])
    axes.set_yticks([])
    return axes.imshow(image, cmap=cmap, vmin=window[0], vmax=window[1], interpolation="nearest")


def _box(axes, top: int, left: int, side: int, color: str, label: Optional[str] = None) -> None:
    from matplotlib.patches import Rectangle

    axes.add_patch(Rectangle((left - 0.5, top - 0.5), side, side, fill=False, edgecolor=color, linewidth=1.5))
    if label:
        axes.text(left + 1, top + 1, label, color=color, fontsize=8, va="top", ha="left")


def _draw_panel(figure, report: dict, reference: np.ndarray, methods: Mapping[str, np.ndarray]) -> None:
    """Reference, low-dose input and each method at the soft-tissue window; below, the same zoomed."""
    z, window = report["slice"], report["windows"]["soft_tissue"]
    images = {REFERENCE_NAME: reference, **methods}
    figure.set_size_inches(_columns_width(len(images)), 7.4)
    top, left, side = _zoom_box(report, reference.shape)
    zoom = reference.shape[-1] / side
    grid = figure.subplots(2, len(images), squeeze=False)
    for column, (name, volume) in enumerate(images.items()):
        _show(grid[0, column], volume[z], window)
        _box(grid[0, column], top, left, side, "yellow")
        grid[0, column].set_title(_panel_title(name, report), fontsize=10)
        _show(grid[1, column], volume[z, top:top + side, left:left + side], window)
        grid[1, column].set_title(f"yellow box, zoom x{zoom:.1f}", fontsize=9)
    figure.suptitle(f"Slice {z} at the soft-tissue window [{_window(report, 'soft_tissue')}] HU "
                    "(PSNR and SSIM at that window, over the whole volume)", fontsize=11)


def _panel_title(name: str, report: dict) -> str:
    if name == REFERENCE_NAME:
        return f"{name}\n(normal dose, the target)"
    figures = report["methods"][name]
    return f"{name}\nPSNR {_number(figures['psnr_db'], '.2f')} dB, SSIM {_number(figures['ssim'], '.3f')}"


def _number(value: Optional[float], spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _draw_differences(figure, report: dict, reference: np.ndarray, methods: Mapping[str, np.ndarray]) -> None:
    """(method - reference) on the representative slice, grey at ±3x the low-dose input's noise std."""
    z = report["slice"]
    first = next(iter(report["methods"]))
    limit = 3.0 * (report["methods"][first]["noise_std_hu"] or 1.0)
    figure.set_size_inches(_columns_width(len(methods), most=15.0) + 1.0, 4.3)
    axes = figure.subplots(1, len(methods), squeeze=False)[0]
    for ax, (name, volume) in zip(axes, methods.items()):
        shown = _show(ax, volume[z].astype(np.float32) - reference[z], (-limit, limit))
        figures = report["methods"][name]
        ax.set_title(f"{name}\nnoise std {_number(figures['noise_std_hu'], '.1f')} HU, "
                     f"RMSE {_number(figures['rmse_hu'], '.1f')} HU", fontsize=10)
    colorbar = figure.colorbar(shown, ax=list(axes), shrink=0.8)
    colorbar.set_label("image - NDCT reference (HU)")
    figure.suptitle(f"Difference from the NDCT reference, slice {z}, grey scale +/-{limit:.0f} HU (3x the noise std "
                    f"of {first}):\ngrain is noise left in the image, outlines are anatomy lost or changed",
                    fontsize=11)


def _draw_nps(figure, report: dict, reference: np.ndarray, methods: Mapping[str, np.ndarray]) -> None:
    """Radial NPS of the noise (solid) and of the images (dashed), one colour per method, log scale."""
    figure.set_size_inches(10.0, 6.0)
    ax = figure.subplots()
    frequencies = np.asarray(report["nps"]["frequencies"])[1:]  # ring 0 is ~0 after detrending
    ax.plot(frequencies, report["nps"]["image"][REFERENCE_NAME][1:], color="black", linestyle="--", linewidth=2,
            label=f"{REFERENCE_NAME}: image (its texture)")
    for index, name in enumerate(report["methods"]):
        color = f"C{index}"
        ax.plot(frequencies, report["nps"]["noise"][name][1:], color=color, linewidth=2,
                label=f"{name}: noise (image - NDCT)")
        ax.plot(frequencies, report["nps"]["image"][name][1:], color=color, linestyle="--", linewidth=1.5,
                label=f"{name}: image")
    ax.set_yscale("log", nonpositive="mask")
    ax.set_xlim(0, frequencies[-1])
    ax.set_xlabel("spatial frequency (cycles/mm)")
    ax.set_ylabel("noise power spectrum (HU² mm²)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=9, loc="best")
    size = report["rois"][0]["size"]
    ax.set_title(f"Noise power spectra in {len(report['rois'])} flat {size}x{size}-pixel ROIs: solid = noise "
                 "(image - NDCT),\ndashed = the image itself (texture). Curves shifted left = coarser, blotchier "
                 "grain; low at the right = fine detail removed", fontsize=11)


def _draw_rois(figure, report: dict, reference: np.ndarray, methods: Mapping[str, np.ndarray]) -> None:
    """Up to three reference slices with the most ROIs, each ROI outlined and numbered flattest first."""
    rois = [SquareRoi(**roi) for roi in report["rois"]]
    counts = Counter(roi.z for roi in rois)
    slices = [report["slice"]] + [z for z, _ in counts.most_common() if z != report["slice"]][:2]
    figure.set_size_inches(_columns_width(len(slices), per_column=4.2), 5.0)
    axes = figure.subplots(1, len(slices), squeeze=False)[0]
    for ax, z in zip(axes, slices):
        _show(ax, reference[z], report["windows"]["soft_tissue"])
        for rank, roi in enumerate(rois, start=1):
            if roi.z == z:
                _box(ax, roi.y, roi.x, roi.size, "cyan", str(rank))
        ax.set_title(f"slice {z}: {counts[z]} ROI(s)", fontsize=10)
    size = rois[0].size
    figure.suptitle(f"The {len(rois)} flat soft-tissue ROIs ({size}x{size} pixels) found on the NDCT reference, "
                    f"numbered flattest first;\nnoise std, bias and the NPS are measured inside them "
                    f"(ROIs lie on slices {', '.join(str(z) for z in sorted(counts))})", fontsize=11)
