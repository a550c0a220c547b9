"""Forward passes over data sets and tiled, blended passes over a scene."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from torch import nn
from torch.utils.data import TensorDataset

from networks.inference import (
    blend_window,
    blended_strips,
    evaluate_split,
    landslide_log_odds,
    landslide_probability,
    split_log_odds,
)


class PixelModel(nn.Module):
    """Two-class logits from each pixel's own inputs only (no context across pixels)."""

    def __init__(self, sources: int = 2, times: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(sources * times, 2, 1)
        torch.manual_seed(0)
        nn.init.normal_(self.conv.weight, std=2.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, t, h, w = x.shape
        return self.conv(x.reshape(b, s * t, h, w))


def test_log_odds_and_probability_are_the_two_logits_seen_two_ways():
    model = PixelModel().eval()
    x = torch.randn(2, 2, 3, 5, 7)
    odds, prob = landslide_log_odds(model, x), landslide_probability(model, x)
    assert odds.shape == prob.shape == (2, 5, 7)
    assert torch.allclose(torch.sigmoid(odds), prob, atol=1e-6)


def test_split_log_odds_keep_valid_pixels_in_tile_order_and_score_like_sklearn():
    torch.manual_seed(1)
    x = torch.randn(5, 2, 3, 4, 4)
    y = (torch.rand(5, 4, 4) < 0.4).long()
    valid = torch.rand(5, 4, 4) > 0.2
    model = PixelModel().eval()
    scores, labels = split_log_odds(model, TensorDataset(x, y, valid), batch_size=2)
    want = landslide_log_odds(model, x)[valid].numpy()
    assert np.allclose(scores, want, atol=1e-6)
    assert (labels == (y[valid].numpy() > 0)).all()
    test = evaluate_split(model, TensorDataset(x, y, valid), None, batch_size=3)
    assert test["pixels"] == int(valid.sum())
    assert test["at_0.5"]["auc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-6)


def test_blend_window_sums_to_one_where_tiles_overlap():
    tile, overlap = 32, 8
    w = blend_window(tile, overlap)[tile // 2]  # a middle row: the window is separable
    stride = tile - overlap
    total = np.zeros(stride * 3 + overlap)
    for k in range(3):
        total[k * stride : k * stride + tile] += w
    inner = total[overlap:-overlap]  # the scene's outer edges have one tile only
    assert np.allclose(inner, 1.0, atol=1e-6)
    assert w.min() > 0  # no pixel loses all weight at the scene's border


@pytest.mark.parametrize(("tile", "overlap", "batch"), [(8, 2, 3), (16, 4, 1), (40, 0, 8)])
def test_blended_strips_of_a_pixelwise_model_give_the_untiled_map(tile, overlap, batch):
    """Blending is a weighted mean of tile predictions: a model without context gives the
    same probability in every tile, so the blended map is the map of one pass."""
    height, width = 29, 23
    scene = torch.randn(1, 2, 3, height, width)
    model = PixelModel().eval()
    stride = tile - overlap
    n_rows = max(1, -(-(height - overlap) // stride))
    n_cols = max(1, -(-(width - overlap) // stride))
    strips = [
        [SimpleNamespace(row=i * stride, col=j * stride, height=min(tile, height - i * stride),
                         width=min(tile, width - j * stride)) for j in range(n_cols)]
        for i in range(n_rows)
    ]
    read_sizes = []

    def read(tiles):
        read_sizes.append(len(tiles))
        out = torch.zeros(len(tiles), 2, 3, tile, tile)
        for k, t in enumerate(tiles):
            out[k, ..., : t.height, : t.width] = scene[
                0, ..., t.row : t.row + t.height, t.col : t.col + t.width]
        return out

    rows = list(blended_strips(model, strips, read, height=height, width=width, tile=tile,
                               overlap=overlap, batch_size=batch))
    assert [r0 for r0, _ in rows] == [k * stride for k in range(n_rows)]
    assert max(read_sizes) <= batch
    got = np.concatenate([values for _, values in rows])
    assert got.shape == (height, width) and got.dtype == np.float32
    want = landslide_probability(model, scene)[0].numpy()
    assert np.allclose(got, want, atol=1e-5)
