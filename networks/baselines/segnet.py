"""SegNet (Badrinarayanan et al., 2017), compact: encoder-decoder with pooling indices."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from networks.base import CubeModel
from networks.blocks import conv_block, fold_time


def _stage(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        conv_block(in_channels, out_channels), conv_block(out_channels, out_channels)
    )


class SegNet(CubeModel):
    """SegNet: the decoder un-pools with the encoder's max-pooling indices.

    Each stage has two convolution blocks; dates are folded into channels.

    Args:
        n_sources: Input sources ``S``.
        n_times: Input dates ``T``.
        width: Channels of the first stage (doubling per stage).
        dropout: Dropout before the classifier.
        stages: Encoder (and decoder) stages.
    """

    def __init__(
        self,
        n_sources: int,
        n_times: int,
        *,
        width: int = 32,
        dropout: float = 0.1,
        stages: int = 4,
    ) -> None:
        super().__init__(n_sources, n_times)
        widths = [width * 2**i for i in range(stages)]
        ins = [n_sources * n_times, *widths[:-1]]
        self.encoder = nn.ModuleList(_stage(i, o) for i, o in zip(ins, widths, strict=True))
        # Decoder stage i maps widths[i] back to the width the encoder stage below expects.
        outs = [width, *widths[:-1]]
        self.decoder = nn.ModuleList(_stage(w, o) for w, o in zip(widths, outs, strict=True))
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Conv2d(width, 2, kernel_size=1)

    def segment(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a checked input.

        Args:
            x: ``(B, S, T, H, W)``.

        Returns:
            ``(B, 2, H, W)`` logits.
        """
        h = fold_time(x)
        trail = []
        for stage in self.encoder:
            h = stage(h)
            size = h.shape[-2:]
            # ceil_mode keeps the last row/column of odd-sized maps.
            h, indices = F.max_pool2d(h, 2, 2, ceil_mode=True, return_indices=True)
            trail.append((indices, size))
        for stage, (indices, size) in zip(reversed(self.decoder), reversed(trail), strict=True):
            h = F.max_unpool2d(h, indices, 2, 2, output_size=size)
            h = stage(h)
        return self.classifier(self.dropout(h))
