"""The deep 2-D CNN branch of the spatial fusion module."""

from __future__ import annotations

import torch
from torch import nn

from networks.blocks import conv_block, resize_to
from networks.config import DCNNConfig


class DCNN(nn.Module):
    """A dilation pyramid, optionally on a downsampled grid, that keeps the map size.

    With ``levels = 0`` the branch is ``depth`` convolution blocks at full resolution,
    dilated as :meth:`DCNNConfig.dilations` says (1, 2, 4, 8, ...: the receptive field
    grows exponentially with depth, and the powers of one factor leave no gaps between
    the sampled pixels). With ``levels = L > 0`` a full-resolution block (``stem``) and
    ``L`` stride-2 blocks (``down``) come first, the pyramid runs on the ``1/2^L`` grid
    (``2^L`` times the reach at ``1/4^L`` of the cost), and ``L`` decoder blocks (``up``)
    each up-sample bilinearly to the size of the encoder's map one level up and fuse it
    (skip connection), so the output has the input's size and its detail. Strided
    convolutions round sizes up and the decoder resizes to the stored encoder sizes, so
    any height and width work.

    The width stays ``config.width`` at every level: the branch sits beside the DBN on
    the temporal module's features, and doubling channels per level would multiply its
    cost with no gain on small training sets.

    Args:
        in_channels: Input channels.
        config: The branch's hyperparameters.
    """

    def __init__(self, in_channels: int, config: DCNNConfig) -> None:
        super().__init__()
        width, kernel = config.width, config.kernel_size
        self.levels = config.levels
        self.dilations = config.dilations()
        self.stem: nn.Module | None = None
        self.down = nn.ModuleList()
        self.up = nn.ModuleList()
        body_in = in_channels
        if self.levels > 0:
            self.stem = conv_block(in_channels, width, kernel)
            self.down.extend(conv_block(width, width, 3, stride=2) for _ in range(self.levels))
            self.up.extend(conv_block(2 * width, width, kernel) for _ in range(self.levels))
            body_in = width
        # ``layers`` keeps its name from the full-resolution layout, whose checkpoints
        # (levels = 0) hold exactly these weights.
        self.layers = nn.Sequential(
            *[
                conv_block(body_in if i == 0 else width, width, kernel, dilation=d)
                for i, d in enumerate(self.dilations)
            ]
        )
        self.out_channels = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the branch.

        Args:
            x: ``(B, in_channels, H, W)``.

        Returns:
            ``(B, width, H, W)``.
        """
        if self.stem is None:
            return self.layers(x)
        h = self.stem(x)
        skips = []
        for down in self.down:
            skips.append(h)
            h = down(h)
        h = self.layers(h)
        for up, skip in zip(self.up, reversed(skips), strict=True):
            h = up(torch.cat([resize_to(h, tuple(skip.shape[-2:])), skip], dim=1))
        return h
