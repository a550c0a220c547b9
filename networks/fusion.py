"""The paper's spatiotemporal fusion network."""

from __future__ import annotations

import torch
from torch import nn

from networks.base import CubeModel
from networks.blocks import fold_time
from networks.config import ModelConfig
from networks.dbn import DBN
from networks.dcnn import DCNN
from networks.temporal import TemporalFusion


class FusionNet(CubeModel):
    """Temporal fusion -> DBN and DCNN branches -> concatenation -> per-pixel logistic regression.

    Ablation switches live in the config: ``temporal.enabled=False`` feeds the raw
    ``S*T`` channels to both branches, ``dbn.enabled=False`` drops the DBN branch and
    ``dbn.pretrain=False`` fine-tunes a randomly initialised DBN (pretraining itself
    happens in :func:`networks.train`).

    Args:
        n_sources: Input sources ``S``.
        n_times: Input dates ``T``.
        config: Hyperparameters (default: all defaults).

    Attributes:
        dbn_active: When False, the DBN branch contributes zeros; training switches it off
            during the supervised warm-up that precedes pretraining.
    """

    def __init__(self, n_sources: int, n_times: int, config: ModelConfig | None = None) -> None:
        super().__init__(n_sources, n_times)
        config = config if config is not None else ModelConfig()
        self.temporal = (
            TemporalFusion(n_sources, config.temporal, n_times) if config.temporal.enabled else None
        )
        features = self.temporal.out_channels if self.temporal is not None else n_sources * n_times
        self.dbn = (
            DBN(features, config.dbn.hidden, config.dbn.visible) if config.dbn.enabled else None
        )
        self.dcnn = DCNN(features, config.dcnn)
        reconstructed = self.dcnn.out_channels + (self.dbn.out_channels if self.dbn else 0)
        self.dropout = nn.Dropout(config.head.dropout)
        self.classifier = nn.Conv2d(reconstructed, 2, kernel_size=1)
        self.dbn_active = True

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The per-pixel features both branches see (and the DBN is pretrained on).

        Args:
            x: ``(B, S, T, H, W)``.

        Returns:
            ``(B, F, H, W)``: temporally fused features, or the raw dates folded into
            channels when the temporal module is off.
        """
        return self.temporal(x) if self.temporal is not None else fold_time(x)

    def segment(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a checked input.

        Args:
            x: ``(B, S, T, H, W)``.

        Returns:
            ``(B, 2, H, W)`` logits.
        """
        features = self.features(x)
        branches = [self.dcnn(features)]
        if self.dbn is not None:
            if self.dbn_active:
                branches.append(self.dbn(features))
            else:
                batch, _, height, width = features.shape
                branches.append(features.new_zeros(batch, self.dbn.out_channels, height, width))
        return self.classifier(self.dropout(torch.cat(branches, dim=1)))
