"""CNN-LSTM temporal fusion: 3-D convolutions, a many-to-one LSTM over dates, up-sampling."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from networks.blocks import conv_block, pad_to_multiple
from networks.config import TemporalConfig


class TemporalFusion(nn.Module):
    """Compress a ``(B, S, T, H, W)`` time series into one ``(B, C, H, W)`` feature map.

    A 3-D convolution block over (T, H, W) extracts per-date features at full resolution;
    a strided ``1 x d x d`` convolution downsamples H and W by ``d = config.downsample``
    (padding H, W up to a multiple of ``d``) and ``config.conv_layers`` more 3-D blocks
    follow; a many-to-one LSTM then runs over the T dates at every remaining location, all
    locations folded into the LSTM's batch; its last hidden state is up-sampled
    bilinearly to exactly H x W and fused by a 2-D convolution with the full-resolution
    features of every date (dates folded into channels). That skip is not in the paper's
    figure: it restores the detail lost to downsampling, which small landslides need, and
    it has to carry every date because old scars revegetate: a landslide of 2011 may be
    invisible at the last date, and the LSTM sees it only on the coarse grid.

    Args:
        n_sources: Input sources ``S``.
        config: The module's hyperparameters.
        n_times: Input dates ``T`` (the skip's width is ``conv_channels * T``).
    """

    def __init__(self, n_sources: int, config: TemporalConfig, n_times: int) -> None:
        super().__init__()
        channels, kernel = config.conv_channels, config.kernel_size
        self.downsample = config.downsample
        self.stem = conv_block(n_sources, channels, kernel, dims=3)
        layers: list[nn.Module] = []
        if self.downsample > 1:
            # A learned patch-wise downsampling works for any factor, not just powers of two.
            down = (1, self.downsample, self.downsample)
            layers += [
                nn.Conv3d(channels, channels, down, stride=down, bias=False),
                nn.BatchNorm3d(channels),
                nn.ReLU(inplace=True),
            ]
        layers += [
            conv_block(channels, channels, kernel, dims=3) for _ in range(config.conv_layers)
        ]
        self.encoder = nn.Sequential(*layers)
        self.lstm = nn.LSTM(
            channels, config.lstm_hidden, num_layers=config.lstm_layers, batch_first=True
        )
        self.fuse = conv_block(
            config.lstm_hidden + channels * n_times, config.lstm_hidden, kernel
        )
        self.out_channels = config.lstm_hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Fuse the dates.

        Args:
            x: ``(B, S, T, H, W)``.

        Returns:
            ``(B, lstm_hidden, H, W)``.
        """
        batch, _, times, height, width = x.shape
        full = self.stem(x)  # (B, C, T, H, W)
        low = self.encoder(pad_to_multiple(full, self.downsample))  # (B, C, T, h, w)
        _, channels, _, h, w = low.shape
        sequences = low.permute(0, 3, 4, 2, 1).reshape(batch * h * w, times, channels)
        # float32 even under autocast: the LSTM is cheap on the downsampled grid, and its
        # recurrence accumulates rounding errors in half precision.
        with torch.autocast(x.device.type, enabled=False):
            _, (last_hidden, _) = self.lstm(sequences.float())
        summary = last_hidden[-1].reshape(batch, h, w, -1).permute(0, 3, 1, 2)
        # Up-sample to the padded grid, so every low-resolution cell maps onto its own
        # d x d block, then crop the padding off.
        up = F.interpolate(
            summary,
            size=(h * self.downsample, w * self.downsample),
            mode="bilinear",
            align_corners=False,
        )[..., :height, :width]
        return self.fuse(torch.cat([up, full.flatten(1, 2)], dim=1))
