"""RED-CNN (Chen et al., IEEE TMI 2017): the residual encoder-decoder baseline for low-dose CT.

Five unpadded 5x5 convolutions (96 channels, ReLU) shrink the slice by 4 pixels each; five 5x5
transposed convolutions grow it back; three shortcuts add the input, the 2nd and the 4th encoder
outputs back in on the way up. Eulig et al. (2024) found this simple network the strongest baseline
in their low-dose CT benchmark. Written from the paper's description for this project.
"""

from __future__ import annotations

from typing import Any, Dict

import torch
from torch import nn


class REDCNN(nn.Module):
    """RED-CNN for 1-channel CT slices in [0, 1] (any size >= 21 pixels)."""

    def __init__(self, in_channels: int = 1, channels: int = 96, kernel_size: int = 5) -> None:
        super().__init__()
        self._config = dict(in_channels=in_channels, channels=channels, kernel_size=kernel_size)
        k, c = kernel_size, channels
        self.encoder = nn.ModuleList([nn.Conv2d(in_channels, c, k)] + [nn.Conv2d(c, c, k) for _ in range(4)])
        self.decoder = nn.ModuleList([nn.ConvTranspose2d(c, c, k) for _ in range(4)] + [nn.ConvTranspose2d(c, in_channels, k)])

    @property
    def config(self) -> Dict[str, Any]:
        """The architecture settings: `REDCNN(**net.config)` builds the same network."""
        return dict(self._config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Denoised slices, same shape as `x` (N, C, H, W)."""
        shortcuts = [x]
        out = x
        for index, conv in enumerate(self.encoder):
            out = torch.relu(conv(out))
            if index in (1, 3):
                shortcuts.append(out)
        for index, deconv in enumerate(self.decoder):
            out = deconv(out)
            if index in (0, 2, 4):  # sizes of the 4th, 2nd encoder output and the input, in that order
                out = out + shortcuts.pop()
            out = torch.relu(out)
        return out
