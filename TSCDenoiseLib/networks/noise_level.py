"""A per-slice estimate of the image noise level, computed by the network from its own input.

A denoiser trained over a range of doses that cannot tell the dose of the slice in front of it learns an
average strength: it over-smooths quiet slices and under-smooths noisy ones. Measuring the noise is
hard for a CNN whose receptive field is a few tens of pixels, and easy for a global statistic, so a
noise-conditioned TSC-Net appends this estimate as a constant input channel (FFDNet's noise map).

The estimator is Immerkaer's (1996): the image convolved with a kernel that cancels planes and
quadratic trends leaves mostly noise; for white Gaussian noise of std sigma the result has mean absolute
value 6 * sigma * sqrt(2 / pi). CT noise is correlated, so the number is a noise *index* (it grows with
the noise amplitude at a given kernel) rather than the pixel std; the network learns what it means.
It is taken only over pixels inside an intensity band (soft tissue and fat: air, padding and bone carry
no useful noise), and a second pass drops responses above three times the first mean, which are mostly
edges. Only convolutions, comparisons and sums: it runs the same in PyTorch, autocast and ONNX.
"""

from __future__ import annotations

import math
from typing import Tuple

import torch
import torch.nn.functional as F

# [-500, 500] HU in the default window [-1024, 3072] HU: fat, soft tissue, fluid, not air or bone.
DEFAULT_BAND = ((-500.0 + 1024.0) / 4096.0, (500.0 + 1024.0) / 4096.0)
_WHITE_NOISE_GAIN = 6.0 * math.sqrt(2.0 / math.pi)  # E|kernel * noise| / sigma for white noise
EDGE_REJECTION = 3.0


def _immerkaer_kernel(device: torch.device) -> torch.Tensor:
    kernel = torch.tensor([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]], device=device)
    return kernel.view(1, 1, 3, 3)


def estimate_noise_level(x: torch.Tensor, band: Tuple[float, float] = DEFAULT_BAND) -> torch.Tensor:
    """The noise index of each slice of `x`, in the units of `x`, computed in fp32.

    Args:
        x: slices (N, 1, H, W), normalised intensities (the first channel is used if there are more).
        band: the intensity range, in the units of `x`, of the pixels the estimate uses.

    Returns:
        A tensor of shape (N,): the estimated noise std of each slice (0 where no pixel is in the band).
    """
    image = x[:, :1].float()
    with torch.autocast(image.device.type, enabled=False):  # a bf16 convolution would round the noise away
        response = F.conv2d(image, _immerkaer_kernel(image.device)).abs()
    centre = image[:, :, 1:-1, 1:-1]
    inside = ((centre >= band[0]) & (centre <= band[1])).float()
    first = _masked_mean(response, inside)
    not_edge = inside * (response <= EDGE_REJECTION * first.view(-1, 1, 1, 1)).float()
    return _masked_mean(response, not_edge) / _WHITE_NOISE_GAIN


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    total = (values * mask).sum(dim=(1, 2, 3))
    count = mask.sum(dim=(1, 2, 3)).clamp_min(1.0)
    return total / count
