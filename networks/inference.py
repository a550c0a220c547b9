"""Forward passes of a trained model: over a data set's tiles, and tiled over a whole scene.

A scene is run tile by tile and blended strip by strip (:func:`blended_strips`), so memory
grows with the scene's width, never with its height: about ``2 * tile * width`` floats of
blending buffers plus one batch of tiles. Neighbouring tiles overlap and are blended with
a raised-cosine window (:func:`blend_window`), so tile seams (where a fully convolutional
network sees least context) do not show in the map.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol, TypeVar

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from networks.metrics import score_log_odds
from networks.train import model_device

# Never give a pixel zero weight: at the scene's border no neighbour shares it, and the
# blend divides by the summed weights.
_MIN_WEIGHT = 1e-3


class TileWindow(Protocol):
    """Where a tile lies in its strip: the columns it starts at and the pixels it covers."""

    @property
    def col(self) -> int:
        """First column in the scene."""

    @property
    def height(self) -> int:
        """Rows it covers (fewer than the tile side at the scene's bottom edge)."""

    @property
    def width(self) -> int:
        """Columns it covers (fewer than the tile side at the scene's right edge)."""


T = TypeVar("T", bound=TileWindow)


def landslide_probability(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Landslide probabilities of a batch: ``(B, S, T, h, w)`` -> ``(B, h, w)``.

    Args:
        model: A model of :mod:`networks` (two-class logits), in eval mode.
        x: Normalized inputs on the model's device.

    Returns:
        The probability of the landslide class per pixel.
    """
    with torch.no_grad():
        return torch.softmax(model(x.float()).float(), dim=1)[:, 1]


def landslide_log_odds(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Landslide log-odds of a batch: ``(B, S, T, h, w)`` -> ``(B, h, w)``.

    The landslide logit minus the background logit, which ranks pixels where float32
    probabilities of a confident model would all round to 0 or 1.

    Args:
        model: A model of :mod:`networks` (two-class logits), in eval mode.
        x: Normalized inputs on the model's device.

    Returns:
        A tensor on the model's device.
    """
    with torch.no_grad():
        logits = model(x.float()).float()
    return logits[:, 1] - logits[:, 0]


def split_log_odds(
    model: nn.Module, data_set: Dataset, batch_size: int = 8
) -> tuple[np.ndarray, np.ndarray]:
    """Landslide log-odds and labels of every valid pixel of a split, in tile order.

    Log-odds (landslide logit minus background logit), not probabilities: a confident
    model's float32 probabilities are exactly 0 or 1 on many pixels, and their ties would
    hide its ranking from the AUC and the threshold search.

    Args:
        model: The trained model (eval mode, on its device).
        data_set: A data set of ``(x, y, valid)``.
        batch_size: Tiles per forward pass.

    Returns:
        ``(log_odds float32, label bool)``, 1-D and aligned: the same data set always
        gives its pixels in the same order, so several models of one split can be
        averaged pixel by pixel (:func:`networks.metrics.mean_probability_log_odds`).
    """
    device = model_device(model)
    scores, labels = [], []
    model.eval()
    for x, y, valid in DataLoader(data_set, batch_size=batch_size):
        keep = valid.bool()
        scores.append(landslide_log_odds(model, x.to(device)).cpu()[keep].numpy())
        labels.append(y[keep].numpy() > 0)
    return np.concatenate(scores), np.concatenate(labels)


def evaluate_split(
    model: nn.Module, data_set: Dataset, threshold: float | None, batch_size: int = 8
) -> dict[str, Any]:
    """Test metrics of a trained model: at 0.5 and at a validation-chosen threshold.

    Args:
        model: The trained model (eval mode, on its device).
        data_set: A data set of ``(x, y, valid)`` (the test split).
        threshold: The validation-chosen threshold, or ``None``.
        batch_size: Tiles per forward pass.

    Returns:
        What :func:`networks.metrics.score_log_odds` returns.
    """
    return score_log_odds(*split_log_odds(model, data_set, batch_size), threshold)


def blend_window(size: int, overlap: int) -> np.ndarray:
    """A ``(size, size)`` weight: 1 inside, raised-cosine ramps over the overlap at each edge.

    Where two tiles overlap their ramps add up to (about) one, so the blend fades from one
    tile's prediction to the next instead of switching at a seam.

    Args:
        size: Tile side.
        overlap: Pixels shared by neighbouring tiles (0: no ramp).

    Returns:
        float32 weights in ``(0, 1]``.
    """
    ramp = np.ones(size, np.float64)
    if overlap > 0:
        k = np.arange(min(overlap, size))
        up = 0.5 - 0.5 * np.cos(np.pi * (k + 0.5) / overlap)
        ramp[: len(k)] = np.minimum(ramp[: len(k)], up)
        ramp[size - len(k) :] = np.minimum(ramp[size - len(k) :], up[::-1])
    ramp = np.maximum(ramp, _MIN_WEIGHT)
    return np.outer(ramp, ramp).astype(np.float32)


def blended_strips(
    model: nn.Module,
    strips: Sequence[Sequence[T]],
    read: Callable[[Sequence[T]], torch.Tensor],
    *,
    height: int,
    width: int,
    tile: int,
    overlap: int,
    batch_size: int = 8,
    device: torch.device | str | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """Blended landslide probabilities of a scene, one finished strip of rows at a time.

    Strip ``k`` holds the tiles whose top row is ``k * (tile - overlap)``, left to right;
    each tile's probabilities are weighted with :func:`blend_window` and summed with its
    neighbours'. Rows are yielded once no later tile can reach them, so only two tiles'
    height of the scene is ever held.

    Args:
        model: A model of :mod:`networks` (two-class logits), in eval mode.
        strips: The tiles, strip by strip from the top (every strip but the last full).
        read: Normalized inputs of a batch of tiles, ``(B, S, T, tile, tile)``, each
            padded to the full tile side.
        height: Rows of the scene.
        width: Columns of the scene.
        tile: Tile side.
        overlap: Rows and columns shared by neighbouring tiles.
        batch_size: Tiles per forward pass.
        device: Where the inputs go (default: the model's device).

    Yields:
        ``(first row, probabilities)``: float32 rows in [0, 1] of the full width, top to
        bottom, every row of the scene exactly once.
    """
    device = model_device(model) if device is None else torch.device(device)
    stride = tile - overlap
    window = blend_window(tile, overlap)
    # Rows [r0, r0 + tile) of the strip being blended; rows above r0 + stride are final
    # once the strip is done, since the next strip starts there.
    acc = np.zeros((tile, width), np.float32)
    weight = np.zeros((tile, width), np.float32)
    for k, strip in enumerate(strips):
        r0 = k * stride
        for start in range(0, len(strip), batch_size):
            chunk = strip[start : start + batch_size]
            probs = landslide_probability(model, read(chunk).to(device)).cpu().numpy()
            for t, p in zip(chunk, probs, strict=True):
                h, w = t.height, t.width
                acc[:h, t.col : t.col + w] += p[:h, :w] * window[:h, :w]
                weight[:h, t.col : t.col + w] += window[:h, :w]
        n_rows = (height - r0) if k == len(strips) - 1 else min(stride, height - r0)
        values = acc[:n_rows] / np.maximum(weight[:n_rows], 1e-12)
        yield r0, np.clip(values, 0.0, 1.0)  # blending cannot leave [0, 1], rounding may
        acc = np.roll(acc, -stride, axis=0)
        weight = np.roll(weight, -stride, axis=0)
        acc[tile - stride :] = 0
        weight[tile - stride :] = 0


__all__ = [
    "TileWindow",
    "blend_window",
    "blended_strips",
    "evaluate_split",
    "landslide_log_odds",
    "landslide_probability",
    "split_log_odds",
]
