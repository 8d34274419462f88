"""A per-scan denoising strength from the scan's own noise texture, scored on the unseen cases (not shipped).

    python training/scripts/evaluate_auto_strength.py [--model training/models/model.pt]
        [--out training/docs/benchmark/auto-strength]

The noise-map network conditions on the Immerkaer noise index, which grows with the noise std but also with
how sharp the noise is: per unit of std, sharp-kernel noise has a larger index. On the default's training
pairs the index is k (about 0.54, the median) times the true noise std; on the evaluation's sharp noise it
is up to 0.9 times, so the network reads more noise than there is and over-smooths. The scan's own noise
model (`adaptation.noise_model`) gives the std per unit index for noise of the scan's texture (from its
NPS), so strength = k x that ratio tells the network the index it would have seen for training-like noise
of the same std. k comes from the training pairs (data/texture and data/wide without pycerr's patients),
never from the evaluation cases, which only score the result.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "training" / "scripts")]
import benchmark_unseen_ct as unseen  # noqa: E402
from TSCDenoiseLib.adaptation.noise_model import estimate_noise_model  # noqa: E402
from TSCDenoiseLib.core.checkpoint import load_model  # noqa: E402
from TSCDenoiseLib.core.inference import denoise_volume  # noqa: E402
from TSCDenoiseLib.networks.noise_level import estimate_noise_level  # noqa: E402

TRAINING_SETS = ("texture", "wide")
WINDOW = (-1024.0, 4096.0)  # the default's HU window: offset and width of its normalization
STRENGTH_RANGE = (0.25, 2.0)


def noise_index_hu(volume_hu: np.ndarray) -> float:
    """The network's noise index of a (Z, Y, X) volume, in HU (mean over slices)."""
    x = torch.from_numpy(((np.asarray(volume_hu, np.float32) - WINDOW[0]) / WINDOW[1])[:, None])
    return float((estimate_noise_level(x) * WINDOW[1]).mean())


def training_index_per_std(data: Path) -> tuple[float, int]:
    """Median over the training pairs of noise index / true noise std in soft tissue, and the pair count."""
    ratios = []
    for name in TRAINING_SETS:
        root = data / name
        for entry in json.loads((root / "datalist.json").read_text())["training"]:
            if "chest-pat" in entry["source"]:  # pycerr's patients: not in the default's training data
                continue
            ndct, ldct = (np.moveaxis(np.asarray(nib.load(str(root / entry[k])).dataobj, np.float32), -1, 0)
                          for k in ("ndct", "ldct"))
            tissue = (ndct > -150) & (ndct < 150)
            std = float((ldct - ndct)[tissue].std())
            if std > 1.0:
                ratios.append(noise_index_hu(ldct) / std)
    return float(np.median(ratios)), len(ratios)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=REPO / "training" / "models" / "model.pt")
    parser.add_argument("--data", type=Path, default=REPO / "training" / "data")
    parser.add_argument("--out", type=Path, default=REPO / "training" / "docs" / "benchmark" / "auto-strength")
    args = parser.parse_args()
    torch.set_num_threads(1)
    k, pairs = training_index_per_std(args.data)
    model = load_model(args.model, device="cpu")
    rows = []
    for case in unseen.cases():
        for dose in (0.1, 0.25, 0.5):
            low = unseen.simulate(case, dose)
            spacing = case["spacing"]
            per_index = estimate_noise_model(low, (spacing[1], spacing[0])).index_to_std
            strength = float(np.clip(k * per_index, *STRENGTH_RANGE))
            fixed = unseen.figures(denoise_volume(low, model, device="cpu"), case)
            auto = unseen.figures(denoise_volume(low, model, device="cpu", strength=strength), case)
            rows.append({"case": case["name"], "anatomy": case["anatomy"], "dose": dose, "strength": round(strength, 3),
                         "psnr_db_strength_1": round(fixed["psnr_db"], 3), "psnr_db_auto": round(auto["psnr_db"], 3),
                         "high_pass_ratio_strength_1": fixed["high_pass_std_ratio"],
                         "high_pass_ratio_auto": auto["high_pass_std_ratio"]})
            print(rows[-1], flush=True)
    change = np.array([r["psnr_db_auto"] - r["psnr_db_strength_1"] for r in rows])
    summary = {"k_training_index_per_std": round(k, 3), "training_pairs": pairs,
               "mean_change_db": round(float(change.mean()), 3), "wins": int((change > 0).sum()), "rows": len(rows)}
    lines = ["# Per-scan strength from the scan's noise texture (default model, unseen cases)", "",
             f"k = {k:.3f} (median noise index / noise std over {pairs} training pairs). Strength = k x the scan's "
             "std per unit index (its noise model), clipped to [0.25, 2]. PSNR at [-160, 240] HU.", "",
             "| case | dose | strength | PSNR at 1.0 | PSNR auto | change | high-pass 1.0 / auto |",
             "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        lines.append(f"| {r['case']} | {r['dose']:g} | {r['strength']:.2f} | {r['psnr_db_strength_1']:.2f} | "
                     f"{r['psnr_db_auto']:.2f} | {r['psnr_db_auto'] - r['psnr_db_strength_1']:+.2f} | "
                     f"{r['high_pass_ratio_strength_1']:.2f} / {r['high_pass_ratio_auto']:.2f} |")
    lines += ["", f"Mean change {summary['mean_change_db']:+.2f} dB; auto wins {summary['wins']} of {len(rows)}.", ""]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "auto-strength.json").write_text(json.dumps({"summary": summary, "rows": rows}, indent=1) + "\n")
    (args.out / "auto-strength.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
