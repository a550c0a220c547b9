"""Torch datasets of cube tiles and the normalization statistics they use."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import Dataset

from data.splits import Tile

if TYPE_CHECKING:
    from data.cube import Cube

__all__ = ["CubeDataset", "norm_stats"]


def norm_stats(cube: Cube, tiles: Sequence[Tile], sources: Sequence[int]) -> dict[str, Any]:
    """Per-source mean / std over the finite values of ``tiles`` (see ``Cube.norm_stats``).

    Args:
        cube: The cube.
        tiles: Tiles to measure (training tiles).
        sources: Source indices.

    Returns:
        ``{"method": "mean_std", "sources": {name: {"mean", "std"}}}``.
    """
    names = [cube.source_names[i] for i in sources]
    continuous = [cube.source_types[i] == "continuous" for i in sources]
    # float64 sums: float32 loses digits over millions of pixels
    count = np.zeros(len(sources))
    total = np.zeros(len(sources))
    total_sq = np.zeros(len(sources))
    for tile in tiles:
        x = cube.read(tile, sources=names).astype(np.float64)
        x = x.reshape(len(sources), -1)
        finite = np.isfinite(x)
        x = np.where(finite, x, 0.0)
        count += finite.sum(axis=1)
        total += x.sum(axis=1)
        total_sq += (x * x).sum(axis=1)
    out: dict[str, dict[str, float]] = {}
    for k, name in enumerate(names):
        if not continuous[k] or count[k] == 0:
            out[name] = {"mean": 0.0, "std": 1.0}
            continue
        mean = total[k] / count[k]
        var = max(total_sq[k] / count[k] - mean * mean, 0.0)
        std = float(np.sqrt(var))
        out[name] = {"mean": float(mean), "std": std if std > 0 else 1.0}
    return {"method": "mean_std", "sources": out}


class CubeDataset(Dataset):
    """Samples ``(x, y, valid)`` of cube tiles for ``networks``.

    ``x`` is (S, T, p, p) float32, normalized when ``norm`` is given, with nodata and
    padding set to 0 (the mean after normalization); ``y`` is (p, p) int64 in {0, 1} (all 0
    for an unlabelled cube); ``valid`` is (p, p) bool, False on nodata and padding. ``p`` is
    the tile's patch size, so edge tiles are padded to full size.

    Args:
        cube: The cube.
        tiles: The tiles, one sample each.
        norm: Statistics from ``Cube.norm_stats`` (sources it lacks stay raw).
        sources: Source indices, in output order.
    """

    def __init__(self, cube: Cube, tiles: Sequence[Tile], *, norm: dict[str, Any] | None,
                 sources: Sequence[int]) -> None:
        self.cube = cube
        self.tiles = list(tiles)
        self.names = [cube.source_names[i] for i in sources]
        stats = (norm or {}).get("sources", {})
        self._mean = np.array([stats.get(n, {}).get("mean", 0.0) for n in self.names],
                              np.float32)[:, None, None, None]
        self._std = np.array([stats.get(n, {}).get("std", 1.0) for n in self.names],
                             np.float32)[:, None, None, None]

    def __len__(self) -> int:
        return len(self.tiles)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        tile = self.tiles[index]
        x = (self.cube.read(tile, sources=self.names) - self._mean) / self._std
        x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
        valid = np.asarray(self.cube.valid[tile.slices])
        labels = self.cube.labels
        y = (np.zeros(valid.shape, np.int64) if labels is None
             else (np.asarray(labels[tile.slices]) > 0).astype(np.int64))
        p = tile.patch
        pad = ((0, p - tile.height), (0, p - tile.width))
        if pad != ((0, 0), (0, 0)):
            x = np.pad(x, ((0, 0), (0, 0), *pad))
            y = np.pad(y, pad)
            valid = np.pad(valid, pad, constant_values=False)
        return torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(valid.copy())
