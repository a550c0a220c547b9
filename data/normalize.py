"""Normalization statistics of cube tiles: the winsorized z-score and plain moments.

Numpy only: a cube measures its training tiles here (``Cube.norm_stats``) without torch,
which only the data sets (:mod:`data.dataset`) need.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from data.errors import SceneSpecError
from data.tiles import Tile

__all__ = ["NORMALIZATIONS", "ROBUST_CLIP", "ROBUST_PERCENTILES", "norm_stats"]


class _Measured(Protocol):
    """What :func:`norm_stats` reads of a cube (a :class:`data.Cube`)."""

    source_names: list[str]
    source_types: list[str]
    dates: list[str]
    valid: np.ndarray

    def read(self, window: Tile, *, sources: Sequence[str]) -> np.ndarray:
        """Values of ``sources`` in ``window``, ``(S, T, h, w)``."""


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


def norm_stats(cube: _Measured, tiles: Sequence[Tile], sources: Sequence[int], *,
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
