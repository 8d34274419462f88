"""How far should "adapt to this scan" train? PSNR of the fine-tuned copy against its step count, on cases that
are not in the adaptation benchmark's table, so that a step cap can be chosen without looking at it.

    PYTHONPATH=. python training/scripts/adaptation_steps_curve.py [--steps 100 250 600 1500] [--doses 0.25]
        [--head-phantom] [--threads 2] [--out training/docs/adaptation] [--name steps-curve]
        # writes STEM.json and STEM.md

Cases: the Cranium sample's validation slab (12 slices of 1.5 mm; the training source's validation split, never
trained on), two 512^2 torso phantoms from the training generator with seeds outside its training and
validation ranges (abdomen and chest) and, with `--head-phantom`, a 512^2 head phantom of a third such seed.
Low dose is simulated as in `benchmark_unseen_ct.py` (parallel beam, Shepp-Logan, electronic noise: not
training's noise model). Each step count is its own run from the original model, seed 0, trained and scored at
the strength "auto" chooses, so every row's copy is the one `adapt_model` would make had its budget stopped it
after that many steps. Each row also records the safeguard's verdict on that copy and what the product would
return (the copy's change when the safeguard keeps it, else 0), and the report names the step count the
fixed rule picks (`choose_cap`).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchmark_unseen_ct as unseen  # noqa: E402
from report_files import write_report  # noqa: E402

from TSCDenoiseLib.adaptation import TrainSettings, adapt_model  # noqa: E402
from TSCDenoiseLib.core.checkpoint import load_model  # noqa: E402
from TSCDenoiseLib.core.inference import denoise_volume  # noqa: E402
from TSCDenoiseLib.io import read_ct  # noqa: E402
from TSCDenoiseLib.noise import choose_strength  # noqa: E402
from TSCDenoiseLib.training.phantom import make_phantom  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
# name: (kind, seed, z_start, pixel mm); the training generator's seeds are 100 and up
PHANTOMS = {"phantom-abdomen": ("torso", 9001, 0.1, 0.8), "phantom-chest": ("torso", 9002, 0.9, 0.8),
            "phantom-head": ("head", 9003, 0.5, 0.5)}
TIE_DB = 0.01  # mean returned changes this close count as equal


def curve_cases(head_phantom: bool = False) -> list[dict]:
    volume, geometry = read_ct(REPO / "Resources" / "SampleData" / "cranium" / "ndct_validation.nii.gz")
    cases = [{"name": "head-cranium-validation", "anatomy": "head", "crop": False,
              "ndct": np.maximum(volume, -1024.0).astype(np.float32), "spacing": tuple(geometry.spacing)}]
    for name, (kind, seed, z_start, pixel) in PHANTOMS.items():
        if kind == "head" and not head_phantom:
            continue
        spacing = (pixel, pixel, 5.0)
        ndct = make_phantom((1, 512, 512), kind, spacing, seed=seed, z_start=z_start)
        cases.append({"name": name, "anatomy": "body" if kind == "torso" else "head", "crop": False,
                      "ndct": ndct.astype(np.float32), "spacing": spacing})
    return cases


def curve(case: dict, dose: float, model, steps: list[int], seed: int = 0,
          settings: TrainSettings | None = None) -> dict:
    low = unseen.simulate(case, dose)
    strength = choose_strength(low, model).strength
    default = unseen.figures(denoise_volume(low, model, device="cpu", strength=strength), case)
    rows = {"LDCT input": unseen.figures(low, case), "default model at auto strength": dict(default, strength=strength)}
    for count in steps:
        started = time.perf_counter()
        adapted, report = adapt_model(low, model, case["spacing"], budget_s=1e6, seed=seed, steps=count, device="cpu",
                                      safeguard=False, strength=strength, settings=settings)
        figures = unseen.figures(denoise_volume(low, adapted, device="cpu", strength=strength), case)
        change = round(figures["psnr_db"] - default["psnr_db"], 3)
        rows[f"copy after {count} steps"] = dict(
            figures, steps=report.steps, seconds=round(time.perf_counter() - started, 1), change_db=change,
            verdict=report.verdict, reason=report.reason, estimated_gain_db=round(report.gain_db, 3),
            returned_change_db=change if report.verdict == "adapted" else 0.0)
    return rows


def choose_cap(results: dict, steps: list[int]) -> dict:
    """The step count with the best mean returned change over the curve rows (what the product gives with
    its safeguard on); within TIE_DB, the best mean change of the copies themselves (what a wrong verdict
    costs), then the fewest steps.

    Returns:
        {"steps": the chosen count, "mean_returned_db": {count: mean}, "mean_copy_db": {count: mean}}.
    """
    def mean(count: int, field: str) -> float:
        values = [rows[f"copy after {count} steps"][field] for rows in results.values()]
        return float(np.mean(values)) if values else 0.0

    returned = {n: round(mean(n, "returned_change_db"), 3) for n in steps}
    copies = {n: round(mean(n, "change_db"), 3) for n in steps}
    best = max(returned.values())
    tied = [n for n in steps if returned[n] >= best - TIE_DB]
    chosen = min(tied, key=lambda n: (-copies[n], n))
    return {"steps": chosen, "mean_returned_db": returned, "mean_copy_db": copies}


def markdown(results: dict, steps: list[int]) -> str:
    lines = ["| case @ dose | default at auto | " + " | ".join(f"{n} steps" for n in steps) + " |",
             "| --- | ---: | " + " | ".join("---:" for _ in steps) + " |"]
    for key, rows in results.items():
        default = rows["default model at auto strength"]
        changes = " | ".join(_cell(rows[f"copy after {n} steps"]) for n in steps)
        lines.append(f"| {key.replace('@', ' @ ')} | {default['psnr_db']:.2f} ({default['strength']:.2f}) | {changes} |")
    cap = choose_cap(results, steps)
    lines += ["", "Change in PSNR (dB, [-160, 240] HU) of the copy against the default at auto; in brackets the "
              "safeguard's verdict (kept / rejected) and its estimated held-out gain.", "",
              "| mean over the rows | " + " | ".join(f"{n} steps" for n in steps) + " |",
              "| --- | " + " | ".join("---:" for _ in steps) + " |",
              "| copy | " + " | ".join(f"{cap['mean_copy_db'][n]:+.3f}" for n in steps) + " |",
              "| returned (safeguard on) | " + " | ".join(f"{cap['mean_returned_db'][n]:+.3f}" for n in steps) + " |",
              "", f"Chosen by `choose_cap` (best mean returned, ties within {TIE_DB} dB to the best mean copy): "
              f"**{cap['steps']} steps**."]
    return "\n".join(lines) + "\n"


def _cell(row: dict) -> str:
    verdict = "kept" if row["verdict"] == "adapted" else "rejected"
    return f"{row['change_db']:+.2f} ({verdict}, {row['estimated_gain_db']:+.2f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=REPO / "training" / "models" / "model.pt")
    parser.add_argument("--data", type=Path, default=unseen.DATA, help="folder for the low-dose cache (eval/cache)")
    parser.add_argument("--steps", type=int, nargs="+", default=[100, 250, 600, 1500])
    parser.add_argument("--doses", type=float, nargs="+", default=[0.25])
    parser.add_argument("--head-phantom", action="store_true", help="add a 512^2 head phantom (seed 9003)")
    parser.add_argument("--seed", type=int, default=0, help="adapt_model's seed")
    parser.add_argument("--batch", type=int, default=TrainSettings.batch, help="TrainSettings.batch (patches per step)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "training" / "docs" / "adaptation")
    parser.add_argument("--name", default="steps-curve")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    unseen.DATA = args.data
    model = load_model(args.model, device="cpu")
    results: dict = {}
    settings = TrainSettings(batch=args.batch)
    report = {"model": args.model.name, "doses": args.doses, "seed": args.seed, "batch": args.batch,
              "threads": args.threads, "steps": args.steps,
              "noise_model": {k: str(v) for k, v in unseen.EVAL_NOISE.items()}, "results": results}
    for dose in args.doses:
        for case in curve_cases(args.head_phantom):
            key = f"{case['name']}@{dose}"
            results[key] = curve(case, dose, model, args.steps, args.seed, settings)
            print(key, {m: (r.get("change_db"), r.get("verdict")) for m, r in results[key].items()}, flush=True)
            report["chosen_cap"] = choose_cap(results, args.steps)
            write_report(args.out, args.name, report, markdown(results, args.steps))
    return 0


if __name__ == "__main__":
    sys.exit(main())
