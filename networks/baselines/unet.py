"""U-Net (Ronneberger et al., 2015), compact: the baseline everyone runs first."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from networks.base import CubeModel
from networks.blocks import conv_block, fold_time, pad_to_multiple


def _double_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        conv_block(in_channels, out_channels), conv_block(out_channels, out_channels)
    )


class UNet(CubeModel):
    """U-Net: double convolutions, 2x2 max pooling down, transposed convolutions up.

    Each decoder level fuses the up-sampled map with the encoder's map of its level (skip
    connection) by a double convolution. Dates are folded into channels. Heights and
    widths that are not multiples of ``2 ** levels`` are replicate-padded on the bottom
    and right, and the logits cropped back, so every input size works. At the defaults
    (24 channels, 3 levels) it has about 1.1 M parameters and an empirical receptive
    field of about 90 px (180 px with 4 levels).

    Args:
        n_sources: Input sources ``S``.
        n_times: Input dates ``T``.
        channels: Channels of the first level, doubling at every level below.
        levels: Max-pooling steps (and up-sampling steps).
        dropout: Dropout before the classifier.
    """

    def __init__(
        self,
        n_sources: int,
        n_times: int,
        *,
        channels: int = 24,
        levels: int = 3,
        dropout: float = 0.1,
    ) -> None:
        super().__init__(n_sources, n_times)
        widths = [channels * 2**i for i in range(levels + 1)]
        ins = [n_sources * n_times, *widths[:-1]]
        self.levels = levels
        self.encoder = nn.ModuleList(_double_conv(i, o) for i, o in zip(ins, widths, strict=True))
        # Decoder step i goes from level i + 1 up to level i (run deepest first).
        self.upsample = nn.ModuleList(
            nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in range(levels)
        )
        self.decoder = nn.ModuleList(_double_conv(2 * widths[i], widths[i]) for i in range(levels))
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Conv2d(channels, 2, kernel_size=1)

    def segment(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a checked input.

        Args:
            x: ``(B, S, T, H, W)``.

        Returns:
            ``(B, 2, H, W)`` logits.
        """
        height, width = x.shape[-2:]
        h = pad_to_multiple(fold_time(x), 2**self.levels)
        skips = []
        for i, stage in enumerate(self.encoder):
            h = stage(h)
            if i < self.levels:
                skips.append(h)
                h = F.max_pool2d(h, 2)
        for i in reversed(range(self.levels)):
            h = self.decoder[i](torch.cat([self.upsample[i](h), skips[i]], dim=1))
        return self.classifier(self.dropout(h))[..., :height, :width]
