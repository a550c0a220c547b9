"""How much of a scene lies far outside the training range of each input channel.

A network extrapolates where its inputs leave the range it was trained on (another elevation
band, haze in one band), and a map there is a guess; a tree stays flat instead. Telling the
user which channels leave the range, and on what share of the scene, says how far to trust
the map. The range is the training pixels' robust ``low`` / ``high`` percentiles that the
checkpoint's normalization statistics carry.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["WARN_SHARE", "outside_training", "shifted_channels"]

WARN_SHARE = 0.01
"""Channels with at least this share of valid values far outside their range are named."""
_ROWS = 256


def outside_training(cube: Any, norm: Mapping[str, Any] | None, sources: Sequence[str],
                     tiles: Sequence[Any] | None = None) -> dict[str, float]:
    """Per channel, the share of valid values more than the training range's width beyond it.

    "Far outside" is below ``low - (high - low)`` or above ``high + (high - low)``, with
    ``low`` / ``high`` the training percentiles (``robust`` normalization): on the training
    pixels themselves only outliers fall there, so a share of a few percent is a shift.

    Args:
        cube: The scene's :class:`data.Cube`.
        norm: The checkpoint's normalization statistics (``None``, ``mean_std`` or
            categorical channels: nothing to compare, so they are left out).
        sources: The checkpoint's source names, all present in the cube.
        tiles: Only these tiles (e.g. a test split); default the whole scene.

    Returns:
        ``{source: share}`` of the channels with a training range, in ``sources`` order.
    """
    ranges = {name: (float(s["low"]), float(s["high"]))
              for name, s in ((norm or {}).get("sources") or {}).items()
              if name in sources and "low" in s and "high" in s}
    names = [n for n in sources if n in ranges]
    if not names:
        return {}
    low = np.array([ranges[n][0] for n in names])[:, None, None, None]
    high = np.array([ranges[n][1] for n in names])[:, None, None, None]
    span = high - low
    outside = np.zeros(len(names))
    seen = np.zeros(len(names))
    height, width = cube.valid.shape
    windows = ([t.slices for t in tiles] if tiles is not None else
               [(slice(r0, min(height, r0 + _ROWS)), slice(0, width))
                for r0 in range(0, height, _ROWS)])
    for window in windows:
        x = cube.read(window, sources=names)  # (S, T, rows, cols)
        use = np.isfinite(x) & np.asarray(cube.valid[window])[None, None]
        far = use & ((x < low - span) | (x > high + span))
        outside += far.sum(axis=(1, 2, 3))
        seen += use.sum(axis=(1, 2, 3))
    return {n: float(o / s) if s else 0.0 for n, o, s in zip(names, outside, seen, strict=True)}


def shifted_channels(shares: Mapping[str, float]) -> str:
    """The channels at :data:`WARN_SHARE` or more, for a warning (``""`` when none).

    Args:
        shares: :func:`outside_training`'s result.

    Returns:
        e.g. ``"B10 28.2 %, dem 3.0 %"``.
    """
    return ", ".join(f"{name} {100 * share:.1f} %" for name, share in shares.items()
                     if share >= WARN_SHARE)
