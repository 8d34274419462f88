"""TSC-Net: the encoder/decoder shared by the teacher and the student.

The full text of Fu et al. ("Total-Body Low-Dose CT Image Denoising using Prior Knowledge Transfer
Technique with Contrastive Regularization Mechanism") is not public, so this is a reconstruction from
what is published about it and from AECR-Net (Wu et al., CVPR 2021), on which it builds:

    7x7 stem (C) -> stride-2 conv (2C) -> stride-2 conv (4C) -> N attention blocks -> M DEMs
    -> adaptive mixup with the 4C skip -> transposed conv (2C) -> adaptive mixup with the 2C skip
    -> transposed conv (C) -> 7x7 conv to 1 channel.

It works on axial slices normalised to [0, 1] and learns the residual: the last conv predicts the
noise and the output is ``input - noise``. Teacher and student are two instances of this class with
the same config; `forward_features` exposes the intermediate features used for knowledge transfer,
and `encode` the first five of them (the latent space of the contrastive regularization).

`residual=False` makes the head output the image itself, as AECR-Net does. A teacher trained
NDCT -> NDCT with the residual path could learn to predict zero noise without learning anything about
anatomy, so the training recipe decides per role (the parameters are the same either way).

Two options for networks trained over a range of doses (compared in training/docs/README.md):
`noise_map=True` appends each slice's noise index (`noise_level.estimate_noise_level`, computed inside
`forward`) as one more constant input channel, so the network knows how much to remove; `bias=False`
drops the additive biases (a bias-free network). Both are recorded in `config` only when set.
The attribute `noise_map_strength` (1.0, not saved in checkpoints) scales the noise index the network
sees: below 1 it removes less, above 1 more (set it for one run with `noise_map_strength(...)`).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .attention import AttentionBlock
from .dem import DynamicEnhancementModule
from .noise_level import estimate_noise_level

FEATURE_NAMES = ("stem", "down1", "down2", "attention", "dem", "up1", "up2")
ENCODER_FEATURE_NAMES = FEATURE_NAMES[:5]
SIZE_MULTIPLE = 4  # two stride-2 stages
# The noise-map channel holds the slice's noise index times this: 1.0 is ~100 HU in the default window.
NOISE_MAP_SCALE = 4096.0 / 100.0


class AdaptiveMixup(nn.Module):
    """sigmoid(theta) * skip + (1 - sigmoid(theta)) * decoded, with theta learned."""

    def __init__(self, init: float) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.tensor(float(init)))

    def forward(self, skip: torch.Tensor, decoded: torch.Tensor) -> torch.Tensor:
        weight = torch.sigmoid(self.theta)
        return weight * skip + (1 - weight) * decoded


class TSCNet(nn.Module):
    """TSC-Net denoiser for 1-channel CT slices in [0, 1]; see the module docstring for the layout."""

    def __init__(
        self,
        in_channels: int = 1,
        base_channels: int = 32,
        num_attention_blocks: int = 6,
        num_dems: int = 2,
        attention_reduction: int = 8,
        offset_groups: int = 1,
        residual: bool = True,
        noise_map: bool = False,
        bias: bool = True,
        dcn_backend: str = "auto",
    ) -> None:
        super().__init__()
        if min(in_channels, base_channels, num_attention_blocks + 1, num_dems + 1, attention_reduction) < 1:
            raise ValueError("TSCNet sizes must be positive (blocks and DEMs may be 0).")
        self._config = dict(
            in_channels=in_channels,
            base_channels=base_channels,
            num_attention_blocks=num_attention_blocks,
            num_dems=num_dems,
            attention_reduction=attention_reduction,
            offset_groups=offset_groups,
            residual=residual,
        )
        # Recorded only when set, so checkpoints of the plain network keep their config.
        if noise_map:
            self._config["noise_map"] = True
        if not bias:
            self._config["bias"] = False
        # Scales the noise index fed to the noise-map channel at inference (a plain float, so export sees a constant).
        self.noise_map_strength = 1.0
        c = base_channels
        self.stem = nn.Sequential(nn.Conv2d(in_channels + int(noise_map), c, 7, padding=3), nn.ReLU(True))
        self.down1 = nn.Sequential(nn.Conv2d(c, 2 * c, 3, stride=2, padding=1), nn.ReLU(True))
        self.down2 = nn.Sequential(nn.Conv2d(2 * c, 4 * c, 3, stride=2, padding=1), nn.ReLU(True))
        self.attention = nn.Sequential(*(AttentionBlock(4 * c, attention_reduction) for _ in range(num_attention_blocks)))
        self.dems = nn.Sequential(
            *(DynamicEnhancementModule(4 * c, attention_reduction, offset_groups, dcn_backend) for _ in range(num_dems))
        )
        self.mix1 = AdaptiveMixup(-1.0)
        self.up1 = nn.Sequential(nn.ConvTranspose2d(4 * c, 2 * c, 3, stride=2, padding=1, output_padding=1), nn.ReLU(True))
        self.mix2 = AdaptiveMixup(-0.6)
        self.up2 = nn.Sequential(nn.ConvTranspose2d(2 * c, c, 3, stride=2, padding=1, output_padding=1), nn.ReLU(True))
        self.head = nn.Conv2d(c, in_channels, 7, padding=3)
        if not bias:
            remove_biases(self)

    @property
    def config(self) -> Dict[str, Any]:
        """The architecture settings: `TSCNet(**net.config)` builds the same network."""
        return dict(self._config)

    @property
    def feature_names(self) -> Tuple[str, ...]:
        """Names of the features `forward_features` returns, in order."""
        return FEATURE_NAMES

    def set_dcn_backend(self, backend: str) -> None:
        """Switch every deformable convolution to "auto", "torch" or "torchvision" (weights unchanged)."""
        for dem in self.dems:
            dem.deform_conv.backend = backend

    def forward(self, x: torch.Tensor, return_features: bool = False, noise_strength: Optional[torch.Tensor] = None):
        """Denoised slices, same shape as `x` (N, C, H, W); with `return_features`, as `forward_features`.

        The flag lets a DistributedDataParallel wrapper (which only hooks `forward`) train on features.
        `noise_strength` (N,), for a noise-map network, scales each slice's noise index (on top of
        `noise_map_strength`): training calibrated to each pair's noise texture passes it per sample.
        """
        if return_features:
            return self._run(x, keep_features=True, noise_strength=noise_strength)
        return self._run(x, keep_features=False, noise_strength=noise_strength)[0]

    def forward_features(self, x: torch.Tensor,
                         noise_strength: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """The denoised slices and the intermediate features named in `feature_names`."""
        return self._run(x, keep_features=True, noise_strength=noise_strength)

    def encode(self, x: torch.Tensor) -> List[torch.Tensor]:
        """The encoder features (stem, down1, down2, attention, dem): the contrastive latent space."""
        return self._encode(pad_to_multiple(x)[0], keep_stem=True)

    def _encode(self, padded: torch.Tensor, keep_stem: bool,
                noise_strength: Optional[torch.Tensor] = None) -> List[Optional[torch.Tensor]]:
        stem = full_precision(self.stem, self._with_noise_map(padded, noise_strength))
        down1 = self.down1(stem)
        if not keep_stem:
            stem = None  # not a skip connection: free the largest activation early at inference
        down2 = self.down2(down1)
        attended = self.attention(down2)
        return [stem, down1, down2, attended, self.dems(attended)]

    def _with_noise_map(self, padded: torch.Tensor, noise_strength: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The input, and with `noise_map` its slices' noise index as one more constant channel."""
        if not self._config.get("noise_map"):
            return padded
        level = estimate_noise_level(padded) * NOISE_MAP_SCALE
        strength = getattr(self, "noise_map_strength", 1.0)
        if strength != 1.0:  # skipped at 1.0 so the default result stays bitwise the same
            level = level * strength
        if noise_strength is not None:
            level = level * noise_strength.to(level).reshape(-1)
        noise_channel = level.view(-1, 1, 1, 1).to(padded.dtype).expand(-1, 1, *padded.shape[-2:])
        return torch.cat([padded, noise_channel], dim=1)

    def _run(self, x: torch.Tensor, keep_features: bool,
             noise_strength: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        padded, (h, w) = pad_to_multiple(x)
        features = self._encode(padded, keep_stem=keep_features, noise_strength=noise_strength)
        _, down1, down2, _, enhanced = features
        up1 = self.up1(self.mix1(down2, enhanced))
        up2 = self.up2(self.mix2(down1, up1))
        out = full_precision(self.head, up2)
        image = (padded - out if self._config["residual"] else out)[..., :h, :w]
        return image, (features + [up1, up2] if keep_features else [])


def has_noise_map(model: nn.Module) -> bool:
    """True when `model` takes each slice's noise index as an input channel (`TSCNet(noise_map=True)`)."""
    config = getattr(model, "config", None)
    return isinstance(config, dict) and bool(config.get("noise_map"))


@contextmanager
def noise_map_strength(model: nn.Module, strength: float) -> Iterator[nn.Module]:
    """Run `model` with its noise index scaled by `strength` inside the block (1.0: the model's own level,
    whatever was set before); the previous setting is restored afterwards, also when the block raises.

    Args:
        model: a network with a noise-map input (`has_noise_map`); on another network only 1.0 makes sense
            (it then changes nothing).
        strength: the factor (checked by the caller, e.g. `core.volume_checks.validate_strength`).

    Yields:
        `model` itself.
    """
    had = "noise_map_strength" in model.__dict__
    previous = model.__dict__.get("noise_map_strength")
    model.noise_map_strength = float(strength)
    try:
        yield model
    finally:
        if had:
            model.noise_map_strength = previous
        else:
            del model.noise_map_strength


def remove_biases(module: nn.Module) -> None:
    """Drop every convolution's additive bias in `module` (a bias-free network, Mohan et al. 2020).

    The deformable convolutions' offset/mask predictors keep theirs: they place the samples, they add
    nothing to the intensities.
    """
    for name, layer in module.named_modules():
        if name.endswith("offset_mask"):
            continue
        if isinstance(layer.__dict__.get("_parameters", {}).get("bias"), nn.Parameter):
            layer.bias = None


def full_precision(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """`layer(x)` in fp32 even under autocast: the image-facing first and last convolutions (2% of the FLOPs).

    In bf16 the stem's input loses the HU (a [0, 1] image has a step of 2^-9, 8 HU, near soft tissue)
    and the head's output the noise estimate; keeping them in fp32 brought bf16 autocast from 0.12 dB
    to 0.01 dB PSNR change on real CT (Testing/benchmarks/bench_inference.py --candidates).
    """
    if torch.is_autocast_enabled(x.device.type):
        with torch.autocast(x.device.type, enabled=False):
            return layer(x.float())
    return layer(x)


def pad_to_multiple(x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int]]:
    """Replicate-pad height and width up to a multiple of SIZE_MULTIPLE; return the original size."""
    if x.dim() != 4:
        raise ValueError(f"TSCNet expects (N, C, H, W) slices, got shape {tuple(x.shape)}")
    h, w = x.shape[-2:]
    pad_h, pad_w = -h % SIZE_MULTIPLE, -w % SIZE_MULTIPLE
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
    return x, (h, w)
