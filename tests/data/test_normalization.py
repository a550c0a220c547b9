"""Normalization statistics: robust by default, from valid training pixels only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import data
from data import normalize
from data.normalize import ROBUST_CLIP

from .conftest import write_tif

SIDE = 16


def _folder(root: Path, scale: float = 1.0, scaled: frozenset[int] = frozenset(),
            **options: Any) -> data.Cube:
    """Six patches of one channel ~ N(100, 10) with outliers, ignored pixels and padding.

    1 % of the pixels are 1e6 (valid: real outliers); mask code 255 marks two rows ignored
    whose values are 1e9; the last patch is 4 rows short (padding). Patches in ``scaled``
    are multiplied by ``scale``.
    """
    rng = np.random.default_rng(7)
    for i in range(6):
        h = SIDE - 4 if i == 5 else SIDE
        values = rng.normal(100, 10, (h, SIDE))
        values[rng.random((h, SIDE)) < 0.01] = 1e6
        values[:2] = 1e9
        mask = np.zeros((h, SIDE), np.uint8)
        mask[5:8, 5:8] = 1
        mask[:2] = 255
        factor = scale if i in scaled else 1.0
        write_tif(root / "img" / f"{i}.tif", (values * factor).astype(np.float32))
        write_tif(root / "mask" / f"{i}.tif", mask)
    section = {"format": "patches", "path": str(root), "images": "img/*.tif",
               "masks": "mask/{stem}.tif", "channels": [{"name": "v", "kind": "factor"}],
               "mask_codes": {"landslide": [1], "background": [0], "ignore": [255]},
               "patch_size": SIDE, "fractions": [0.5, 0.25, 0.25], "seed": 1, **options}
    return data.build_cube(section, base_dir=root)


def _valid_values(cube: data.Cube, tiles) -> np.ndarray:
    return np.concatenate([cube.read(t, sources=["v"])[0, 0][cube.valid[t.slices]]
                           for t in tiles])


@pytest.mark.parametrize("method", ["robust", "mean_std"])
def test_statistics_come_from_the_training_patches_only(tmp_path, method):
    cube = _folder(tmp_path / "a")
    splits = cube.splits()
    held_out = {t.row // SIDE for t in (*splits.val, *splits.test)}
    assert held_out and not held_out & {t.row // SIDE for t in splits.train}
    changed = _folder(tmp_path / "b", scale=1000.0, scaled=frozenset(held_out))
    again = changed.splits()
    assert again.train == splits.train and again.val == splits.val
    stats = cube.norm_stats(splits.train, method=method)
    assert changed.norm_stats(again.train, method=method) == stats
    assert changed.norm_stats(again.val, method=method) != cube.norm_stats(splits.val,
                                                                           method=method)


def test_robust_scaling_ignores_outliers_padding_and_ignored_pixels(tmp_path):
    cube = _folder(tmp_path)
    train = cube.splits().train
    stats = cube.norm_stats(train)
    assert stats["method"] == "robust" and stats["clip"] == ROBUST_CLIP
    v = stats["sources"]["v"]
    assert 95 < v["center"] < 105 and 7 < v["scale"] < 11  # the bulk: N(100, 10)
    assert v["high"] < 200  # neither the 1e6 outliers nor the ignored 1e9 rows reach it
    assert v["std"] > 1e4  # the plain moments are dominated by the outliers
    valid = _valid_values(cube, train)
    low, high = np.percentile(valid, [2, 98])
    assert (v["low"], v["high"]) == pytest.approx((low, high))
    assert v["center"] == pytest.approx(np.clip(valid, low, high).mean())
    ds = cube.dataset(train, norm=stats)
    xs, masks = zip(*[(x[0, 0], m) for x, _, m in (ds[i] for i in range(len(ds)))], strict=True)
    x = torch.stack(xs)[torch.stack(masks)]
    assert x.max().item() == ROBUST_CLIP and x.min().item() > -ROBUST_CLIP
    assert abs(x.median().item()) < 0.2


def test_a_bounded_sample_gives_nearly_the_exact_statistics(tmp_path, monkeypatch):
    cube = _folder(tmp_path)
    train = cube.splits().train
    exact = cube.norm_stats(train)["sources"]["v"]
    monkeypatch.setattr(normalize, "_SAMPLE_CAP", 300)  # fewer than the training values
    sampled = cube.norm_stats(train)["sources"]["v"]
    assert sampled != exact and sampled["mean"] == exact["mean"]  # moments stay exact
    assert sampled["center"] == pytest.approx(exact["center"], abs=0.2 * exact["scale"])
    assert sampled["scale"] == pytest.approx(exact["scale"], rel=0.2)
    assert cube.norm_stats(train)["sources"]["v"] == sampled  # the sample is seeded


def test_mean_std_is_selectable_and_unclipped(tmp_path):
    cube = _folder(tmp_path, normalization="mean_std")
    train = cube.splits().train
    stats = cube.norm_stats(train)
    assert stats["method"] == "mean_std" and set(stats["sources"]["v"]) == {"mean", "std"}
    x, _, valid = cube.dataset(train[:1], norm=stats)[0]
    raw = torch.from_numpy(cube.read(train[0], sources=["v"])[0, 0])
    mean, std = stats["sources"]["v"]["mean"], stats["sources"]["v"]["std"]
    assert torch.allclose(x[0, 0][valid], ((raw - mean) / std)[valid])
    with pytest.raises(data.SceneSpecError, match="normalization 'minmax' is unknown"):
        cube.norm_stats(train, method="minmax")


def test_statistics_without_a_method_are_applied_as_mean_std(tmp_path):
    cube = _folder(tmp_path)
    tile = cube.tiles()[0]
    x, _, _ = cube.dataset([tile], norm={"sources": {"v": {"mean": 1.0, "std": 2.0}}})[0]
    raw = torch.from_numpy(cube.read(tile, sources=["v"])[0, 0])
    assert torch.allclose(x[0, 0], (raw - 1.0) / 2.0)  # older checkpoints: no method, no clip


def test_the_study_file_sets_the_clip(tmp_path):
    cube = _folder(tmp_path, clip=3)
    train = cube.splits().train
    stats = cube.norm_stats(train)
    assert stats["clip"] == 3.0
    ds = cube.dataset(train, norm=stats)
    x = torch.cat([ds[i][0][0, 0][ds[i][2]] for i in range(len(ds))])
    assert x.max().item() == 3.0 and x.min().item() >= -3.0  # the 1e6 outliers stop at 3
    for bad in (0, -1, "3", True):
        with pytest.raises(data.SceneSpecError, match="clip") as info:
            _folder(tmp_path / f"bad{bad!r}", clip=bad).norm_stats(train)
        assert "hint:" in str(info.value)
