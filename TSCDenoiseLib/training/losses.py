"""TSC-Net training losses: knowledge transfer, contrastive regularization, and the student's total.

- `KnowledgeTransferLoss`: the student imitates the frozen teacher's intermediate features.
- `ContrastiveRegularization` (CRM): in a latent space phi, sum_i w_i * d(phi_i(restored), phi_i(NDCT))
  / (d(phi_i(restored), phi_i(LDCT)) + eps): the restored image is pulled toward the normal-dose image
  (positive) and pushed away from the low-dose input (negative). phi defaults to the frozen teacher's
  encoder (it has learned NDCT and needs no download); `VGG19Features` may be used instead, from a
  local weights file only.
- `TSCStudentLoss`: pixel L1 + lambda_kt * KT + lambda_cr * CRM.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError
from ..networks.tscnet import ENCODER_FEATURE_NAMES

Encoder = Callable[[torch.Tensor], List[torch.Tensor]]
DEFAULT_CR_WEIGHTS = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)
_DISTANCES = {"l1": F.l1_loss, "l2": F.mse_loss}


def _distance_fn(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    try:
        return _DISTANCES[name.lower()]
    except KeyError:
        raise ValueError(f"Unknown distance {name!r}; use 'l1' or 'l2'.") from None


class KnowledgeTransferLoss(nn.Module):
    """sum_i w_i * d(student_i, teacher_i), with the teacher's features detached."""

    def __init__(self, distance: str = "l1", weights: Optional[Sequence[float]] = None) -> None:
        super().__init__()
        self.distance = _distance_fn(distance)
        self.weights = None if weights is None else tuple(float(w) for w in weights)

    def forward(self, student_features: Sequence[torch.Tensor], teacher_features: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(student_features) != len(teacher_features):
            raise ValueError(
                f"{len(student_features)} student features vs {len(teacher_features)} teacher features: "
                "teacher and student must be built from the same network config."
            )
        weights = self.weights or (1.0,) * len(student_features)
        if len(weights) != len(student_features):
            raise ValueError(f"{len(weights)} layer weights given for {len(student_features)} features.")
        total = student_features[0].new_zeros(())
        for weight, s, t in zip(weights, student_features, teacher_features):
            if weight:
                total = total + weight * self.distance(s, t.detach())
        return total


class ContrastiveRegularization(nn.Module):
    """Contrastive regularization in the latent space of a frozen encoder (see the module docstring)."""

    def __init__(
        self,
        encoder: Encoder,
        weights: Sequence[float] = DEFAULT_CR_WEIGHTS,
        distance: str = "l2",
        eps: float = 1e-7,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        if isinstance(encoder, nn.Module):
            encoder.requires_grad_(False)
        self.weights = tuple(float(w) for w in weights)
        self.distance = _distance_fn(distance)
        self.eps = eps

    def forward(
        self,
        restored: torch.Tensor,
        positive: torch.Tensor,
        negative: torch.Tensor,
        positive_latent: Optional[Sequence[torch.Tensor]] = None,
    ) -> torch.Tensor:
        """`restored` the student's output, `positive` the NDCT target, `negative` the LDCT input.

        `positive_latent` may pass the encoder's features of `positive` when the caller has them already.
        """
        restored_latent = self.encoder(restored)
        with torch.no_grad():
            if positive_latent is None:
                positive_latent = self.encoder(positive)
            negative_latent = self.encoder(negative)
        if len(restored_latent) != len(self.weights):
            raise ValueError(f"{len(self.weights)} CRM weights given for {len(restored_latent)} encoder features.")
        total = restored.new_zeros(())
        for weight, r, p, n in zip(self.weights, restored_latent, positive_latent, negative_latent):
            if weight:
                total = total + weight * self.distance(r, p) / (self.distance(r, n) + self.eps)
        return total


class TSCStudentLoss(nn.Module):
    """L1(restored, NDCT) + lambda_kt * KT(student, teacher) + lambda_cr * CRM(restored; NDCT+, LDCT-)."""

    def __init__(
        self,
        teacher: Optional[nn.Module],
        lambda_kt: float = 1.0,
        lambda_cr: float = 0.1,
        kt_distance: str = "l1",
        kt_weights: Optional[Sequence[float]] = None,
        cr_distance: str = "l2",
        cr_weights: Sequence[float] = DEFAULT_CR_WEIGHTS,
        cr_encoder: Optional[Encoder] = None,
    ) -> None:
        super().__init__()
        self.lambda_kt = float(lambda_kt)
        self.lambda_cr = float(lambda_cr)
        if teacher is None and (self.lambda_kt or (self.lambda_cr and cr_encoder is None)):
            raise ValueError(
                "TSCStudentLoss needs the trained teacher for knowledge transfer and for the default contrastive "
                "latent space; pass it, or set lambda_kt = lambda_cr = 0 (the pixel-loss-only ablation)."
            )
        if teacher is not None:
            teacher.requires_grad_(False)
        # Not registered as a submodule: the loss must not own (or save, or move) the teacher's weights.
        self._teacher = [teacher]
        self.knowledge_transfer = KnowledgeTransferLoss(kt_distance, kt_weights)
        self.contrastive = None
        if self.lambda_cr:
            self.contrastive = ContrastiveRegularization(cr_encoder or teacher.encode, cr_weights, cr_distance)

    @property
    def teacher(self) -> Optional[nn.Module]:
        return self._teacher[0]

    @property
    def needs_features(self) -> bool:
        """Whether `forward` uses the student's intermediate features (knowledge transfer is on)."""
        return bool(self.lambda_kt)

    def forward(
        self,
        restored: torch.Tensor,
        student_features: Sequence[torch.Tensor],
        ldct: torch.Tensor,
        ndct: torch.Tensor,
    ) -> Dict[str, torch.Tensor]:
        """Loss terms and their weighted sum under "loss" (the one to backpropagate)."""
        pixel = F.l1_loss(restored, ndct)
        terms = {"pixel": pixel}
        total = pixel
        teacher_encoding = None
        if self.lambda_kt:
            with torch.no_grad():
                # The teacher learned NDCT -> NDCT: its features of the clean image are the target.
                _, teacher_features = self.teacher.forward_features(ndct)
            terms["kt"] = self.knowledge_transfer(student_features, teacher_features)
            total = total + self.lambda_kt * terms["kt"]
            if self.contrastive is not None and self.contrastive.encoder == self.teacher.encode:
                teacher_encoding = teacher_features[: len(ENCODER_FEATURE_NAMES)]  # = teacher.encode(ndct)
        if self.lambda_cr:
            terms["cr"] = self.contrastive(restored, ndct, ldct, positive_latent=teacher_encoding)
            total = total + self.lambda_cr * terms["cr"]
        terms["loss"] = total
        return terms


class VGG19Features(nn.Module):
    """Frozen VGG19 `features` taps (relu1_1 ... relu5_1) as an alternative CRM latent space.

    Weights come only from a local file (a state dict of torchvision's `vgg19().features`, loaded with
    weights_only=True); nothing is downloaded. Needs torchvision.
    """

    TAPS = (1, 6, 11, 20, 29)  # indices of relu1_1, relu2_1, relu3_1, relu4_1, relu5_1

    def __init__(self, weights_path: Union[str, Path]) -> None:
        super().__init__()
        try:
            from torchvision.models import vgg19
        except Exception as exc:
            raise CheckpointError(f"VGG19Features needs torchvision ({exc}). Install torchvision or use the teacher encoder.") from exc
        path = Path(weights_path)
        if not path.is_file():
            raise CheckpointError(f"VGG19 weights file {path} not found. Give the path of a local VGG19 features state dict.")
        features = vgg19(weights=None).features[: self.TAPS[-1] + 1]
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = {k.removeprefix("features."): v for k, v in state.items() if not k.startswith("classifier.")}
        state = {k: v for k, v in state.items() if int(k.split(".")[0]) <= self.TAPS[-1]}
        features.load_state_dict(state)
        self.features = features.eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        x = (x.expand(-1, 3, -1, -1) - self.mean) / self.std
        taps = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in self.TAPS:
                taps.append(x)
        return taps
