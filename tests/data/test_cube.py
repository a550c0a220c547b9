from __future__ import annotations

import copy
import os
import time

import numpy as np
import pytest
import torch

import data

from .conftest import DATES, SLOPE_GRADIENT, H, W


def test_cube_layout(cube):
    assert cube.shape == (11, 3, H, W)
    assert cube.source_names == ["red", "nir", "dem", "dem_slope", "dem_aspect", "lithology_1",
                                 "lithology_2", "lithology_3", "rain", "rain_api",
                                 "fault_distance"]
    assert cube.source_kinds[:2] == ["optical", "optical"]
    assert set(cube.source_kinds[2:]) == {"factor"}
    assert cube.source_types[5:8] == ["categorical"] * 3
    assert cube.dates == DATES and cube.label_dates == ["2008", "2014"]
    assert cube.crs.to_epsg() == 32643 and cube.transform.a == 30
    # static sources are stored once and broadcast over the dates
    assert cube._static.shape[1] == 1
    dem = cube.values[2]
    assert dem.shape == (3, H, W) and np.array_equal(dem[0], dem[2])
    assert not np.array_equal(cube.values[0, 0], cube.values[0, 2])


def test_aligned_values_are_right(cube):
    v = np.asarray(cube.values)
    names = cube.source_names
    # the geographic DEM reprojected onto the UTM grid keeps its 0.1 m/m eastward rise
    slope = v[names.index("dem_slope"), 0, 1:-1, 1:-1]
    assert slope == pytest.approx(np.degrees(np.arctan(SLOPE_GRADIENT)), abs=0.3)
    assert np.median(v[names.index("dem_aspect"), 0]) == pytest.approx(270, abs=1)
    lith = v[names.index("lithology_1"): names.index("lithology_3") + 1, 0]
    assert np.array_equal(np.nansum(lith, 0)[cube.valid], np.ones(cube.valid.sum()))
    # a fault at x = 600 m: the pixel column centred at 585 m is 15 m away
    assert v[names.index("fault_distance"), 0, 10, 19] == pytest.approx(15, abs=RES_TOL)
    rain, api = v[names.index("rain")], v[names.index("rain_api")]
    assert api[1] == pytest.approx(rain[1] + 0.9 * rain[0], rel=1e-5)


RES_TOL = 30 / 4


def test_nodata_propagates_to_the_valid_mask(cube):
    # a cloud at one date of a time series keeps the pixel (the gap is filled later) ...
    assert cube.valid[2:5, 30:34].all()
    x = cube.read((slice(2, 5), slice(30, 34)), sources=["red"])
    assert np.isnan(x[0, 1]).all() and np.isfinite(x[0, 0]).all()
    # ... nodata of a static source drops it
    assert not cube.valid[:2, :2].any()  # the lithology's nodata corner
    assert cube.valid.sum() == H * W - 4


def test_a_dynamic_source_without_data_at_any_date_is_invalid(section, scene_dir, tmp_path):
    import shutil

    import rasterio

    scene_dir = shutil.copytree(scene_dir, tmp_path / "scene")  # the fixture is shared
    for path in sorted(scene_dir.rglob("*red*.tif")):
        with rasterio.open(path, "r+") as dst:
            band = dst.read(1)
            band[5:7, 5:9] = dst.nodata
            dst.write(band, 1)
    cube = data.build_cube(section, base_dir=scene_dir)
    assert not cube.valid[5:7, 5:9].any()
    assert cube.valid.sum() == H * W - 4 - 8


def test_windowed_build_equals_in_memory_build(cube, section, scene_dir, tmp_path):
    windowed = data.build_cube(section, base_dir=scene_dir, cache_dir=tmp_path, block_size=5)
    assert windowed.path is not None and isinstance(windowed._dynamic, np.memmap)
    assert np.array_equal(np.asarray(windowed.values), np.asarray(cube.values), equal_nan=True)
    assert np.array_equal(windowed.valid, cube.valid)
    assert np.array_equal(windowed.label_stack, cube.label_stack)
    assert windowed.hash == cube.hash


def test_targets(cube):
    last, first = cube.label_stack[-1], cube.label_stack[0]
    assert np.array_equal(cube.labels, last)
    new = cube.with_target("new").labels
    assert new.sum() == last.sum() - first.sum() > 0 and not (new & first).any()
    assert np.array_equal(cube.with_target("2008").labels, first)
    with pytest.raises(data.SceneSpecError, match="target"):
        cube.with_target("2011")


def test_vector_labels_rasterized_per_date(section, scene_dir, cube):
    section["labels"] = {"vector": "landslides.gpkg", "date_field": "year"}
    vec = data.build_cube(section, base_dir=scene_dir)
    assert vec.label_dates == DATES
    sums = vec.label_stack.reshape(3, -1).sum(1)
    # polygon 2 was observed 2013-05: absent in 2008 and 2011, present in 2014
    assert sums[0] == sums[1] > 0 and sums[2] > sums[1]
    agree = (vec.label_stack[-1] == cube.label_stack[-1]).mean()
    assert agree > 0.98  # same discs, drawn as polygons instead of pixels


def test_prepare_caches_and_invalidates(section, scene_dir, tmp_path):
    section["target"] = "new"
    section["patch_size"] = 16
    first = data.prepare(section, scene_dir, cache_dir=tmp_path)
    meta = first.path / "meta.json"
    stamp = meta.stat().st_mtime_ns
    again = data.prepare(section, scene_dir, cache_dir=tmp_path)
    assert again.path == first.path and meta.stat().st_mtime_ns == stamp
    assert again.target == "new" and again.splits().info["patch_size"] == 16
    assert [p.name for p in tmp_path.iterdir()] == [first.hash]  # no temp dir left behind
    # touching an input changes the key
    red = scene_dir / "optical" / "2008_red.tif"
    os.utime(red, ns=(time.time_ns(), time.time_ns() + 10**9))
    changed = data.prepare(section, scene_dir, cache_dir=tmp_path)
    assert changed.hash != first.hash
    # the default cache lives next to the study file
    default = data.prepare({**section, "cache_dir": "cc"}, scene_dir)
    assert default.path.parent == scene_dir / "cc"


def test_scene_file_and_scene_key(section, scene_dir, tmp_path):
    import json

    lines = ["[data]", 'format = "geotiff"', f"dates = {json.dumps(DATES)}"]
    for s in section["sources"][:2]:
        lines += ["[[data.sources]]"] + [f"{k} = {json.dumps(v)}" for k, v in s.items()
                                         if k != "paths"]
        lines += ["paths = { " + ", ".join(f'"{d}" = "{p}"' for d, p in s["paths"].items())
                  + " }"]
    (scene_dir / "scene.toml").write_text("\n".join(lines) + "\n")
    loaded = data.load_scene(scene_dir / "scene.toml")
    assert loaded["sources"][0]["name"] == "red"
    from_file = data.build_cube(scene_dir / "scene.toml")
    via_key = data.open_source({"scene": str(scene_dir / "scene.toml"), "patch_size": 8},
                               tmp_path)
    assert from_file.source_names == via_key.source_names == ["red", "nir"]
    assert via_key.options == {"patch_size": 8}
    assert np.array_equal(np.asarray(from_file.values), np.asarray(via_key.values),
                          equal_nan=True)


def test_values_view_indexing(cube):
    full = np.asarray(cube.values)
    assert cube.values.shape == full.shape == (11, 3, H, W)
    assert np.array_equal(cube.values[1, 2, 5:9, 3], full[1, 2, 5:9, 3], equal_nan=True)
    assert np.array_equal(cube.values[:3, -1, 4, 7], full[:3, -1, 4, 7], equal_nan=True)
    assert np.array_equal(cube.values[2:4], full[2:4], equal_nan=True)


def test_dataset_samples(cube):
    tiles = cube.tiles(patch_size=16)
    assert len(tiles) == 3 * 3  # 48 x 40: the last column of tiles is 8 wide
    norm = cube.norm_stats(tiles)
    ds = cube.dataset(tiles, norm=norm)
    x, y, valid = ds[2]
    assert x.shape == (11, 3, 16, 16) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and valid.dtype == torch.bool
    assert not valid[:, 8:].any() and (x[:, :, :, 8:] == 0).all()  # padding
    assert torch.isfinite(x).all() and set(y.unique().tolist()) <= {0, 1}
    stacked = torch.cat([ds[i][0][0][:, ds[i][2]].ravel() for i in range(len(ds))])
    assert stacked.mean().item() == pytest.approx(0, abs=0.05)
    optical = cube.dataset(tiles, sources="optical")
    assert optical[0][0].shape[0] == 2
    picked = cube.dataset(tiles, sources=["dem_slope", "red"])
    assert torch.equal(picked[0][0][1], torch.from_numpy(cube.read(tiles[0], sources=["red"])[0]))
    with pytest.raises(data.SceneSpecError, match="unknown source"):
        cube.dataset(tiles, sources=["blue"])


def test_landslide_census_counts_what_the_samples_label(cube):
    from scipy.ndimage import label

    tiles = cube.tiles(patch_size=16)
    ds = cube.dataset(tiles, context=4)  # the halo's labels are not the tiles'
    samples = [ds[i] for i in range(len(ds))]
    pixels = sum(int((y.bool() & valid).sum()) for _, y, valid in samples)
    regions = sum(label((y.bool() & valid).numpy())[1] for _, y, valid in samples)
    assert pixels > 0 and ds.landslides() == (pixels, regions)
    assert cube.dataset(tiles[:0]).landslides() == (0, 0)


def test_context_reads_around_each_tile_and_scores_the_tile_alone(cube):
    tiles = cube.tiles(patch_size=16)
    plain, wide = cube.dataset(tiles), cube.dataset(tiles, context=4)
    for k in (0, 4, 8):  # a corner tile, the centre one, the narrow far corner
        x, y, valid = plain[k]
        xc, yc, validc = wide[k]
        assert xc.shape[-2:] == (24, 24)
        inner = (slice(4, 20), slice(4, 20))
        assert torch.equal(xc[..., inner[0], inner[1]], x) and torch.equal(validc[inner], valid)
        assert torch.equal(yc[inner], y)
        assert validc.sum() == valid.sum()  # the context is input only, never scored
    t = tiles[4]  # the centre tile: its context is real data on every side
    around = cube.read((slice(t.row - 4, t.row + 20), slice(t.col - 4, t.col + 20)))
    assert torch.equal(wide[4][0], torch.from_numpy(np.nan_to_num(around)))
    assert (wide[0][0][..., :4, :] == 0).all()  # above the grid: padding, not data
    bad = copy.copy(cube)
    bad.options = {**cube.options, "context": -1}
    with pytest.raises(data.SceneSpecError, match="context must be a whole number"):
        _ = bad.context


def test_norm_stats_use_only_the_given_tiles(cube):
    tiles = cube.tiles(patch_size=16)
    stats = cube.norm_stats(tiles[:2], sources=["red", "lithology_1"])
    red = np.concatenate([cube.read(t, sources=["red"]).ravel() for t in tiles[:2]])
    assert stats["sources"]["red"]["mean"] == pytest.approx(np.nanmean(red), rel=1e-6)
    assert stats["sources"]["red"]["std"] == pytest.approx(np.nanstd(red), rel=1e-4)
    assert stats["sources"]["lithology_1"] == {"mean": 0.0, "std": 1.0}
    assert set(stats["sources"]) == {"red", "lithology_1"}


def test_cached_cube_pickles_as_its_path(section, scene_dir, tmp_path):
    import pickle

    cached = data.prepare({**section, "target": "new", "patch_size": 8}, scene_dir,
                          cache_dir=tmp_path)
    blob = pickle.dumps(cached)
    assert len(blob) < 2000  # the arrays are not copied into worker processes
    back = pickle.loads(blob)
    assert back.path == cached.path and back.target == "new" and back.options == cached.options
    assert np.array_equal(back.labels, cached.labels)
    in_memory = data.build_cube(section, base_dir=scene_dir)
    again = pickle.loads(pickle.dumps(in_memory))
    assert np.array_equal(np.asarray(again.values), np.asarray(in_memory.values), equal_nan=True)


def test_the_synthetic_scene_file_builds(tmp_path):
    scene = data.generate_scene(tmp_path / "syn", size=64, n_dates=3, seed=0)
    cube = data.build_cube(scene.scene_path)
    assert cube.shape[1:] == (3, 64, 64) and cube.dates == list(scene.dates)
    assert {"optical", "factor"} == set(cube.source_kinds)
    # the cube's target equals the generator's cumulative landslide share at the last date
    assert cube.labels.mean() == pytest.approx(scene.landslide_fraction[scene.dates[-1]], abs=1e-6)
