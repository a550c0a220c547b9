from __future__ import annotations

import numpy as np
import pytest

import data
from data.splits import split_tiles
from data.tiles import Region, make_tiles

from .conftest import H, W


def _owner(tiles_by_split, shape):
    owner = np.full(shape, -1)
    for k, tiles in enumerate(tiles_by_split):
        for t in tiles:
            region = owner[t.slices]
            assert ((region == -1) | (region == k)).all(), "a pixel is in two splits"
            region[...] = k
    return owner


@pytest.mark.parametrize("overlap", [0, 3])
def test_blocked_split_leaks_no_pixel(overlap):
    regions = [Region(0, 0, 100, 90)]
    tiles = make_tiles(regions, 10, overlap)
    train, val, test, _ = split_tiles(tiles, method="blocked", fractions=(0.6, 0.1, 0.3),
                                      block_size=2, seed=3, by_region=False,
                                      stride=10 - overlap)
    assert train and val and test
    _owner((train, val, test), (100, 90))
    if overlap == 0:  # without overlap nothing needs dropping
        assert len(train) + len(val) + len(test) == len(tiles)


def test_random_split_overlapping_tiles_do_share_pixels():
    tiles = make_tiles([Region(0, 0, 64, 64)], 8, 4)
    splits = split_tiles(tiles, method="random", fractions=(0.6, 0.1, 0.3), block_size=2,
                         seed=0, by_region=False, stride=4)[:3]
    with pytest.raises(AssertionError, match="two splits"):
        _owner(splits, (64, 64))  # the check above can fail


def test_split_fractions_and_seed(cube):
    a = cube.splits(patch_size=8, seed=1)
    b = cube.splits(patch_size=8, seed=1)
    c = cube.splits(patch_size=8, seed=2)
    n = len(a.train) + len(a.val) + len(a.test)
    assert n == len(cube.tiles(patch_size=8)) == 6 * 5
    assert (len(a.val), len(a.test)) == (round(0.1 * n), round(0.3 * n))
    assert a.train == b.train and a.train != c.train
    paper = cube.splits(patch_size=8, method="paper", fractions=(0.5, 0.5, 0.0))
    assert len(paper.test) == round(0.3 * n) and len(paper.val) == round(0.35 * n)
    blocked = cube.splits(patch_size=8, method="blocked", block_size=2)
    _owner((blocked.train, blocked.val, blocked.test), (H, W))
    with pytest.raises(data.SceneSpecError, match="fractions"):
        cube.splits(fractions=(0.5, 0.5, 0.5))
    with pytest.raises(data.SceneSpecError, match="split method"):
        cube.splits(method="kfold")


def test_test_split_is_withheld_from_tuning(cube, monkeypatch):
    splits = cube.splits(patch_size=8, seed=0)
    assert splits.test  # the explicit accessor works
    tuning = splits.for_tuning()
    assert tuning.train == splits.train and tuning.val == splits.val
    with pytest.raises(data.TestSplitWithheldError, match="withheld"):
        _ = tuning.test
    # the tuning code path (stats + datasets of train / val) never reads a test tile's pixels
    read = []
    original = data.Cube.read

    def spy(self, window, **kw):
        read.append(window)
        return original(self, window, **kw)

    monkeypatch.setattr(data.Cube, "read", spy)
    norm = cube.norm_stats(tuning.train)
    for part in (tuning.train, tuning.val):
        ds = cube.dataset(part, norm=norm)
        for i in range(len(ds)):
            ds[i]
    assert read and not set(read) & set(splits.test)


def test_empty_training_labels_raise(cube):
    empty = cube.with_target("new")
    empty._label_stack = np.zeros_like(cube.label_stack)
    empty.labels = np.zeros_like(cube.labels)
    with pytest.raises(data.EmptyLabelError, match=r"2014_label.tif.*no landslide.*hint"):
        empty.splits(patch_size=8)


def test_patch_collection_splits_by_patch():
    n, p = 10, 16
    arrays = {
        "dynamic": np.random.default_rng(0).random((2, 1, n * p, p)).astype(np.float32),
        "static": np.zeros((0, 1, n * p, p), np.float32),
        "valid": np.ones((n * p, p), bool),
        "labels": np.ones((1, n * p, p), np.uint8),
    }
    meta = {"sources": [{"name": f"b{i}", "kind": "optical", "type": "continuous",
                         "store": "dynamic", "index": i} for i in range(2)],
            "dates": ["d"], "label_dates": ["d"], "grid": None, "patch_shape": [p, p]}
    cube = data.Cube(arrays, meta)
    assert cube.crs is None and cube.transform is None
    splits = cube.splits(patch_size=8, method="random", seed=4)
    patch_of = {k: {t.row // p for t in tiles}
                for k, tiles in zip("tvs", (splits.train, splits.val, splits.test), strict=True)}
    assert not patch_of["t"] & patch_of["v"] and not patch_of["t"] & patch_of["s"]
    assert len(patch_of["s"]) == 3 and len(patch_of["v"]) == 1
    for t in splits.train:  # tiles never cross a patch boundary
        assert t.row // p == (t.row + t.height - 1) // p
    x, y, valid = cube.dataset(splits.train)[0]
    assert x.shape == (2, 1, 8, 8)
