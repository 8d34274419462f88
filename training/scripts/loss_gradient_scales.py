"""Gradient norm of each student loss term at initialization, to choose lambda_kt and lambda_cr.

    python training/scripts/loss_gradient_scales.py --teacher training/models/teacher.pt [--batches 4]

For a fresh student (seeded) and a few training batches of the bundled sample data, prints the value
of the pixel L1, knowledge-transfer and contrastive terms and the norm of each one's gradient with
respect to the student's weights. The bundle's defaults put each auxiliary term's gradient at a
fraction of the pixel term's, so neither drowns the reconstruction loss.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import torch
import torch.nn.functional as F

from TSCDenoiseLib.core.checkpoint import load_model
from TSCDenoiseLib.training.data import read_datalist, training_loader
from TSCDenoiseLib.training.losses import ContrastiveRegularization, DEFAULT_CR_WEIGHTS, KnowledgeTransferLoss
from TSCDenoiseLib.networks import TSCNet

SAMPLE_DATALIST = Path(__file__).resolve().parents[2] / "Resources" / "SampleData" / "datalist.json"


def gradient_norm(loss: torch.Tensor, parameters: list) -> float:
    grads = torch.autograd.grad(loss, parameters, retain_graph=True, allow_unused=True)
    return float(torch.sqrt(sum((g.double() ** 2).sum() for g in grads if g is not None)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--datalist", default=str(SAMPLE_DATALIST))
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--kt-weights", type=float, nargs="+", default=[0, 0, 1, 1, 1, 0, 0])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from monai.utils import set_determinism

    set_determinism(args.seed)
    teacher = load_model(args.teacher, "cpu")
    student = TSCNet(**{**teacher.config, "residual": True})
    parameters = [p for p in student.parameters() if p.requires_grad]
    _, loader = training_loader(read_datalist(args.datalist)["training"], teacher.hu_window, batch_size=1)
    kt = KnowledgeTransferLoss("l1", args.kt_weights)
    cr = ContrastiveRegularization(teacher.encode, DEFAULT_CR_WEIGHTS, "l2")
    rows = []
    for batch in itertools.islice(itertools.cycle(loader), args.batches):
        ldct, ndct = batch["ldct"], batch["ndct"]
        restored, features = student(ldct, return_features=True)
        with torch.no_grad():
            _, teacher_features = teacher.forward_features(ndct)
        terms = {"pixel": F.l1_loss(restored, ndct), "kt": kt(features, teacher_features), "cr": cr(restored, ndct, ldct)}
        rows.append({name: (float(value.detach()), gradient_norm(value, parameters)) for name, value in terms.items()})
    for name in ("pixel", "kt", "cr"):
        value = sum(r[name][0] for r in rows) / len(rows)
        grad = sum(r[name][1] for r in rows) / len(rows)
        ratio = grad / (sum(r["pixel"][1] for r in rows) / len(rows))
        print(f"{name:6s} value {value:.5f}  gradient norm {grad:.5f}  (x{ratio:.3f} the pixel term's)")


if __name__ == "__main__":
    main()
