"""Train the interim default student (pixel L1 only) on the bundled sample data.

    python training/scripts/train_interim_student.py --out training/models/model.pt [--steps 800]

A stop-gap so that `load_model()` and the demo work offline before the MONAI bundle (teacher, then
student with knowledge transfer and contrastive regularization) trains the real default weights.
It is the paper's "no KT, no CRM" ablation, short, on CPU, on the bundled head CT's training slab
(simulated quarter dose), and says so in the checkpoint's metadata.
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from TSCDenoiseLib.checkpoint import save_model
from TSCDenoiseLib.data import read_datalist, training_loader
from TSCDenoiseLib.inference import denoise_volume
from TSCDenoiseLib.intensity import HUWindow
from TSCDenoiseLib.io import read_ct
from TSCDenoiseLib.metrics import rmse
from TSCDenoiseLib.networks import TSCNet

SAMPLE_DATALIST = Path(__file__).resolve().parents[2] / "Resources" / "SampleData" / "datalist.json"


def phantom_entries(count: int, work_dir: Path, seed: int) -> list:
    """``count`` procedural phantom volumes (2 torso : 1 head) with cached simulated quarter dose."""
    from TSCDenoiseLib.data import presimulate_pairs
    from TSCDenoiseLib.io import VolumeGeometry, write_ct
    from TSCDenoiseLib.phantom import make_phantom

    work_dir.mkdir(parents=True, exist_ok=True)
    entries = []
    for index in range(count):
        kind = "head" if index % 3 == 2 else "torso"
        spacing = (1.0, 1.0, 5.0) if kind == "head" else (1.5, 1.5, 5.0)
        path = work_dir / f"phantom_{kind}_{seed + index}.nii.gz"
        if not path.exists():
            volume = make_phantom((16, 256, 256), kind, spacing, seed=seed + index)
            write_ct(volume, VolumeGeometry(spacing=spacing), path)
        entries.append({"ndct": str(path)})
    return presimulate_pairs(entries, work_dir / "ldct_cache", dose=0.25, seed=seed)


def validation_rmse(model: TSCNet, entries: list) -> dict:
    """RMSE (HU) of the low-dose input and of the model's output against NDCT, over the validation volumes."""
    low, high, out = [], [], []
    for entry in entries:
        ldct, _ = read_ct(entry["ldct"])
        ndct, _ = read_ct(entry["ndct"])
        low.append(ldct), high.append(ndct), out.append(denoise_volume(ldct, model, slab_size=1, device="cpu"))
    low, high, out = (np.concatenate(v) for v in (low, high, out))
    return {"ldct_rmse_hu": rmse(low, high), "model_rmse_hu": rmse(out, high)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--datalist", default=str(SAMPLE_DATALIST))
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--phantoms", type=int, default=0, help="add this many procedural phantom volumes")
    parser.add_argument("--phantom-dir", default="phantom-cache", help="where phantoms and their simulations are cached")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--patch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    from monai.utils import set_determinism

    set_determinism(args.seed)
    window = HUWindow()
    datalist = read_datalist(args.datalist)
    entries = list(datalist["training"])
    if args.phantoms:
        entries += phantom_entries(args.phantoms, Path(args.phantom_dir), args.seed)
    _, loader = training_loader(entries, window, patch_size=args.patch, samples_per_volume=args.batch,
                                batch_size=1)
    batches = itertools.chain.from_iterable(itertools.repeat(loader))

    model = TSCNet()
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, args.steps)
    started, running = time.perf_counter(), []
    for step in range(1, args.steps + 1):
        batch = next(batches)
        low, high = batch["ldct"], batch["ndct"]
        loss = F.l1_loss(model(low), high)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        running.append(loss.item())
        if step % 50 == 0 or step == args.steps:
            print(f"step {step}/{args.steps} L1 {np.mean(running) * window.width:.1f} HU "
                  f"({time.perf_counter() - started:.0f} s)", flush=True)
            running = []
    train_seconds = time.perf_counter() - started
    scores = validation_rmse(model.eval(), datalist.get("validation", []))
    print(f"validation: LDCT RMSE {scores['ldct_rmse_hu']:.1f} HU -> model {scores['model_rmse_hu']:.1f} HU")
    save_model(model, args.out, role="student", hu_window=window, overwrite=args.overwrite,
               recipe="interim: pixel L1 only (no KT, no CRM), bundled Cranium training slab"
               + (f" + {args.phantoms} procedural phantoms" if args.phantoms else "") + ", simulated quarter dose",
               steps=args.steps, batch=args.batch, patch=args.patch, seed=args.seed, lr=args.lr,
               train_seconds=round(train_seconds), **{k: round(v, 2) for k, v in scores.items()})
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
