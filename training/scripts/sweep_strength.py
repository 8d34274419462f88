"""PSNR and texture of models over fixed strengths on unseen cases: is a loss the model's or its strength's?

    python training/scripts/sweep_strength.py NAME=MODEL.pt ... [--cases head-693 ...] [--doses 0.1 0.25 0.5]
        [--strengths 0.7 0.85 1.0 1.2 1.45] [--out FOLDER --name STEM]

Diagnosis only: it scores every given strength on the cases of `benchmark_unseen_ct.py` (same simulated low
dose), beside the strength "auto" picks for that scan. Nothing is chosen from it: the product's strength is
`noise.choose_strength`, whose k comes from the training pairs alone.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "training" / "scripts")]
import benchmark_unseen_ct as unseen  # noqa: E402
from report_files import write_report  # noqa: E402
from TSCDenoiseLib.core.checkpoint import load_model  # noqa: E402
from TSCDenoiseLib.core.inference import denoise_volume  # noqa: E402
from TSCDenoiseLib.noise import choose_strength  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", metavar="NAME=MODEL.pt")
    parser.add_argument("--cases", nargs="*", help="case names (default: all)")
    parser.add_argument("--doses", nargs="+", type=float, default=[0.1, 0.25, 0.5])
    parser.add_argument("--strengths", nargs="+", type=float, default=[0.7, 0.85, 1.0, 1.2, 1.45])
    parser.add_argument("--out", type=Path, help="write STEM.json and STEM.md here")
    parser.add_argument("--name", default="strength-sweep")
    args = parser.parse_args()
    torch.set_num_threads(1)
    models = {name: load_model(path) for name, path in (item.split("=", 1) for item in args.models)}
    header = " | ".join(f"{s:g}" for s in args.strengths)
    lines = ["# PSNR (dB, [-160, 240] HU) / flat-tissue high-pass ratio over fixed strengths", "",
             f"| case | dose | model | auto | {header} |", "| --- | ---: | --- | ---: |" + " ---: |" * len(args.strengths)]
    rows = []
    for case in unseen.cases():
        if args.cases and case["name"] not in args.cases:
            continue
        for dose in args.doses:
            low = unseen.simulate(case, dose)
            for name, model in models.items():
                automatic = choose_strength(low, model).strength
                scores = {}
                for strength in args.strengths:
                    figures = unseen.figures(denoise_volume(low, model, device="cpu", strength=strength), case)
                    scores[strength] = (figures["psnr_db"], figures["high_pass_std_ratio"])
                rows.append({"case": case["name"], "dose": dose, "model": name, "auto": round(automatic, 3),
                             "scores": {f"{s:g}": {"psnr_db": p, "high_pass_std_ratio": h} for s, (p, h) in scores.items()}})
                cells = " | ".join(f"{p:.2f} / {h:.2f}" for p, h in scores.values())
                lines.append(f"| {case['name']} | {dose:g} | {name} | {automatic:.2f} | {cells} |")
                print(lines[-1], flush=True)
    if args.out is not None:
        write_report(args.out, args.name, {"models": args.models, "rows": rows}, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
