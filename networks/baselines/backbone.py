"""The dilated residual backbone that DeepLabV3 and PSPNet share."""

from __future__ import annotations

from typing import get_args

import torch
from torch import nn

from networks.blocks import ResidualBlock, conv_block
from networks.config import OutputStride

OUTPUT_STRIDES = get_args(OutputStride)
"""Output strides :class:`DilatedResNet` builds: the config's choices."""


class DilatedResNet(nn.Module):
    """A compact ResNet with output stride 8: three strided stages, then two dilated blocks.

    Dilation (rates 2 and 4) instead of more striding keeps the map at 1/8 of the input,
    as DeepLabV3 and PSPNet do, so small objects survive to the head. At output stride 4
    the third stage dilates (rate 2) instead of striding and the blocks after it double
    their rates (4 and 8): the same field of view in input pixels on a map twice as fine.

    Args:
        in_channels: Input channels.
        width: Channels of the first stage; the output has ``4 * width``.
        stride: Output stride, 8 or 4.

    Raises:
        ValueError: Another stride.
    """

    def __init__(self, in_channels: int, width: int = 32, stride: int = 8) -> None:
        super().__init__()
        if stride not in OUTPUT_STRIDES:
            raise ValueError(f"output stride {stride!r}: choose 4 or 8")
        self.rate = 8 // stride  # how much finer than stride 8 the map is
        third = {"stride": 2} if stride == 8 else {"dilation": 2}
        self.layers = nn.Sequential(
            conv_block(in_channels, width, 3, stride=2),
            conv_block(width, width, 3),
            ResidualBlock(width, 2 * width, stride=2),
            ResidualBlock(2 * width, 4 * width, **third),
            ResidualBlock(4 * width, 4 * width, dilation=2 * self.rate),
            ResidualBlock(4 * width, 4 * width, dilation=4 * self.rate),
        )
        self.out_channels = 4 * width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Extract features.

        Args:
            x: ``(B, in_channels, H, W)``.

        Returns:
            ``(B, 4 * width, ceil(H / stride), ceil(W / stride))``.
        """
        return self.layers(x)
