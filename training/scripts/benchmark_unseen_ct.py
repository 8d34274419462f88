"""Benchmark denoisers on real CT never used in training, per anatomy and per dose, against tuned BM3D.

    pip install bm3d pydicom-data        # evaluation only: bm3d's licence is non-commercial
    python training/scripts/benchmark_unseen_ct.py MODEL.pt [MODEL.pt ...] [--doses 0.1 0.25 0.5]
        [--out training/docs/benchmark]  # writes benchmark.json and benchmark.md

Cases (normal dose = reference): heads from pydicom (J2K_pixelrep_mismatch, 0.43 mm) and pydicom-data
(693_UNCI, 0.48 mm) and 4 slices of the sample's test slab; neck (pydicom-data bad_sequence, Siemens,
0.29 mm); chest (pycerr's scan.nii, 3 contrast slices, 1.17 mm; dicompyler-core's ct.0.dcm, thoracic
inlet); abdomen/other body (pydicom-data explicit_VR-UN, pancreas, 0.86 mm; pydicom's CT_small, a GE
spine crop). Low dose comes from an evaluation noise model that differs from training's: parallel
beam (no rebinning), electronic noise variance 20, Shepp-Logan filter, I0 set for the same noise level
at the same dose in a water ellipse; crops are placed in a 34 cm body.
Rows: the input, BM3D with sigma tuned per case against the reference, curvature anisotropic
diffusion tuned the same way, and each model. Figures: PSNR/SSIM at [-160, 240] HU and PSNR at the
anatomy's reading window (Eulig et al. 2024: chest C-600/W1500, abdomen C50/W400, neuro C40/W80),
RMSE, noise std and bias in flat tissue, and texture against the reference: mean frequency of the
image NPS and the high-pass std in flat tissue, each as a ratio to the reference's (1 = same).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

from TSCDenoiseLib.core.checkpoint import load_model
from TSCDenoiseLib.core.inference import denoise_volume
from TSCDenoiseLib.core.volume_checks import parse_strength
from TSCDenoiseLib.core.metrics import SOFT_TISSUE_WINDOW, flat_soft_tissue_mask, psnr, ssim
from TSCDenoiseLib.evaluation.baselines import anisotropic_diffusion
from TSCDenoiseLib.evaluation.scoring import roi_spectrum, score, texture_rois
from TSCDenoiseLib.io import read_ct
from TSCDenoiseLib.training.acquisition import body_around
from TSCDenoiseLib.training.simulation import LowDoseParameters, LowDoseSimulator, ParallelBeamGeometry
import report_files

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "training" / "data"
READING_WINDOWS = {"head": (0.0, 80.0), "neck": (-150.0, 250.0), "chest": (-1350.0, 150.0), "body": (-150.0, 250.0)}
# Parallel beam without fan rebinning (training: fan beam, rebinned), another filter and electronic noise; I0
# calibrated so that a 30 x 22 cm water ellipse gets the training model's noise std at the same dose (+6 %).
EVAL_NOISE = dict(incident_flux=5.0e5, electronic_noise_variance=20.0, fbp_filter="shepp-logan",
                  geometry=ParallelBeamGeometry(detector_bins=736, detector_spacing_mm=0.7, views=1152))
CROP_BODY_WIDTH_MM = 340.0
SEED = 4242


def _dicompyler_ct() -> Path:
    target = DATA / "eval" / "dicompyler_ct.0.dcm"
    if not target.is_file():
        with tempfile.TemporaryDirectory() as folder:
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--quiet",
                            "-d", folder, "dicompyler-core==0.5.6"], check=True)
            with tarfile.open(next(Path(folder).glob("dicompyler-core-*.tar.gz"))) as archive:
                member = next(m for m in archive.getmembers() if m.name.endswith("example_data/ct.0.dcm"))
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(archive.extractfile(member).read())
    return target


def _pydicom_data(name: str) -> Path:
    import data_store  # pydicom-data

    return Path(data_store.__file__).parent / "data" / name


def cases() -> list[dict]:
    from pydicom.data import get_testdata_file

    found = [  # body first: the default model's weakest part
        ("chest-pycerr-scan", "chest", DATA / "pycerr" / "sample_ct" / "dosimetric_model_test_data" / "scan.nii", None),
        ("chest-dicompyler", "chest", _dicompyler_ct(), None),
        ("body-pancreas", "body", _pydicom_data("explicit_VR-UN.dcm"), None),
        ("body-spine-crop", "body", Path(get_testdata_file("CT_small.dcm")), None),
        ("neck-siemens", "neck", _pydicom_data("bad_sequence.dcm"), None),
        ("head-J2K_pixelrep", "head", Path(get_testdata_file("J2K_pixelrep_mismatch.dcm")), None),
        ("head-693", "head", _pydicom_data("693_UNCI.dcm"), None),
        ("head-cranium-test", "head", REPO / "Resources" / "SampleData" / "cranium" / "ndct_test.nii.gz", slice(4, 18, 9)),
    ]
    loaded = []
    for name, anatomy, path, z in found:
        if not path.exists():
            print(f"skip {name}: {path} missing", file=sys.stderr)
            continue
        volume, geometry = read_ct(path)
        volume = np.maximum(volume if z is None else volume[z], -1024.0).astype(np.float32)
        spacing = float(geometry.spacing[0])
        fov = spacing * max(volume.shape[1:])
        loaded.append({"name": name, "anatomy": anatomy, "ndct": volume, "spacing": tuple(geometry.spacing),
                       "crop": fov < 200.0})
    return loaded


def simulate(case: dict, dose: float, fbp_filter: str = EVAL_NOISE["fbp_filter"]) -> np.ndarray:
    """The case's low-dose slices under the evaluation noise model; cached, as simulating is the slow part."""
    cache = DATA / "eval" / "cache" / f"ldct-{case['name']}@{dose}-{fbp_filter}.npy"
    if cache.is_file():
        return np.load(cache)
    noise = {**EVAL_NOISE, "fbp_filter": fbp_filter}
    simulator = LowDoseSimulator(LowDoseParameters(dose_fraction=dose, **noise), threads=2)
    spacing = case["spacing"][0]
    streams = np.random.SeedSequence([SEED, int(dose * 1000)]).spawn(case["ndct"].shape[0])
    surrounding = None
    if case["crop"]:
        surrounding = simulator.line_integrals(*body_around(case["ndct"].shape[1:], spacing, CROP_BODY_WIDTH_MM))
    low = np.stack([simulator.simulate_slice(slice_hu, spacing, np.random.default_rng(streams[z]), surrounding)
                    for z, slice_hu in enumerate(case["ndct"])])
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache, low)
    return low


def _bm3d(volume: np.ndarray, sigma_hu: float) -> np.ndarray:
    import bm3d

    scale = 1000.0
    return np.stack([bm3d.bm3d(s / scale, sigma_hu / scale) * scale for s in volume]).astype(np.float32)


def bm3d_tuned(low: np.ndarray, reference: np.ndarray, cache: Path) -> tuple[np.ndarray, dict]:
    """BM3D per slice with its sigma (HU) chosen against the reference (the best case for BM3D).

    Sigma is tuned on the central 192 x 192 pixels (BM3D takes ~10 s per 512 x 512 slice here), then
    applied to the whole slices; the result is cached, as it does not depend on the models.
    """
    if cache.is_file():
        stored = np.load(cache)
        return stored["image"], {"sigma_hu": float(stored["sigma_hu"])}
    flat = flat_soft_tissue_mask(reference)
    noise = float(np.std((low - reference)[flat])) if flat.any() else float(np.std(low - reference))
    rows, cols = low.shape[1:]
    centre = (slice(None), slice(max(0, rows // 2 - 96), rows // 2 + 96), slice(max(0, cols // 2 - 96), cols // 2 + 96))
    best = None
    for factor in (0.5, 0.7, 0.9, 1.15):
        value = psnr(_bm3d(low[centre], noise * factor), reference[centre], SOFT_TISSUE_WINDOW)
        if best is None or value > best[0]:
            best = (value, noise * factor)
    image = _bm3d(low, best[1])
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, image=image, sigma_hu=best[1])
    return image, {"sigma_hu": round(best[1], 2)}


def diffusion_tuned(low: np.ndarray, reference: np.ndarray, spacing) -> tuple[np.ndarray, dict]:
    best = None
    for conductance in (0.25, 0.5, 1.0):
        for iterations in (3, 5, 10):
            image = anisotropic_diffusion(low, spacing, conductance, iterations)
            value = psnr(image, reference, SOFT_TISSUE_WINDOW)
            if best is None or value > best[0]:
                best = (value, image, {"conductance": conductance, "iterations": iterations})
    return best[1], best[2]


def _high_pass_std(image: np.ndarray, mask: np.ndarray) -> float:
    from scipy.ndimage import gaussian_filter

    image = image.astype(np.float32)
    return float(np.std((image - gaussian_filter(image, (0, 2, 2)))[mask]))


def figures(image: np.ndarray, case: dict) -> dict:
    reference, spacing = case["ndct"], case["spacing"]
    out = {k: v for k, v in score(image, reference, spacing).items()
           if k in ("psnr_db", "ssim", "rmse_hu", "noise_std_hu", "bias_hu")}
    window = READING_WINDOWS[case["anatomy"]]
    out["psnr_reading_db"] = psnr(image, reference, window)
    out["ssim_reading"] = ssim(image, reference, window)
    rois = texture_rois(reference)
    flat = flat_soft_tissue_mask(reference)
    if rois:
        mine, ref = roi_spectrum(image, rois, spacing), roi_spectrum(reference, rois, spacing)
        if mine.mean_frequency and ref.mean_frequency:
            out["texture_frequency_ratio"] = mine.mean_frequency / ref.mean_frequency
    if flat.any():
        out["high_pass_std_ratio"] = _high_pass_std(image, flat) / max(_high_pass_std(reference, flat), 1e-6)
    return {k: (round(float(v), 4) if v is not None else None) for k, v in out.items()}


def markdown(results: dict, methods: list) -> str:
    lines = ["| case | dose | method | PSNR dB | PSNR reading | SSIM | RMSE HU | noise HU | texture freq | high-pass |",
             "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for key, rows in results.items():
        case, dose = key.rsplit("@", 1)
        for method in methods:
            f = rows[method]
            lines.append(f"| {case} | {dose} | {method} | {f['psnr_db']:.2f} | {f['psnr_reading_db']:.2f} | "
                         f"{f['ssim']:.4f} | {f['rmse_hu']:.2f} | {f['noise_std_hu']:.2f} | "
                         f"{f.get('texture_frequency_ratio') or float('nan'):.2f} | {f.get('high_pass_std_ratio') or float('nan'):.2f} |")
    lines += ["", "Mean PSNR (dB, [-160, 240] HU) per anatomy and dose:", "",
              "| anatomy | dose | " + " | ".join(methods) + " |", "| --- | ---: |" + " ---: |" * len(methods)]
    groups: dict = {}
    for key, rows in results.items():
        case, dose = key.rsplit("@", 1)
        anatomy = case.split("-")[0]
        groups.setdefault((anatomy, dose), []).append(rows)
    for (anatomy, dose), rows in sorted(groups.items()):
        means = [np.mean([r[m]["psnr_db"] for r in rows]) for m in methods]
        lines.append(f"| {anatomy} | {dose} | " + " | ".join(f"{v:.2f}" for v in means) + " |")
    return "\n".join(lines) + "\n"


def write_report(out: Path, doses, results: dict, settings: dict, seconds: dict, fbp_filter: str,
                 strength: str = "auto") -> None:
    methods = list(next(iter(results.values())))
    report = {"doses": doses, "noise_model": {k: str(v) for k, v in {**EVAL_NOISE, "fbp_filter": fbp_filter}.items()},
              "strength": strength, "results": results,
              "tuned_settings": settings, "seconds": seconds}
    report_files.write_report(out, "benchmark", report, markdown(results, methods))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", type=Path)
    parser.add_argument("--doses", nargs="+", type=float, default=[0.1, 0.25, 0.5])
    parser.add_argument("--out", type=Path, default=REPO / "training" / "docs" / "benchmark")
    parser.add_argument("--no-baselines", action="store_true", help="models only (reuses nothing)")
    parser.add_argument("--no-diffusion", action="store_true", help="BM3D (cached per case) without the diffusion row")
    parser.add_argument("--fbp-filter", default=EVAL_NOISE["fbp_filter"],
                        help="reconstruction filter of the evaluation noise (training: ram-lak ... hann; "
                             "'blackman' is smoother than any of them)")
    parser.add_argument("--strength", default="auto",
                        help="the models' strength: auto (the product's default since bundle 0.4.1) or a number; "
                             "the reports made before 0.4.1 ran at 1.0")
    args = parser.parse_args()
    strength = parse_strength(args.strength)
    models = {path.stem: load_model(path, device="cpu") for path in args.models}
    results, settings, seconds = {}, {}, {}
    loaded = cases()
    for dose in args.doses:  # every case at the first dose first: a run cut short still covers it
        for case in loaded:
            key = f"{case['name']}@{dose}"
            low = simulate(case, dose, args.fbp_filter)
            filter_tag = "" if args.fbp_filter == EVAL_NOISE["fbp_filter"] else f"-{args.fbp_filter}"
            rows = {"LDCT input": figures(low, case)}
            if not args.no_baselines:
                started = time.perf_counter()
                image, settings[f"{key} BM3D"] = bm3d_tuned(low, case["ndct"], DATA / "eval" / "cache" / f"{key}{filter_tag}.npz")
                seconds["BM3D (tuned)"] = seconds.get("BM3D (tuned)", 0.0) + time.perf_counter() - started
                rows["BM3D (tuned)"] = figures(image, case)
                if not args.no_diffusion:
                    image, settings[f"{key} diffusion"] = diffusion_tuned(low, case["ndct"], case["spacing"])
                    rows["anisotropic diffusion (tuned)"] = figures(image, case)
            for label, model in models.items():
                started = time.perf_counter()
                rows[label] = figures(denoise_volume(low, model, device="cpu", strength=strength), case)
                seconds[label] = seconds.get(label, 0.0) + time.perf_counter() - started
            results[key] = rows
            print(key, {m: r["psnr_db"] for m, r in rows.items()}, flush=True)
            write_report(args.out, args.doses, results, settings, seconds, args.fbp_filter,  # after each case: partial
                         str(strength))  # runs count
    print(markdown(results, list(next(iter(results.values())))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
