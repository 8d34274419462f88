"""Check the safeguard's SURE terms against the truth on one evaluation row (a case with a reference).

    python training/scripts/diagnose_safeguard.py neck-siemens 0.25 486 [--model training/models/model.pt]

Re-creates the adapted copy of `benchmark_adaptation.py` (seed 0, r2r, the given step count), then, on the
safeguard's own held-out tiles, prints for the default and the copy: the true squared error against the
reference, SURE with the estimated and with the true noise variance, and the share of the noise each model
lets through as measured three ways: by the synthetic probes, by the real-noise probes (the original's
residual on the neighbouring tile), and on the true noise itself (n . (f(y) - x) / |n|^2, which Stein's
identity says the probes estimate). Needs the evaluation data of `benchmark_unseen_ct.py`.
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
from TSCDenoiseLib.adaptation import adapt_model  # noqa: E402
from TSCDenoiseLib.adaptation import safeguard  # noqa: E402
from TSCDenoiseLib.adaptation.adapt import _checked  # noqa: E402
from TSCDenoiseLib.adaptation.finetune import TrainSettings  # noqa: E402
from TSCDenoiseLib.noise.scan_model import estimate_noise_model  # noqa: E402
from TSCDenoiseLib.adaptation.pairs import make_split  # noqa: E402
from TSCDenoiseLib.core.checkpoint import load_model  # noqa: E402


def held_out_references(case: dict, split, held) -> torch.Tensor:
    """The reference tiles at the held-out tiles' positions."""
    tile = split.tile
    return torch.stack([torch.from_numpy(case["ndct"][z, y0:y0 + tile, x0:x0 + tile].astype(np.float32))
                        for z, y0, x0 in held.positions])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("case")
    parser.add_argument("dose", type=float)
    parser.add_argument("steps", type=int)
    parser.add_argument("--model", type=Path, default=REPO / "training" / "models" / "model.pt")
    args = parser.parse_args()
    torch.set_num_threads(1)
    case = next(c for c in unseen.cases() if c["name"] == args.case)
    low = unseen.simulate(case, args.dose)
    model = load_model(args.model, device="cpu")
    copy, _ = adapt_model(low, model, case["spacing"], budget_s=1e6, seed=0, strategy="r2r", steps=args.steps,
                          device="cpu", safeguard=False)
    spacing = case["spacing"]
    settings = _checked(TrainSettings(), "r2r", low.shape, spacing, 1.0, None)
    split = make_split(low.shape, settings.patch)
    noise = estimate_noise_model(low, (float(spacing[1]), float(spacing[0])))
    cpu = torch.device("cpu")
    held = safeguard.held_out_tiles(low, split, noise, torch.Generator().manual_seed(1))
    held = safeguard.with_real_probes(held, model, cpu)
    reference = held_out_references(case, split, held)
    weights = held.weights[:, 0]

    def mean(values: torch.Tensor) -> torch.Tensor:
        return (values * weights).sum(dim=(1, 2)) / weights.sum(dim=(1, 2)).clamp_min(1.0)

    true_noise = held.scans - reference
    true_variance = mean(true_noise**2)
    print(f"{args.case} @ {args.dose}: {held.tiles} held-out tiles; noise variance estimated "
          f"{float(held.noise_var.mean()):.0f}, true {float(true_variance.mean()):.0f} HU^2")
    for name, network in (("default", model), ("copy", copy)):
        scores = safeguard.score(network, held, cpu)
        output = safeguard._denoise_hu(network, held.scans, cpu)
        true_error = mean((output - reference) ** 2)
        at_truth = scores.data - true_variance + 2.0 * scores.divergence * true_variance / held.noise_var
        realized = mean(true_noise * (output - reference)) / true_variance
        print(f"  {name:7s} true error {float(true_error.mean()):8.1f} | SURE {float(scores.risk().mean()):8.1f}, "
              f"at the true variance {float(at_truth.mean()):8.1f} | noise let through: synthetic probes "
              f"{float((scores.divergence / held.noise_var).mean()):.3f}, real-noise probes "
              f"{float(scores.real_pass.mean()):.3f}, on the true noise {float(realized.mean()):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
