"""Score models on the real-CT evaluation cases shipped inside pydicom (never trained on).

    python training/scripts/evaluate_pydicom_cases.py MODEL.pt [MODEL.pt ...] [--json OUT]

Cases: pydicom's ``CT_small.dcm`` (GE, 128 x 128 spine crop), ``J2K_pixelrep_mismatch.dcm``
(512 x 512 head, skull base) and ``693_J2KI.dcm`` (512 x 512 head, lossy JPEG 2000). Each is the
normal-dose reference; its low dose is simulated at quarter dose (fixed seed). Values below
-1024 HU (padding outside the reconstruction circle) are set to -1024 first. Prints a Markdown
table of RMSE (HU, inside the body), PSNR (dB, window [-160, 240] HU) and noise std (HU, flat
soft tissue) for the low-dose input and each model.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from TSCDenoiseLib.core.checkpoint import load_model
from TSCDenoiseLib.core.inference import denoise_volume
from TSCDenoiseLib.io import read_ct
from TSCDenoiseLib.core.metrics import flat_soft_tissue_mask, noise_std, psnr, rmse
from TSCDenoiseLib.training.simulation import simulate_low_dose

CASES = ("CT_small.dcm", "J2K_pixelrep_mismatch.dcm", "693_J2KI.dcm")
SEED = 7


def load_cases() -> dict:
    """{name: (ndct (1, Y, X), simulated ldct (1, Y, X))} in HU."""
    from pydicom.data import get_testdata_file

    cases = {}
    for name in CASES:
        ndct, geometry = read_ct(get_testdata_file(name))
        ndct = np.maximum(ndct, -1024.0)
        ldct = simulate_low_dose(ndct, 0.25, seed=SEED, pixel_spacing=geometry.spacing[0])
        cases[name] = (ndct, ldct)
    return cases


def scores(image: np.ndarray, reference: np.ndarray) -> dict:
    body = reference > -900
    flat = flat_soft_tissue_mask(reference)
    return {
        "rmse_hu": rmse(image, reference, body),
        "psnr_db": psnr(image, reference),
        "noise_std_hu": noise_std(image, reference, flat) if flat.any() else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+")
    parser.add_argument("--json", help="also write the scores here")
    args = parser.parse_args()
    cases = load_cases()
    results = {name: {"low-dose input": scores(ldct, ndct)} for name, (ndct, ldct) in cases.items()}
    for model_path in args.models:
        model = load_model(model_path, device="cpu")
        label = Path(model_path).stem
        for name, (ndct, ldct) in cases.items():
            results[name][label] = scores(denoise_volume(ldct, model, device="cpu"), ndct)
    print("| case | method | RMSE (HU) | PSNR (dB) | noise std (HU) |\n| --- | --- | ---: | ---: | ---: |")
    for name, methods in results.items():
        for method, s in methods.items():
            print(f"| {name} | {method} | {s['rmse_hu']:.2f} | {s['psnr_db']:.2f} | {s['noise_std_hu']:.2f} |")
    means = {}
    for method in next(iter(results.values())):
        means[method] = {k: float(np.mean([results[c][method][k] for c in results])) for k in ("rmse_hu", "psnr_db")}
        print(f"| mean | {method} | {means[method]['rmse_hu']:.2f} | {means[method]['psnr_db']:.2f} | |")
    if args.json:
        Path(args.json).write_text(json.dumps({"cases": results, "mean": means}, indent=2) + "\n")


if __name__ == "__main__":
    main()
