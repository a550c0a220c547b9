from __future__ import annotations

import copy
import re

import numpy as np
import pytest

import data

from .conftest import write_tif


def _build(section, scene_dir):
    return data.build_cube(section, base_dir=scene_dir)


def test_every_error_is_a_data_error():
    for name in ("SceneSpecError", "DataNotFoundError", "UnreadableFileError", "CRSMissingError",
                 "NoOverlapError", "BandCountMismatchError", "AllNodataError",
                 "EmptyLabelError", "DateParseError", "UnknownCodeError",
                 "TestSplitWithheldError", "RasterTooLargeError", "InvalidGeometryError",
                 "EmptyLayerError", "NoFilesMatchedError", "MissingMaskError",
                 "SizeMismatchError"):
        assert issubclass(getattr(data, name), data.DataError)
    err = data.NoOverlapError("bad", file="a.tif", key="k", hint="fix it")
    assert str(err) == "a.tif [k]: bad (hint: fix it)"


def test_missing_and_unreadable_files(section, scene_dir):
    section["sources"][2]["path"] = "nowhere/dem.tif"
    with pytest.raises(data.DataNotFoundError, match=r"nowhere/dem.tif: raster not found"):
        _build(section, scene_dir)
    (scene_dir / "broken.tif").write_bytes(b"\x00" * 64)
    section["sources"][2]["path"] = "broken.tif"
    with pytest.raises(data.UnreadableFileError, match="broken.tif.*hint"):
        _build(section, scene_dir)


def test_raster_without_crs(section, scene_dir):
    write_tif(scene_dir / "nocrs.tif", np.ones((10, 10), np.float32), crs=None)
    section["sources"][2]["path"] = "nocrs.tif"
    with pytest.raises(data.CRSMissingError, match="nocrs.tif.*coordinate reference system"):
        _build(section, scene_dir)


def test_extent_that_does_not_overlap(section, scene_dir):
    from affine import Affine

    write_tif(scene_dir / "far.tif", np.ones((10, 10), np.float32),
              transform=Affine(30, 0, 900_000, 0, -30, 3_000_000))
    section["sources"][2]["path"] = "far.tif"
    with pytest.raises(data.NoOverlapError, match="far.tif.*does not overlap"):
        _build(section, scene_dir)


def test_dates_with_different_band_counts(section, scene_dir):
    write_tif(scene_dir / "two_bands.tif", np.ones((2, 48, 40), np.uint16))
    section["sources"][0]["paths"]["2011"] = "two_bands.tif"
    with pytest.raises(data.BandCountMismatchError, match=r"\[red\].*band counts"):
        _build(section, scene_dir)


def test_source_all_nodata_on_the_grid(section, scene_dir):
    write_tif(scene_dir / "empty.tif", np.zeros((48, 40), np.uint16), nodata=0)
    section["sources"][0]["paths"]["2014"] = "empty.tif"
    with pytest.raises(data.AllNodataError, match=r"empty.tif \[red\].*no valid pixel"):
        _build(section, scene_dir)


def test_no_landslide_in_the_training_split(section, scene_dir):
    write_tif(scene_dir / "no_slides.tif", np.zeros((48, 40), np.uint8))
    section["labels"]["paths"]["2014"] = "no_slides.tif"
    cube = _build(section, scene_dir)
    with pytest.raises(data.EmptyLabelError, match="no_slides.tif.*training tiles"):
        cube.splits(patch_size=8)


def test_date_field_that_does_not_parse(section, scene_dir):
    import geopandas as gpd
    from shapely.geometry import box

    gpd.GeoDataFrame({"year": ["2008", "last spring"]},
                     geometry=[box(340_100, 3_819_500, 340_300, 3_819_700)] * 2,
                     crs="EPSG:32643").to_file(scene_dir / "bad_dates.gpkg", engine="pyogrio")
    section["labels"] = {"vector": "bad_dates.gpkg", "date_field": "year"}
    with pytest.raises(data.DateParseError, match=r"bad_dates.gpkg \[year\]: 'last spring'"):
        _build(section, scene_dir)
    section["labels"]["date_field"] = "when"
    with pytest.raises(data.SceneSpecError, match="when.*available fields"):
        _build(section, scene_dir)


def test_categorical_code_not_declared(section, scene_dir):
    section["sources"][3]["codes"] = [1, 2]
    with pytest.raises(data.UnknownCodeError, match=r"lithology.tif \[lithology\].*\[3\]"):
        _build(section, scene_dir)


def _set(path, value):
    def edit(section):
        target = section
        for key in path[:-1]:
            target = target[key]
        if value is _DELETE:
            del target[path[-1]]
        else:
            target[path[-1]] = value
    return edit


_DELETE = object()


@pytest.mark.parametrize(("edit", "key"), [
    (_set(["dates"], _DELETE), "data.dates"),
    (_set(["dates"], ["2008", "2008"]), "data.dates"),
    (_set(["format"], "netcdf"), "data.format"),
    (_set(["colour"], "red"), "data"),
    (_set(["sources"], []), "data.sources"),
    (_set(["sources", 0, "kind"], "radar"), "kind"),
    (_set(["sources", 0, "path"], "x.tif"), "red"),
    (_set(["sources", 0, "paths", "2011"], _DELETE), "paths"),
    (_set(["sources", 1, "name"], "red"), "data.sources"),
    (_set(["sources", 3, "codes"], _DELETE), "codes"),
    (_set(["sources", 2, "derive"], ["flow"]), "derive"),
    (_set(["sources", 0, "nodata"], "zero"), "nodata"),
    (_set(["labels", "vector"], "x.gpkg"), "data.labels"),
    (_set(["grid"], {"crs": "EPSG:32643"}), "data.grid"),
])
def test_bad_scene_descriptions(section, scene_dir, edit, key):
    bad = copy.deepcopy(section)
    edit(bad)
    with pytest.raises(data.SceneSpecError, match=re.escape(key)) as info:
        _build(bad, scene_dir)
    assert "hint:" in str(info.value)


def test_bad_scene_file(tmp_path):
    with pytest.raises(data.DataNotFoundError, match="scene file not found"):
        data.load_scene(tmp_path / "none.toml")
    (tmp_path / "bad.toml").write_text("[data\n")
    with pytest.raises(data.SceneSpecError, match="bad.toml: not valid TOML"):
        data.load_scene(tmp_path / "bad.toml")
    (tmp_path / "nodata.toml").write_text("[study]\nname = 'x'\n")
    with pytest.raises(data.SceneSpecError, match=r"nodata.toml \[data\]"):
        data.load_scene(tmp_path / "nodata.toml")


def test_adapter_sections(tmp_path):
    with pytest.raises(data.SceneSpecError, match=r"\[data.path\].*needs `path`"):
        data.prepare({"format": "l4s"}, tmp_path)
    with pytest.raises(data.DataNotFoundError, match="kashmir data folder not found"):
        data.prepare({"format": "kashmir", "path": "absent"}, tmp_path)
    with pytest.raises(data.SceneSpecError, match="unknown key"):
        data.prepare({"format": "hokkaido", "path": ".", "bands": 3}, tmp_path)
