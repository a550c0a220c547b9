"""Tiny seeded data sets and configs for the networks tests."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import Dataset

from networks import ModelConfig


class BlobScenes(Dataset):
    """Seeded scenes where a bright disk appears in source 0 at the last date.

    The label is the disk; the earlier dates and other sources are noise, so only a
    model that uses the last date can learn it. Invalid pixels (a random strip) carry a
    wrong label, so counting them would hurt.
    """

    def __init__(
        self,
        n: int,
        *,
        seed: int,
        sources: int = 3,
        times: int = 5,
        size: tuple[int, int] = (16, 16),
    ) -> None:
        g = torch.Generator().manual_seed(seed)
        h, w = size
        rows = torch.arange(h).view(h, 1).float()
        cols = torch.arange(w).view(1, w).float()
        self.x = 0.3 * torch.randn(n, sources, times, h, w, generator=g)
        self.y = torch.zeros(n, h, w, dtype=torch.long)
        self.valid = torch.ones(n, h, w, dtype=torch.bool)
        for i in range(n):
            cy, cx = (torch.rand(2, generator=g) * torch.tensor([h, w])).tolist()
            radius = 2.0 + 2.0 * float(torch.rand(1, generator=g))
            disk = (rows - cy) ** 2 + (cols - cx) ** 2 <= radius**2
            self.y[i] = disk.long()
            self.x[i, 0, -1] += 1.5 * disk.float()
            strip = int(torch.randint(0, h, (1,), generator=g))
            self.valid[i, strip] = False
            self.y[i, strip] = 1 - self.y[i, strip]

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.x[i], self.y[i], self.valid[i]


def tiny_config(**params: object) -> ModelConfig:
    """A fusion network small enough for a test, with ``params`` overriding fields."""
    base = {
        "temporal.conv_channels": 4,
        "temporal.lstm_hidden": 8,
        "temporal.downsample": 2,
        "dbn.hidden": (8, 6),
        "dbn.max_pixels": 2000,
        "dbn.pretrain_epochs": 2,
        "dbn.warmup_epochs": 1,
        "dcnn.depth": 2,
        "dcnn.width": 8,
        "optim.lr": 0.01,
        "optim.batch_size": 4,
        "optim.epochs": 3,
    }
    base.update(params)
    return ModelConfig.from_params(base)


@pytest.fixture
def scenes() -> tuple[BlobScenes, BlobScenes]:
    """A small training and validation split."""
    return BlobScenes(24, seed=1), BlobScenes(8, seed=2)
