"""The Dynamic Enhancement Module (DEM): attention followed by a modulated deformable convolution.

The TSC-Net paper describes DEM as attention plus deformable convolution at the bottleneck; its exact
layer order is not public. This reconstruction gates the features with channel then pixel attention,
lets a DCNv2 layer sample them at learned, content-dependent positions (so the receptive field follows
anatomical edges instead of a fixed grid), and keeps a residual path so the module starts near identity.
"""

from __future__ import annotations

import torch
from torch import nn

from .attention import ChannelAttention, PixelAttention
from .deform_conv import ModulatedDeformConv2d


class DynamicEnhancementModule(nn.Module):
    """x + ReLU(DCNv2(PA(CA(x))))."""

    def __init__(self, channels: int, reduction: int = 8, offset_groups: int = 1, backend: str = "auto") -> None:
        super().__init__()
        self.channel_attention = ChannelAttention(channels, reduction)
        self.pixel_attention = PixelAttention(channels, reduction)
        self.deform_conv = ModulatedDeformConv2d(channels, channels, 3, padding=1, offset_groups=offset_groups,
                                                 backend=backend)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pixel_attention(self.channel_attention(x))
        return x + self.act(self.deform_conv(y))
