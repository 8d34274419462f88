"""Measure "adapt to this scan" on real CT the default model never saw, at simulated low dose with another
kernel than training, against the unadapted model and tuned BM3D.

    PYTHONPATH=. python training/scripts/benchmark_adaptation.py [--data /path/to/training/data]
        [--doses 0.1 0.25] [--strategies r2r noisier sure adjacent] [--budget 90] [--cases NAME ...]
        [--out training/docs/adaptation]     # writes adaptation.json and adaptation.md
        [--steps-from training/docs/adaptation/adaptation.json.gz]  # each row's step count from an earlier run
        [--before REV] [--name STEM]          # also judge each copy with the safeguard at git REV; STEM.json/.md
        [--train-at-auto] [--anchor-weight W] # train at the final pass's strength; the output anchor's weight
        [--max-steps N] [--batch B] [--seed S] [--threads T]  # TrainSettings and adapt_model's seed

The reports committed under training/docs/adaptation are gzipped (`gzip -9 -n STEM.json`) to keep the
repository within the Extensions Index's size limit; `--steps-from` reads either form.

Cases, low-dose simulation (parallel beam, Shepp-Logan filter, electronic noise: not training's fan beam),
BM3D tuning (its cached results) and the figures come from `benchmark_unseen_ct.py`; one more case is the
whole Cranium sample test slab (18 slices of 1.5 mm), where the adjacent-slice strategy applies. Every
strategy is trained with the safeguard off, so the table shows what the fine-tuned copy does ("candidate")
and, separately, what the safeguard chose ("returned": the candidate if it chose it, else the default).
Runs on one thread unless --threads says otherwise; seconds are wall-clock on a shared machine.

A safeguard change is measured on the same fine-tuned copies: `--steps-from` trains each row for the step count
an earlier report gives it (same seed and steps: the same copy, whatever the machine's load; the budget then
does not stop it), and `--before REV` judges each copy also with `safeguard.py` as it was at git revision REV
(a "<strategy> safeguard@REV returned" row, with its verdict and estimate).
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchmark_unseen_ct as unseen  # noqa: E402
from report_files import read_report, write_report  # noqa: E402

from TSCDenoiseLib.adaptation import adapt_model  # noqa: E402
from TSCDenoiseLib.adaptation.adapt import THIN_SLICE_MM, _checked  # noqa: E402
from TSCDenoiseLib.adaptation.finetune import TrainSettings  # noqa: E402
from TSCDenoiseLib.noise.scan_model import estimate_noise_model  # noqa: E402
from TSCDenoiseLib.adaptation.pairs import make_split  # noqa: E402
from TSCDenoiseLib.core.checkpoint import load_model  # noqa: E402
from TSCDenoiseLib.core.inference import denoise_volume  # noqa: E402
from TSCDenoiseLib.noise import choose_strength  # noqa: E402
from TSCDenoiseLib.io import read_ct  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


AUTO_SUFFIX = "at auto strength"  # rows whose final pass ran at the strength "auto" chose for the scan
AUTO_DEFAULT = f"default model {AUTO_SUFFIX}"

def cranium_slab() -> dict:
    volume, geometry = read_ct(REPO / "Resources" / "SampleData" / "cranium" / "ndct_test.nii.gz")
    return {"name": "head-cranium-slab", "anatomy": "head", "ndct": np.maximum(volume, -1024.0).astype(np.float32),
            "spacing": tuple(geometry.spacing), "crop": False}


def mixed_slab(cases: list, depth: int = 16) -> dict:
    """A 16-slice 512 x 512 slab for the time goal: the 512^2 body and head slices (not crops) stacked and
    repeated (each repeat gets its own noise, as `simulate` seeds every slice)."""
    slices = [s for c in cases if not c["crop"] and c["ndct"].shape[1:] == (512, 512) for s in c["ndct"]]
    stack = np.stack([slices[i % len(slices)] for i in range(depth)])
    return {"name": f"mixed-{depth}x512-slab", "anatomy": "body", "ndct": stack, "spacing": (0.9, 0.9, 5.0),
            "crop": False}


def safeguard_at(revision: str) -> types.ModuleType:
    """`TSCDenoiseLib/adaptation/safeguard.py` as it was at a git revision, imported beside today's."""
    source = subprocess.run(["git", "-C", str(REPO), "show", f"{revision}:TSCDenoiseLib/adaptation/safeguard.py"],
                            capture_output=True, text=True, check=True).stdout
    name = f"TSCDenoiseLib.adaptation._safeguard_{revision}"
    module = types.ModuleType(name)
    module.__package__ = "TSCDenoiseLib.adaptation"
    sys.modules[name] = module
    exec(compile(source, f"{revision}:safeguard.py", "exec"), module.__dict__)
    return module


def judge(safeguard: types.ModuleType, low: np.ndarray, model, adapted, spacing, strategy: str, seed: int = 0) -> dict:
    """An old safeguard's verdict on `adapted` against `model`, on the held-out tiles `adapt_model` uses."""
    settings = _checked(TrainSettings(), strategy, low.shape, spacing, 1.0, None)
    noise = estimate_noise_model(low, (float(spacing[1]), float(spacing[0])))
    split = make_split(low.shape, settings.patch)
    held = safeguard.held_out_tiles(low, split, noise, torch.Generator().manual_seed(seed * 1000 + 1))
    if held.tiles < 2:
        return {"verdict": "original", "held_out_tiles": held.tiles}
    device = torch.device("cpu")
    original, candidate = safeguard.score(model, held, device), safeguard.score(adapted, held, device)
    verdict = safeguard.compare(original, candidate)
    conservative = (candidate.risk(safeguard.CONSERVATIVE_VARIANCE) - original.risk(safeguard.CONSERVATIVE_VARIANCE))
    conservative_error = float(conservative.std() / math.sqrt(len(conservative)))
    return {"verdict": "adapted" if verdict.use_adapted else "original", "held_out_tiles": held.tiles,
            "estimated_gain_db": round(verdict.gain_db, 3), "original_risk": round(verdict.original_risk, 2),
            "adapted_risk": round(verdict.adapted_risk, 2), "standard_error": round(verdict.standard_error, 2),
            "conservative_gain": round(verdict.conservative_gain, 2),
            "conservative_standard_error": round(conservative_error, 2)}


def rows_for(case: dict, dose: float, model, strategies, budget: float, bm3d: bool, steps_from: dict | None = None,
             before: types.ModuleType | None = None, before_name: str = "", train_at_auto: bool = False,
             settings: TrainSettings | None = None, seed: int = 0) -> dict:
    low = unseen.simulate(case, dose)
    rows = {"LDCT input": unseen.figures(low, case)}
    cache = unseen.DATA / "eval" / "cache" / f"{case['name']}@{dose}.npz"
    if bm3d or cache.is_file():
        image, _ = unseen.bm3d_tuned(low, case["ndct"], cache)
        rows["BM3D (tuned)"] = unseen.figures(image, case)
    started = time.perf_counter()
    default = denoise_volume(low, model, device="cpu", strength=1.0)
    rows["default model"] = dict(unseen.figures(default, case), seconds=round(time.perf_counter() - started, 1))
    automatic = choose_strength(low, model).strength  # the final pass's strength when the user leaves it at auto
    rows[AUTO_DEFAULT] = dict(unseen.figures(denoise_volume(low, model, device="cpu", strength=automatic), case),
                              strength=automatic)
    for strategy in strategies:
        if strategy == "adjacent" and (low.shape[0] < 3 or case["spacing"][2] > THIN_SLICE_MM):
            continue
        steps = None
        if steps_from is not None:
            earlier = steps_from.get(f"{case['name']}@{dose}", {}).get(f"{strategy} candidate")
            if earlier is None:
                continue
            steps = int(earlier["steps"])
        started = time.perf_counter()
        adapted, report = adapt_model(low, model, case["spacing"], budget_s=budget if steps is None else 1e6, seed=seed,
                                      strategy=strategy, steps=steps, device="cpu", safeguard=False,
                                      strength=automatic if train_at_auto else 1.0, settings=settings)
        image = denoise_volume(low, adapted, device="cpu", strength=1.0)
        seconds = time.perf_counter() - started
        candidate = unseen.figures(image, case)
        at_auto = unseen.figures(denoise_volume(low, adapted, device="cpu", strength=automatic), case)
        rows[f"{strategy} candidate {AUTO_SUFFIX}"] = dict(at_auto, strength=automatic)
        rows[f"{strategy} returned {AUTO_SUFFIX}"] = dict(at_auto if report.verdict == "adapted" else rows[AUTO_DEFAULT],
                                                          verdict=report.verdict, trained_at=report.strength)
        rows[f"{strategy} candidate"] = dict(candidate, seconds=round(seconds, 1), steps=report.steps,
                                             verdict=report.verdict, estimated_gain_db=round(report.gain_db or 0.0, 3),
                                             noise_std_hu=round(report.noise_std_hu or 0.0, 1),
                                             report=report.as_metadata())
        rows[f"{strategy} returned"] = dict(candidate if report.verdict == "adapted" else rows["default model"],
                                            verdict=report.verdict)
        if before is not None:
            old = judge(before, low, model, adapted, case["spacing"], strategy, seed)
            rows[f"{strategy} safeguard@{before_name} returned"] = dict(
                candidate if old["verdict"] == "adapted" else rows["default model"], **old)
    return rows


def markdown(results: dict) -> str:
    lines = ["| case | dose | method | PSNR dB | SSIM | texture freq | high-pass | s | steps | safeguard | est. gain dB |",
             "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |"]
    for key, rows in results.items():
        case, dose = key.rsplit("@", 1)
        for method, f in rows.items():
            lines.append(f"| {case} | {dose} | {method} | {f['psnr_db']:.2f} | {f['ssim']:.4f} | "
                         f"{f.get('texture_frequency_ratio') or float('nan'):.2f} | "
                         f"{f.get('high_pass_std_ratio') or float('nan'):.2f} | {f.get('seconds', '')} | "
                         f"{f.get('steps', '')} | {f.get('verdict', '')} | {f.get('estimated_gain_db', '')} |")
    methods = sorted({m for rows in results.values() for m in rows
                      if m.endswith(("candidate", "returned", AUTO_SUFFIX)) and m != "LDCT input"})
    lines += ["", "PSNR change against the default model (dB, [-160, 240] HU):", "",
              "| case | dose | default vs BM3D | " + " | ".join(methods) + " |",
              "| --- | ---: | ---: |" + " ---: |" * len(methods)]
    for key, rows in results.items():
        case, dose = key.rsplit("@", 1)
        base = rows["default model"]["psnr_db"]
        bm3d = f"{base - rows['BM3D (tuned)']['psnr_db']:+.2f}" if "BM3D (tuned)" in rows else ""
        cells = [f"{rows[m]['psnr_db'] - base:+.2f}" if m in rows else "" for m in methods]
        lines.append(f"| {case} | {dose} | {bm3d} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=REPO / "training" / "models" / "model.pt")
    parser.add_argument("--data", type=Path, default=unseen.DATA, help="training/data with eval/ and pycerr/")
    parser.add_argument("--doses", nargs="+", type=float, default=[0.25, 0.1])
    parser.add_argument("--strategies", nargs="+", default=["r2r", "noisier", "sure", "adjacent"])
    parser.add_argument("--budget", type=float, default=90.0)
    parser.add_argument("--cases", nargs="*", help="case names (default: all)")
    parser.add_argument("--bm3d", action="store_true", help="run BM3D where no cached result exists")
    parser.add_argument("--slab-budget", type=float, default=0.0,
                        help="also time a 16-slice 512^2 slab with this budget (seconds) at the first dose")
    parser.add_argument("--out", type=Path, default=REPO / "training" / "docs" / "adaptation")
    parser.add_argument("--name", default="adaptation", help="output file stem (STEM.json, STEM.md)")
    parser.add_argument("--steps-from", type=Path, help="an earlier report: train each of its rows for its step count "
                                                         "(only those rows)")
    parser.add_argument("--before", metavar="REV", help="also judge each copy with safeguard.py at this git revision")
    parser.add_argument("--train-at-auto", action="store_true",
                        help="train and judge each copy at the strength auto chooses for the scan (the product's "
                             "final pass) instead of 1.0")
    parser.add_argument("--anchor-weight", type=float, default=0.0,
                        help="TrainSettings.anchor_weight: pull the copy's output towards the original's (0 = off)")
    parser.add_argument("--max-steps", type=int, default=TrainSettings.max_steps,
                        help="TrainSettings.max_steps: stop each copy after this many steps (0 = no cap; default: "
                             "the product's)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: the budgets' figures so far)")
    parser.add_argument("--seed", type=int, default=0, help="adapt_model's seed (patches, synthetic noise, probes)")
    parser.add_argument("--batch", type=int, default=TrainSettings.batch, help="TrainSettings.batch (patches per step)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    settings = TrainSettings(anchor_weight=args.anchor_weight, max_steps=args.max_steps or None, batch=args.batch)
    unseen.DATA = args.data
    model = load_model(args.model, device="cpu")
    steps_from = read_report(args.steps_from)["results"] if args.steps_from else None
    before = safeguard_at(args.before) if args.before else None
    cases = unseen.cases() + [cranium_slab()]
    slab = mixed_slab(cases) if args.slab_budget > 0 else None
    if args.cases:
        cases = [c for c in cases if c["name"] in args.cases]
    results: dict = {}
    report = {"model": str(args.model.name), "budget_s": args.budget, "threads": args.threads, "doses": args.doses,
              "trained_at": "auto" if args.train_at_auto else 1.0, "anchor_weight": args.anchor_weight,
              "max_steps": settings.max_steps, "seed": args.seed,
              "batch": settings.batch,
              "noise_model": {k: str(v) for k, v in unseen.EVAL_NOISE.items()}, "results": results}
    if steps_from is not None:  # the budget did not decide the steps; an earlier report did
        report.update(steps_from=args.steps_from.name, safeguard_before=args.before)
    args.out.mkdir(parents=True, exist_ok=True)
    for dose in args.doses:
        for case in cases:
            key = f"{case['name']}@{dose}"
            if steps_from is not None and key not in steps_from:
                continue
            results[key] = rows_for(case, dose, model, args.strategies, args.budget, args.bm3d, steps_from, before,
                                    args.before or "", args.train_at_auto, settings, args.seed)
            print(key, {m: r["psnr_db"] for m, r in results[key].items()}, flush=True)
            write_report(args.out, args.name, report, markdown(results))
    if slab is not None:
        key = f"{slab['name']}@{args.doses[0]}"
        results[key] = rows_for(slab, args.doses[0], model, ["r2r"], args.slab_budget, False,
                                train_at_auto=args.train_at_auto, settings=settings, seed=args.seed)
        print(key, {m: r["psnr_db"] for m, r in results[key].items()}, flush=True)
        write_report(args.out, args.name, report, markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
