"""Training throughput with MONAI's CacheDataset vs a plain Dataset, in the same run.

    python Testing/benchmarks/bench_training_data.py [--batches 30] [--steps 10]

Builds the bundle's training transforms on the bundled sample datalist and measures paired patches
per second (a) for the data pipeline alone (DataLoader iteration) and (b) for whole training steps
of the default TSC-Net (teacher step: forward, L1, backward, AdamW), alternating the two datasets so
machine load hits both alike. CacheDataset keeps the loaded, checked volumes in memory; the plain
Dataset reads and checks the NIfTI files for every batch.
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from monai.data import CacheDataset, DataLoader, Dataset
from monai.utils import set_determinism

from TSCDenoiseLib.training.data import read_datalist
from TSCDenoiseLib.networks import TSCNet
from TSCDenoiseLib.training.transforms import training_transforms

DATALIST = Path(__file__).resolve().parents[2] / "Resources" / "SampleData" / "datalist.json"


def forever(loader: DataLoader):
    """Re-iterate the loader (new random patches each pass; itertools.cycle would replay one pass)."""
    while True:
        yield from loader


def patches_per_second(loader: DataLoader, batches: int, step=None) -> float:
    iterator = forever(loader)
    next(iterator)  # warm-up (and CacheDataset's first access)
    started, patches = time.perf_counter(), 0
    for batch in itertools.islice(iterator, batches):
        if step is not None:
            step(batch)
        patches += batch["ndct"].shape[0]
    return patches / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=30, help="batches for the data-only measurement")
    parser.add_argument("--steps", type=int, default=10, help="training steps for the end-to-end measurement")
    parser.add_argument("--patch-size", type=int, default=64)
    parser.add_argument("--patches-per-volume", type=int, default=8)
    args = parser.parse_args()

    set_determinism(0)
    entries = read_datalist(DATALIST)["training"]
    transform = training_transforms(None, args.patch_size, args.patches_per_volume)
    started = time.perf_counter()
    cached = CacheDataset(entries, transform=transform, cache_rate=1.0, progress=False)
    cache_seconds = time.perf_counter() - started
    loaders = {
        "CacheDataset": DataLoader(cached, batch_size=1, shuffle=True),
        "Dataset": DataLoader(Dataset(entries, transform=transform), batch_size=1, shuffle=True),
    }
    network = TSCNet(residual=False)
    optimizer = torch.optim.AdamW(network.parameters(), 5e-4)

    def teacher_step(batch: dict) -> None:
        loss = F.l1_loss(network(batch["ndct"]), batch["ndct"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    print(f"threads {torch.get_num_threads()}; patches {args.patches_per_volume} x {args.patch_size}^2 per batch; "
          f"CacheDataset filled in {cache_seconds:.2f} s")
    data_only = {name: patches_per_second(loader, args.batches) for name, loader in loaders.items()}
    training = {name: [] for name in loaders}
    for _ in range(2):  # alternate to share machine load
        for name, loader in loaders.items():
            training[name].append(patches_per_second(loader, args.steps // 2, teacher_step))
    training = {name: sum(v) / len(v) for name, v in training.items()}
    for title, figures in (("data pipeline only", data_only), ("training steps", training)):
        ratio = figures["CacheDataset"] / figures["Dataset"]
        print(f"{title:20s} CacheDataset {figures['CacheDataset']:8.1f} patches/s   Dataset {figures['Dataset']:8.1f} "
              f"patches/s   ratio {ratio:.2f}x")


if __name__ == "__main__":
    main()
