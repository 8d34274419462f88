"""The per-scan denoising strength ("auto", the default since bundle 0.4.1), scored on the unseen cases.

    python training/scripts/evaluate_auto_strength.py [--model training/models/model.pt]
        [--out training/docs/benchmark/auto-strength]

The noise-map network conditions on the Immerkaer noise index, which grows with the noise std but also with
how sharp the noise is: per unit of std, sharp-kernel noise has a larger index. On the default's training
pairs the index is k (about 0.54, the median) times the true noise std; on the evaluation's sharp noise it
is up to 0.9 times, so the network reads more noise than there is and over-smooths. The scan's own noise
model (`noise.scan_model`) gives the std per unit index for noise of the scan's texture (from its
NPS), so strength = k x that ratio tells the network the index it would have seen for training-like noise
of the same std. k comes from the training pairs (data/texture and data/wide without pycerr's patients),
never from the evaluation cases, which only score the result; the script checks that it is the k the model
uses. The strength is the product's own (`noise.choose_strength`): a scan whose noise texture cannot be
measured (too little flat soft tissue) runs at 1.0.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "training" / "scripts")]
import benchmark_unseen_ct as unseen  # noqa: E402
from report_files import write_report  # noqa: E402
from TSCDenoiseLib.core.checkpoint import load_model  # noqa: E402
from TSCDenoiseLib.core.inference import denoise_volume  # noqa: E402
from TSCDenoiseLib.noise.strength import (METADATA_KEY, choose_strength, measure_index_per_std,  # noqa: E402
                                          model_index_per_std)
from TSCDenoiseLib.training.data import read_datalist  # noqa: E402

TRAINING_SETS = ("texture", "wide")


def training_pairs(data: Path) -> list:
    """The default's training pairs (data/texture and data/wide, without pycerr's patients)."""
    pairs = []
    for name in TRAINING_SETS:
        for entry in read_datalist(data / name / "datalist.json")["training"]:
            if "chest-pat" not in entry.get("source", ""):  # pycerr's patients: not in the default's training data
                pairs.append(entry)
    return pairs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=REPO / "training" / "models" / "model.pt")
    parser.add_argument("--data", type=Path, default=REPO / "training" / "data")
    parser.add_argument("--out", type=Path, default=REPO / "training" / "docs" / "benchmark" / "auto-strength")
    args = parser.parse_args()
    torch.set_num_threads(1)
    pairs = training_pairs(args.data)
    k = measure_index_per_std(pairs, max_pairs=None)  # all of them: 0.537 over 120 pairs
    pairs = len(pairs)
    model = load_model(args.model, device="cpu")
    recorded = METADATA_KEY in getattr(model, "checkpoint_metadata", {})
    if not recorded and abs(k - model_index_per_std(model)) > 5e-4:  # a recorded k is the model's own, measured
        raise SystemExit(f"k of the training pairs ({k:.4f}) is not the model's ({model_index_per_std(model):.4f})")
    k = model_index_per_std(model)  # what choose_strength uses
    rows = []
    for case in unseen.cases():
        for dose in (0.1, 0.25, 0.5):
            low = unseen.simulate(case, dose)
            choice = choose_strength(low, model)
            strength = choice.strength
            fixed = unseen.figures(denoise_volume(low, model, device="cpu", strength=1.0), case)
            auto = unseen.figures(denoise_volume(low, model, device="cpu", strength=strength), case)
            rows.append({"case": case["name"], "anatomy": case["anatomy"], "dose": dose, "strength": round(strength, 3),
                         "texture_measured": choice.index_to_std is not None,
                         "psnr_db_strength_1": round(fixed["psnr_db"], 3), "psnr_db_auto": round(auto["psnr_db"], 3),
                         "high_pass_ratio_strength_1": fixed["high_pass_std_ratio"],
                         "high_pass_ratio_auto": auto["high_pass_std_ratio"]})
            print(rows[-1], flush=True)
    change = np.array([r["psnr_db_auto"] - r["psnr_db_strength_1"] for r in rows])
    summary = {"k_training_index_per_std": round(k, 3), "k_recorded_in_checkpoint": recorded, "training_pairs": pairs,
               "mean_change_db": round(float(change.mean()), 3), "wins": int((change > 0).sum()), "rows": len(rows)}
    lines = [f"# Per-scan strength from the scan's noise texture ({args.model.name}, unseen cases)", "",
             (f"k = {k:.3f} (recorded in the checkpoint: its own training pairs'). " if recorded else
              f"k = {k:.3f} (median noise index / noise std over {pairs} training pairs). ") + "Strength = k x the scan's "
             "std per unit index (from the NPS of its flattest soft-tissue ROIs), clipped to [0.25, 2]; 1.0 (*) where "
             "the texture could not be measured. PSNR at [-160, 240] HU.", "",
             "| case | dose | strength | PSNR at 1.0 | PSNR auto | change | high-pass 1.0 / auto |",
             "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        lines.append(f"| {r['case']} | {r['dose']:g} | {r['strength']:.2f}{'' if r['texture_measured'] else ' *'} | "
                     f"{r['psnr_db_strength_1']:.2f} | "
                     f"{r['psnr_db_auto']:.2f} | {r['psnr_db_auto'] - r['psnr_db_strength_1']:+.2f} | "
                     f"{r['high_pass_ratio_strength_1']:.2f} / {r['high_pass_ratio_auto']:.2f} |")
    lines += ["", f"Mean change {summary['mean_change_db']:+.2f} dB; auto wins {summary['wins']} of {len(rows)}.", ""]
    write_report(args.out, "auto-strength", {"summary": summary, "rows": rows}, "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
