"""The deep 2-D CNN branch of the spatial fusion module."""

from __future__ import annotations

import torch
from torch import nn

from networks.blocks import conv_block
from networks.config import DCNNConfig


class DCNN(nn.Module):
    """A stack of ``depth`` convolution blocks that keeps the map size.

    Every second block is dilated by ``config.dilation`` to widen the receptive field;
    the blocks between stay undilated so that no input pixel falls through the gaps of
    stacked dilations.

    Args:
        in_channels: Input channels.
        config: The branch's hyperparameters.
    """

    def __init__(self, in_channels: int, config: DCNNConfig) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            *[
                conv_block(
                    in_channels if i == 0 else config.width,
                    config.width,
                    config.kernel_size,
                    dilation=config.dilation if i % 2 == 1 else 1,
                )
                for i in range(config.depth)
            ]
        )
        self.out_channels = config.width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the branch.

        Args:
            x: ``(B, in_channels, H, W)``.

        Returns:
            ``(B, width, H, W)``.
        """
        return self.layers(x)
