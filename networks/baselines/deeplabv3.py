"""DeepLabV3 (Chen et al., 2017), compact: ASPP on a dilated residual backbone."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from networks.base import CubeModel
from networks.baselines.backbone import DilatedResNet
from networks.blocks import conv_block, fold_time, resize_to


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: a 1x1 branch, dilated 3x3 branches, image pooling.

    Args:
        in_channels: Input channels.
        out_channels: Channels of every branch and of the output.
        rates: Dilation rates of the 3x3 branches.
    """

    def __init__(self, in_channels: int, out_channels: int, rates: tuple[int, ...]) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            [conv_block(in_channels, out_channels, 1)]
            + [conv_block(in_channels, out_channels, 3, dilation=r) for r in rates]
        )
        self.image_pool = conv_block(in_channels, out_channels, 1, norm=False)
        self.project = conv_block(out_channels * (len(rates) + 2), out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply ASPP.

        Args:
            x: ``(B, in_channels, h, w)``.

        Returns:
            ``(B, out_channels, h, w)``.
        """
        pooled = self.image_pool(F.adaptive_avg_pool2d(x, 1)).expand(-1, -1, *x.shape[-2:])
        return self.project(torch.cat([b(x) for b in self.branches] + [pooled], dim=1))


class DeepLabV3(CubeModel):
    """DeepLabV3 at output stride 8 (or 4); logits are up-sampled bilinearly to H x W.

    The ASPP rates (3, 6, 9) are the paper's (12, 24, 36) at output stride 8 scaled to the
    small maps of 128 x 128 patches; at output stride 4 they double, as DeepLab's do when
    the stride halves. Dates are folded into channels.

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
        rates = tuple(r * self.backbone.rate for r in (3, 6, 9))
        self.aspp = ASPP(self.backbone.out_channels, 2 * width, rates=rates)
        self.head = nn.Sequential(
            conv_block(2 * width, 2 * width, 3), nn.Dropout(dropout), nn.Conv2d(2 * width, 2, 1)
        )

    def segment(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a checked input.

        Args:
            x: ``(B, S, T, H, W)``.

        Returns:
            ``(B, 2, H, W)`` logits.
        """
        logits = self.head(self.aspp(self.backbone(fold_time(x))))
        return resize_to(logits, tuple(x.shape[-2:]))
