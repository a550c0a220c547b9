"""Torch datasets of cube tiles and the normalization statistics they use."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import Dataset

from data.errors import SceneSpecError
from data.splits import Tile

if TYPE_CHECKING:
    from data.cube import Cube

__all__ = ["NORMALIZATIONS", "ROBUST_CLIP", "ROBUST_PERCENTILES", "CubeDataset", "norm_stats"]

NORMALIZATIONS = ("robust", "mean_std")
"""Normalization methods: the study file's ``normalization`` option."""
ROBUST_PERCENTILES = (2.0, 98.0)
"""Values outside these percentiles are pulled in to them before the robust centre and scale
are measured, so a few outliers (saturated pixels, bad DEM cells) cannot dominate them."""
ROBUST_CLIP = 10.0
"""Robustly scaled values are clipped to +-this by default (the study file's ``clip``): real
tails (landslide spectra are often in the top percent) survive, sensor glitches thousands of
scales out do not reach the network. A smaller clip also bounds how far a test scene outside
the training range (another elevation band, haze in one band) pushes a network, which
extrapolates where a tree stays flat."""
# Percentiles are measured on at most this many valid values per source (a seeded uniform
# sample), so the statistics of a cube larger than memory need a bounded amount of it.
_SAMPLE_CAP = 1 << 19


def norm_stats(cube: Cube, tiles: Sequence[Tile], sources: Sequence[int], *,
               method: str = "robust", clip: float = ROBUST_CLIP) -> dict[str, Any]:
    """Per-source normalization statistics over ``tiles`` (see ``Cube.norm_stats``).

    Every continuous source gets ``mean`` and ``std``: the plain moments of its finite
    values, which ``mean_std`` applies (as every earlier version did, so a ``mean_std``
    study reproduces its results). ``robust`` adds, over the *valid* pixels only (never
    nodata, padding or ignored mask codes): ``low`` / ``high``, the
    ``ROBUST_PERCENTILES``; ``center`` / ``scale``, the mean and standard deviation of the
    values clipped to [low, high] (a winsorized z-score: unlike median / IQR it keeps the
    training data centred at 0 with unit spread, and unlike min / max or mean / std a few
    outliers cannot stretch it); and the result's ``clip``. Categorical
    (one-hot) sources get ``{"mean": 0, "std": 1}`` and are left as they are.

    Args:
        cube: The cube.
        tiles: Tiles to measure (training tiles).
        sources: Source indices.
        method: One of ``NORMALIZATIONS``.
        clip: ``robust`` values are clipped to +-this many scales (the study file's
            ``clip``).

    Returns:
        ``{"method": method, "sources": {name: {...}}}`` (plus ``"clip"`` for ``robust``).

    Raises:
        SceneSpecError: ``method`` is unknown.
    """
    if method not in NORMALIZATIONS:
        raise SceneSpecError(f"normalization {method!r} is unknown", key="normalization",
                             hint=f"use one of {list(NORMALIZATIONS)}")
    names = [cube.source_names[i] for i in sources]
    continuous = [cube.source_types[i] == "continuous" for i in sources]
    robust = method == "robust"
    # float64 sums: float32 loses digits over millions of pixels
    count = np.zeros(len(sources))
    total = np.zeros(len(sources))
    total_sq = np.zeros(len(sources))
    n_values = sum(t.height * t.width for t in tiles) * len(cube.dates)
    keep = min(1.0, _SAMPLE_CAP / max(n_values, 1))
    rng = np.random.default_rng(0)
    samples: list[list[np.ndarray]] = [[] for _ in sources]
    for tile in tiles:
        x = cube.read(tile, sources=names).astype(np.float64)
        if robust:
            pick = np.broadcast_to(np.asarray(cube.valid[tile.slices]), x.shape[1:]).ravel()
            if keep < 1.0:
                pick = pick & (rng.random(pick.size) < keep)
        x = x.reshape(len(sources), -1)
        finite = np.isfinite(x)
        if robust:
            for k in np.flatnonzero(continuous):
                samples[k].append(x[k, pick & finite[k]])
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
        std = float(np.sqrt(var)) or 1.0
        out[name] = {"mean": float(mean), "std": std}
        values = np.concatenate(samples[k]) if robust else np.empty(0)
        if values.size:
            out[name] |= _winsorized(values, fallback_scale=std)
    result: dict[str, Any] = {"method": method, "sources": out}
    if robust:
        result["clip"] = float(clip)
    return result


def _winsorized(values: np.ndarray, fallback_scale: float) -> dict[str, float]:
    """``low`` / ``high`` percentiles and the mean / std of ``values`` clipped to them."""
    low, high = np.percentile(values, ROBUST_PERCENTILES)
    clipped = np.clip(values, low, high)
    # a channel that is constant on 96 % of its pixels (rain in a dry month) has no
    # spread inside the percentiles; its plain spread still scales the rare values
    scale = float(clipped.std()) or fallback_scale
    return {"low": float(low), "high": float(high), "center": float(clipped.mean()),
            "scale": scale}


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

    def __init__(self, cube: Cube, tiles: Sequence[Tile], *, norm: dict[str, Any] | None,
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
