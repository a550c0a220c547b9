"""Torch datasets of cube tiles (``Cube.dataset``), normalized as ``Cube.norm_stats`` measured."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import Dataset

from data.tiles import Region, Tile

__all__ = ["CubeDataset", "TileSource"]


class TileSource(Protocol):
    """What a :class:`CubeDataset` reads of its cube (a :class:`data.Cube`)."""

    source_names: list[str]
    valid: np.ndarray
    labels: np.ndarray | None

    def read(self, window: Tile, *, sources: Sequence[str]) -> np.ndarray:
        """Values of ``sources`` in ``window``, ``(S, T, h, w)`` float32."""

    def region_of(self, tile: Tile) -> Region:
        """The region (the scene, or its patch) that holds ``tile``."""


class CubeDataset(Dataset):
    """Samples ``(x, y, valid)`` of cube tiles for ``networks``.

    ``x`` is (S, T, p, p) float32, normalized when ``norm`` is given (``robust``:
    ``(v - center) / scale`` clipped to +-``clip``; ``mean_std``: ``(v - mean) / std``), with
    nodata and padding set to 0 (the centre after normalization); ``y`` is (p, p) int64 in
    {0, 1} (all 0 for an unlabelled cube); ``valid`` is (p, p) bool, False on nodata and
    padding. ``p`` is the tile's patch size, so edge tiles are padded to full size.

    With ``context`` each sample reads ``context`` more pixels of its region (the scene,
    or its own patch) on every side and is ``p + 2 * context`` wide, the tile at its
    centre; ``valid`` is False outside the tile, so metrics score the tile alone, seen
    as a map sees it (``hpo predict`` reads its windows with a halo as well) rather than
    cut off at its edges.

    Args:
        cube: The cube.
        tiles: The tiles, one sample each.
        norm: Statistics from ``Cube.norm_stats`` (sources it lacks, or whose entry lacks
            the method's keys, such as categorical ones, stay raw).
        sources: Source indices, in output order.
        context: Pixels of surrounding input read around every tile.
    """

    def __init__(self, cube: TileSource, tiles: Sequence[Tile], *, norm: dict[str, Any] | None,
                 sources: Sequence[int], context: int = 0) -> None:
        self.cube = cube
        self.tiles = list(tiles)
        self.context = context
        self.names = [cube.source_names[i] for i in sources]
        norm = norm or {}
        stats = norm.get("sources", {})
        # statistics saved before robust scaling existed have no method key: mean / std
        shift, scale = ("center", "scale") if norm.get("method") == "robust" else ("mean", "std")
        self._shift = np.array([stats.get(n, {}).get(shift, 0.0) for n in self.names],
                               np.float32)[:, None, None, None]
        self._scale = np.array([stats.get(n, {}).get(scale, 1.0) for n in self.names],
                               np.float32)[:, None, None, None]
        self._clip: float | None = norm.get("clip")

    def __len__(self) -> int:
        return len(self.tiles)

    def landslides(self) -> tuple[int, int]:
        """Landslide pixels and landslides in the tiles, read from the labels alone.

        Landslides are connected regions, cut at tile edges; ``(0, 0)`` for an
        unlabelled cube. A score such as F1 rests on these: on a dozen landslides one
        more or one fewer found moves it by several points, whatever the configuration.
        """
        from scipy.ndimage import label  # first use only: scipy is slow to import

        labels = self.cube.labels
        if labels is None:
            return 0, 0
        pixels = regions = 0
        for tile in self.tiles:
            y = (np.asarray(labels[tile.slices]) > 0) & np.asarray(self.cube.valid[tile.slices])
            pixels += int(y.sum())
            regions += label(y)[1] if y.any() else 0
        return pixels, regions

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        tile = self.tiles[index]
        window, top, left = self._window(tile)
        x = (self.cube.read(window, sources=self.names) - self._shift) / self._scale
        if self._clip is not None:
            np.clip(x, -self._clip, self._clip, out=x)
        x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
        valid = np.array(self.cube.valid[window.slices])
        if self.context:
            inner = np.zeros_like(valid)
            inner[tile.row - window.row: tile.row - window.row + tile.height,
                  tile.col - window.col: tile.col - window.col + tile.width] = True
            valid &= inner
        labels = self.cube.labels
        y = (np.zeros(valid.shape, np.int64) if labels is None
             else (np.asarray(labels[window.slices]) > 0).astype(np.int64))
        p = tile.patch + 2 * self.context
        pad = ((top, p - top - window.height), (left, p - left - window.width))
        if pad != ((0, 0), (0, 0)):
            x = np.pad(x, ((0, 0), (0, 0), *pad))
            y = np.pad(y, pad)
            valid = np.pad(valid, pad, constant_values=False)
        return torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(valid)

    def _window(self, tile: Tile) -> tuple[Tile, int, int]:
        """The window read for ``tile`` and the padding rows and columns before it.

        The window is the tile grown by the context on every side, cut to the tile's
        region; the padding puts the tile at the centre of the sample.
        """
        if not self.context:
            return tile, 0, 0
        region = self.cube.region_of(tile)
        r0 = max(region.row, tile.row - self.context)
        c0 = max(region.col, tile.col - self.context)
        r1 = min(region.row + region.height, tile.row + tile.height + self.context)
        c1 = min(region.col + region.width, tile.col + tile.width + self.context)
        window = Tile(r0, c0, r1 - r0, c1 - c0, tile.patch)
        return window, self.context - (tile.row - r0), self.context - (tile.col - c0)
