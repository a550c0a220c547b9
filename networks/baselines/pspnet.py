"""PSPNet (Zhao et al., 2017), compact: pyramid pooling on a dilated residual backbone."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from networks.base import CubeModel
from networks.baselines.backbone import DilatedResNet
from networks.blocks import conv_block, fold_time, resize_to


class PyramidPooling(nn.Module):
    """Pool the map to several grid sizes, project, up-sample and concatenate with the input.

    Args:
        in_channels: Input channels.
        bins: Grid sizes of the pooled maps.
    """

    def __init__(self, in_channels: int, bins: tuple[int, ...] = (1, 2, 3, 6)) -> None:
        super().__init__()
        self.bins = bins
        branch = max(1, in_channels // len(bins))
        self.branches = nn.ModuleList(conv_block(in_channels, branch, 1, norm=False) for _ in bins)
        self.out_channels = in_channels + branch * len(bins)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the pyramid.

        Args:
            x: ``(B, in_channels, h, w)``.

        Returns:
            ``(B, out_channels, h, w)``.
        """
        size = tuple(x.shape[-2:])
        pooled = [
            resize_to(branch(F.adaptive_avg_pool2d(x, b)), size)
            for b, branch in zip(self.bins, self.branches, strict=True)
        ]
        return torch.cat([x, *pooled], dim=1)


class PSPNet(CubeModel):
    """PSPNet at output stride 8 (or 4); logits are up-sampled bilinearly to H x W.

    Dates are folded into channels.

    Args:
        n_sources: Input sources ``S``.
        n_times: Input dates ``T``.
        width: Width of the backbone's first stage.
        dropout: Dropout before the classifier.
        stride: Output stride of the backbone, 8 or 4.
    """

    def __init__(
        self, n_sources: int, n_times: int, *, width: int = 32, dropout: float = 0.1,
        stride: int = 8,
    ) -> None:
        super().__init__(n_sources, n_times)
        self.backbone = DilatedResNet(n_sources * n_times, width, stride)
        self.pyramid = PyramidPooling(self.backbone.out_channels)
        self.head = nn.Sequential(
            conv_block(self.pyramid.out_channels, 2 * width, 3),
            nn.Dropout(dropout),
            nn.Conv2d(2 * width, 2, 1),
        )

    def segment(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a checked input.

        Args:
            x: ``(B, S, T, H, W)``.

        Returns:
            ``(B, 2, H, W)`` logits.
        """
        logits = self.head(self.pyramid(self.backbone(fold_time(x))))
        return resize_to(logits, tuple(x.shape[-2:]))
