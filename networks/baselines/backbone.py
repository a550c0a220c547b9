"""The dilated residual backbone that DeepLabV3 and PSPNet share."""

from __future__ import annotations

import torch
from torch import nn

from networks.blocks import ResidualBlock, conv_block


class DilatedResNet(nn.Module):
    """A compact ResNet with output stride 8: two strided stages, then two dilated blocks.

    Dilation (rates 2 and 4) instead of more striding keeps the map at 1/8 of the input,
    as DeepLabV3 and PSPNet do, so small objects survive to the head.

    Args:
        in_channels: Input channels.
        width: Channels of the first stage; the output has ``4 * width``.
    """

    def __init__(self, in_channels: int, width: int = 32) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            conv_block(in_channels, width, 3, stride=2),
            conv_block(width, width, 3),
            ResidualBlock(width, 2 * width, stride=2),
            ResidualBlock(2 * width, 4 * width, stride=2),
            ResidualBlock(4 * width, 4 * width, dilation=2),
            ResidualBlock(4 * width, 4 * width, dilation=4),
        )
        self.out_channels = 4 * width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Extract features.

        Args:
            x: ``(B, in_channels, H, W)``.

        Returns:
            ``(B, 4 * width, ceil(H / 8), ceil(W / 8))``.
        """
        return self.layers(x)
