"""Adapters against the real data in ../shared/data (skipped when it is absent)."""

from __future__ import annotations

import numpy as np
import pytest

import data
from data.sources import kashmir

from .conftest import shared_data_dir

SHARED = shared_data_dir()


def _folder(name: str):
    path = SHARED / name
    if not path.is_dir():
        pytest.skip(f"{path} is absent (set LANDSLIDE_SHARED_DATA to the shared data folder)")
    return path


# per-band means stated in l4s-sample/SOURCE.md (rounded to 3 decimals there)
L4S_MEANS = [0.892, 0.904, 0.98, 1.02, 1.116, 1.06, 1.024, 1.037, 1.349, 2.067, 1.082, 1.134,
             1.531, 2.675]


def test_l4s_band_means_and_labels(tmp_path):
    root = _folder("l4s-sample")
    cube = data.prepare({"format": "l4s", "path": str(root)}, tmp_path)
    assert cube.shape == (14, 1, 21 * 128, 128) and cube.patch_shape == (128, 128)
    assert cube.crs is None and cube.source_names[-2:] == ["slope", "dem"]
    stats = cube.norm_stats(cube.tiles(patch_size=128))["sources"]
    means = [stats[n]["mean"] for n in cube.source_names]
    assert np.abs(np.array(means) - L4S_MEANS).max() <= 1e-3
    assert cube.labels.mean() == pytest.approx(0.0380, abs=1e-4)
    first = cube.meta["patch_ids"].index(1)
    assert cube.labels[first * 128:(first + 1) * 128].sum() == 405  # SOURCE.md: image_1
    splits = cube.splits(patch_size=64, seed=0)
    patches = [{t.row // 128 for t in part} for part in (splits.train, splits.val, splits.test)]
    assert not patches[0] & patches[2] and not patches[0] & patches[1]


@pytest.fixture(scope="module")
def kashmir_cube(tmp_path_factory):
    root = _folder("kashmir-inventory-sepwc")
    return data.prepare({"format": "kashmir", "path": str(root)},
                        tmp_path_factory.mktemp("kashmir"))


def test_kashmir_coverage_and_yearly_masks(kashmir_cube):
    cube = kashmir_cube
    assert cube.dates == ["2000", "2001", "2005", "2006", "2009", "2010", "2011", "2014"]
    assert cube.label_dates == cube.dates
    # 1.2 % by pixel centre; the 1,067 polygons below a pixel add one pixel each
    assert cube.meta["labels_below_pixel"] == 1067
    assert cube.labels.mean() == pytest.approx(0.0134, abs=0.0005)
    cover = cube.label_stack.reshape(len(cube.dates), -1).mean(1)
    assert np.all(np.diff(cover) > 0)  # every year adds polygons
    assert set(cube.source_kinds) == {"factor"}
    names = cube.source_names
    assert {f"geology_{c}" for c in kashmir.GEOLOGY_CODES} <= set(names)
    assert cube.valid.mean() > 0.99
    dist = cube.values[names.index("fault_distance"), 0]
    assert dist.min() < 30 and dist.max() > 1000
    slope = cube.values[names.index("dem_slope"), 0]
    assert 20 < np.nanmean(slope) < 40  # steep Himalayan terrain


def test_kashmir_new_landslides_target(kashmir_cube):
    new = kashmir_cube.with_target("new").labels
    stack = kashmir_cube.label_stack
    assert new.sum() == stack[-1].sum() - stack[-2].sum()


def test_kashmir_dem_derivatives_are_chosen_in_the_study(tmp_path):
    root = _folder("kashmir-inventory-sepwc")
    cube = data.prepare({"format": "kashmir", "path": str(root), "dates": ["2014"],
                         "derive": ["curvature", "tpi"], "tpi_radii": [16]}, tmp_path)
    names = cube.source_names
    assert names[:3] == ["dem", "dem_curvature", "dem_tpi16"] and "dem_slope" not in names
    tpi = cube.values[names.index("dem_tpi16"), 0]
    assert abs(float(np.nanmean(tpi))) < 5 < float(np.nanstd(tpi))  # metres about the valley
    with pytest.raises(data.SceneSpecError, match="derive"):
        data.prepare({"format": "kashmir", "path": str(root), "derive": ["flow"]}, tmp_path)


def test_hokkaido_pre_post_on_one_grid(tmp_path):
    root = _folder("hokkaido-s2-prepost")
    cube = data.prepare({"format": "hokkaido", "path": str(root)}, tmp_path)
    assert cube.shape == (5, 2, 970, 1533) and cube.dates == ["pre", "post"]
    assert cube.crs.to_epsg() == 4326 and cube.labels is None
    assert cube.source_names == ["B2", "B3", "B4", "dsm", "slope"]
    v = cube.values
    # the DSM and slope (30 m) were resampled onto the 10 m optical grid and cover it
    assert np.isfinite(v[3, 0]).all() and np.isfinite(v[4, 0]).all()
    assert 9 <= np.nanmin(v[3, 0]) and np.nanmax(v[3, 0]) <= 286
    # the post image is complete; the pre image has a nodata area (0 in the file)
    assert np.isfinite(v[0, 1]).all() and 0.3 < np.isnan(v[0, 0]).mean() < 0.5
    coarse = data.prepare({"format": "hokkaido", "path": str(root), "grid": "dem"}, tmp_path)
    assert coarse.shape[2:] == (324, 512)
    x, y, valid = coarse.dataset(coarse.tiles(patch_size=64)[:1])[0]
    assert x.shape == (5, 2, 64, 64) and int(y.sum()) == 0


def test_hokkaido_slope_from_a_geographic_dsm_matches_the_folders_slope(tmp_path):
    root = _folder("hokkaido-s2-prepost")
    section = {"dates": ["static"], "sources": [
        {"name": "dsm", "kind": "factor", "path": "dem/download.DSM.tif", "derive": ["slope"]},
        {"name": "slope", "kind": "factor", "path": "slope/download.slope.tif"},
    ]}
    cube = data.build_cube(section, base_dir=root)
    ours = cube.values[1, 0, 2:-2, 2:-2]
    theirs = cube.values[2, 0, 2:-2, 2:-2]
    # degrees would give slopes near 90; metres give the folder's values
    assert np.corrcoef(ours.ravel(), theirs.ravel())[0, 1] > 0.9
    assert np.median(np.abs(ours - theirs)) < 2.0
