"""How far the adaptation's noise model (`noise.scan_model`) is from the true noise, on training pairs.

    python training/scripts/measure_noise_model_bias.py [--data training/data/wide]
        [--out training/docs/adaptation] [--name noise-model-bias]

Every pair of a training set made by `make_training_set.py` is a normal-dose image and the same image with
simulated low-dose noise, so the low dose's noise is known exactly: low - normal. For each pair the noise
model is estimated from the low dose alone, as `adapt_model` does, and its variance map is compared with
the variance of the true noise on the same 32 x 32 tiles (tiles at least half soft tissue in the normal
dose). The figure per pair is the ratio of the mean estimated to the mean true variance over those tiles.
The safeguard's two variance scales (`safeguard.CONSERVATIVE_VARIANCE`, `STRONGER_VARIANCE`) are set from
this distribution, not from the evaluation cases.

Where the normal dose is a real scan (the chest patients), it has noise of its own, which the estimate also
sees and the "true" noise here does not: on those pairs the underestimate is, if anything, larger.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from TSCDenoiseLib.adaptation import safeguard  # noqa: E402
from TSCDenoiseLib.noise.scan_model import TILE, estimate_noise_model  # noqa: E402
from report_files import write_report  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SOFT_TISSUE_HU = (-150.0, 150.0)
MIN_TISSUE = 0.5
MIN_TILES = 4


def _slices(path: Path) -> np.ndarray:
    """A NIfTI pair file as (Z, Y, X) float32 (the training set stores slices along the last axis)."""
    return np.moveaxis(np.asarray(nib.load(str(path)).dataobj, dtype=np.float32), -1, 0)


def variance_ratio(ndct: np.ndarray, ldct: np.ndarray, spacing_mm: float) -> tuple[float, int]:
    """Mean estimated over mean true noise variance on the tissue tiles, and the number of tiles."""
    model = estimate_noise_model(ldct, (spacing_mm, spacing_mm))
    noise = ldct - ndct
    estimated, true = [], []
    for z in range(ndct.shape[0]):
        for row in range(ndct.shape[1] // TILE):
            for col in range(ndct.shape[2] // TILE):
                window = (z, slice(row * TILE, (row + 1) * TILE), slice(col * TILE, (col + 1) * TILE))
                tissue = (ndct[window] > SOFT_TISSUE_HU[0]) & (ndct[window] < SOFT_TISSUE_HU[1])
                if tissue.mean() < MIN_TISSUE:
                    continue
                estimated.append(float(model.std_map[z, row, col]) ** 2)
                true.append(float(noise[window].var()))
    if len(true) < MIN_TILES:
        return float("nan"), len(true)
    return float(np.mean(estimated) / np.mean(true)), len(true)


def summary(ratios: np.ndarray) -> dict:
    """Percentiles of the ratio and the shares outside the safeguard's two variance scales."""
    return {
        "pairs": int(len(ratios)),
        "median": round(float(np.median(ratios)), 3),
        "percentiles_5_10_90_95": [round(float(v), 3) for v in np.percentile(ratios, [5, 10, 90, 95])],
        "overestimated_beyond_conservative_variance":
            round(float(np.mean(ratios > 1.0 / safeguard.CONSERVATIVE_VARIANCE)), 3),
        "underestimated_beyond_stronger_variance": round(float(np.mean(1.0 / ratios > safeguard.STRONGER_VARIANCE)), 3),
    }


def markdown(rows: list[dict], groups: dict) -> str:
    lines = [
        "# The adaptation noise model against known noise (training pairs)",
        "",
        "Ratio = mean estimated / mean true noise variance on tissue tiles (1 = right; < 1: underestimated).",
        f"The safeguard checks the noise at {safeguard.CONSERVATIVE_VARIANCE} and {safeguard.STRONGER_VARIANCE} "
        "x the estimate; the last two columns give the share of pairs whose error lies beyond each.",
        "",
        "| source | pairs | median | 5 % | 10 % | 90 % | 95 % | over > 1/weaker | under > stronger |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, s in groups.items():
        p = s["percentiles_5_10_90_95"]
        spread = " | ".join(f"{v:.2f}" for v in p)
        lines.append(f"| {name} | {s['pairs']} | {s['median']:.2f} | {spread} | "
                     f"{100 * s['overestimated_beyond_conservative_variance']:.0f} % | "
                     f"{100 * s['underestimated_beyond_stronger_variance']:.0f} % |")
    lines += ["", f"{len(rows)} pairs; per-pair figures (dose, FBP filter, pixel size, tiles) in the JSON file.", ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO / "training" / "data" / "wide")
    parser.add_argument("--out", type=Path, default=REPO / "training" / "docs" / "adaptation")
    parser.add_argument("--name", default="noise-model-bias")
    args = parser.parse_args()
    torch.set_num_threads(1)
    datalist = json.loads((args.data / "datalist.json").read_text())
    rows = []
    for entry in datalist["training"]:
        acquisition = entry["acquisition"]
        ratio, tiles = variance_ratio(_slices(args.data / entry["ndct"]), _slices(args.data / entry["ldct"]),
                                      float(acquisition["pixel_spacing_mm"]))
        if np.isfinite(ratio):
            rows.append({"source": entry["source"], "tiles": tiles, "variance_ratio": round(ratio, 3), **acquisition})
            print(rows[-1], flush=True)
    groups: dict = {}
    for row in rows:
        groups.setdefault(row["source"].split("_")[0].rstrip("-0123456789"), []).append(row["variance_ratio"])
    summaries = {name: summary(np.array(values)) for name, values in sorted(groups.items())}
    summaries["all"] = summary(np.array([row["variance_ratio"] for row in rows]))
    data = str(args.data.relative_to(REPO)) if args.data.is_relative_to(REPO) else str(args.data)
    report = {"data": data, "summary": summaries, "pairs": rows}
    write_report(args.out, args.name, report, markdown(rows, summaries))
    print(markdown(rows, summaries))
    return 0


if __name__ == "__main__":
    sys.exit(main())
