"""data.shift: the share of a scene's values far outside each channel's training range."""

from __future__ import annotations

import numpy as np
import pytest

import data
from data.shift import outside_training, shifted_channels
from tests.data.conftest import write_tif


def _scene(root, elevation: np.ndarray) -> data.Cube:
    rng = np.random.default_rng(0)
    write_tif(root / "dem.tif", elevation.astype(np.float32), nodata=-1.0)
    write_tif(root / "soil.tif", rng.integers(1, 3, elevation.shape).astype(np.int16))
    write_tif(root / "labels.tif", (elevation > np.median(elevation)).astype(np.uint8))
    section = {
        "format": "geotiff", "dates": ["2020"],
        "sources": [{"name": "dem", "kind": "factor", "path": "dem.tif"},
                    {"name": "soil", "kind": "factor", "type": "categorical", "codes": [1, 2],
                     "path": "soil.tif"}],
        "labels": {"paths": {"2020": "labels.tif"}},
        "patch_size": 8,
    }
    return data.build_cube(section, base_dir=root)


def test_share_beyond_the_training_range_by_its_width(tmp_path):
    rng = np.random.default_rng(1)
    elevation = rng.uniform(1000, 1100, (32, 32))
    elevation[0, 0] = -1.0  # nodata: never counted
    trained = _scene(tmp_path / "a", elevation)
    norm = trained.norm_stats(trained.tiles())
    low, high = norm["sources"]["dem"]["low"], norm["sources"]["dem"]["high"]
    assert outside_training(trained, norm, trained.source_names) == {"dem": 0.0}
    moved = elevation.copy()
    moved[:8] = high + 1.01 * (high - low)  # a quarter of the rows, just past the margin
    moved[8:12] = high + 0.99 * (high - low)  # inside the margin: not counted
    moved[0, 0] = -1.0
    shifted = _scene(tmp_path / "b", moved)
    share = outside_training(shifted, norm, shifted.source_names)
    assert list(share) == ["dem"]  # one-hot channels have no range to leave
    assert share["dem"] == pytest.approx((8 * 32 - 1) / (32 * 32 - 1))


def test_statistics_without_a_range_compare_nothing(tmp_path):
    cube = _scene(tmp_path, np.random.default_rng(2).uniform(0, 1, (16, 16)))
    assert outside_training(cube, None, cube.source_names) == {}
    plain = cube.norm_stats(cube.tiles(), method="mean_std")
    assert outside_training(cube, plain, cube.source_names) == {}


def test_only_the_tiles_asked_for_are_read(tmp_path):
    rng = np.random.default_rng(3)
    elevation = rng.uniform(1000, 1100, (32, 32))
    trained = _scene(tmp_path / "a", elevation)
    norm = trained.norm_stats(trained.tiles())
    elevation[:8] = 9000.0
    shifted = _scene(tmp_path / "b", elevation)
    tiles = shifted.tiles()
    top = [t for t in tiles if t.row < 8]
    assert outside_training(shifted, norm, ["dem"], top) == {"dem": 1.0}
    assert outside_training(shifted, norm, ["dem"], [t for t in tiles if t.row >= 8]) == {
        "dem": 0.0}


def test_the_warning_names_the_channels_at_one_percent_or_more():
    assert shifted_channels({"B10": 0.2823, "dem": 0.0099, "slope": 0.01}) == (
        "B10 28.2 %, slope 1.0 %")
    assert shifted_channels({"dem": 0.0}) == ""
