from __future__ import annotations

import numpy as np
import pytest
from affine import Affine
from pyproj import Transformer
from rasterio.warp import transform_bounds

from data import AlignedRaster, CRSMissingError, DataNotFoundError, Grid, NoOverlapError
from data.errors import UnreadableFileError

from .conftest import CRS, ORIGIN, RES, write_tif

GRID = Grid.from_bounds(CRS, RES, (ORIGIN[0], ORIGIN[1] - 20 * RES, ORIGIN[0] + 20 * RES,
                                   ORIGIN[1]))


def test_grid_from_bounds_and_strips():
    assert GRID.shape == (20, 20)
    assert GRID.bounds == pytest.approx((ORIGIN[0], ORIGIN[1] - 600, ORIGIN[0] + 600, ORIGIN[1]))
    strip = GRID.rows(5, 8)
    assert strip.height == 3 and strip.transform.f == pytest.approx(ORIGIN[1] - 150)


def test_reprojection_puts_a_point_where_it_belongs(tmp_path):
    # one bright pixel in a geographic raster at a known lon/lat
    to_geo = Transformer.from_crs(CRS, "EPSG:4326", always_xy=True)
    target_x, target_y = ORIGIN[0] + 7.5 * RES, ORIGIN[1] - 12.5 * RES  # centre of (12, 7)
    lon, lat = to_geo.transform(target_x, target_y)
    step = 0.0001
    left, top = lon - 50.5 * step, lat + 60.5 * step
    img = np.zeros((121, 101), np.float32)
    img[60, 50] = 1000.0  # its centre is exactly (lon, lat)
    path = write_tif(tmp_path / "geo.tif", img, crs="EPSG:4326",
                     transform=Affine(step, 0, left, 0, -step, top))
    with AlignedRaster(path, GRID) as src:
        out = src.read(0, GRID.height)[0]
    row, col = np.unravel_index(np.nanargmax(out), out.shape)
    assert (row, col) == (12, 7)


def test_categorical_keeps_its_codes_when_resampled(tmp_path):
    rng = np.random.default_rng(1)
    codes = np.array([3, 7, 11], np.int16)
    fine = codes[rng.integers(0, 3, (80, 80))]
    path = write_tif(tmp_path / "cat.tif", fine,
                     transform=Affine(RES / 4, 0, ORIGIN[0] + 3, 0, -RES / 4, ORIGIN[1] - 2))
    geo = transform_bounds(CRS, "EPSG:4326", *GRID.bounds)
    coarse = Grid.from_bounds(CRS, 2.5 * RES, GRID.bounds)  # mode
    finer_geo = Grid.from_bounds("EPSG:4326", 0.0001, geo)  # nearest, reprojected
    for grid in (GRID, coarse, finer_geo):
        with AlignedRaster(path, grid, categorical=True) as src:
            out = src.read(0, grid.height)
        found = np.unique(out[np.isfinite(out)])
        assert set(found.astype(int)) == {3, 7, 11}
    with AlignedRaster(path, GRID, categorical=False) as src:
        smooth = src.read(0, GRID.height)
    # bilinear / average on the same data do produce values between the codes
    assert not set(np.unique(smooth[np.isfinite(smooth)]).astype(float)) <= {3.0, 7.0, 11.0}


def test_nodata_and_outside_footprint_become_nan(tmp_path):
    img = np.full((10, 10), 5, np.uint16)
    img[2, 3] = 0
    path = write_tif(tmp_path / "a.tif", img, nodata=0)
    with AlignedRaster(path, GRID) as src:  # covers only the top-left 10 x 10 of the grid
        out = src.read(0, 20)[0]
    assert np.isnan(out[2, 3]) and np.isnan(out[15, 15]) and out[5, 5] == 5
    with AlignedRaster(path, GRID, nodata=5) as src:  # the scene's nodata overrides the file's
        assert np.isnan(src.read(0, 10)[0, 5, 5])
    # coarsening (average) must not leak values outside the footprint
    coarse = Grid.from_bounds(CRS, 4 * RES, (ORIGIN[0] - 8 * RES, ORIGIN[1] - 16 * RES,
                                             ORIGIN[0] + 16 * RES, ORIGIN[1]))
    with AlignedRaster(path, coarse) as src:
        out = src.read(0, coarse.height)[0]
    assert np.isnan(out[:, :2]).all() and np.isfinite(out[0, 2])


def test_bad_rasters_raise_named_errors(tmp_path):
    with pytest.raises(DataNotFoundError, match="missing.tif.*hint"):
        AlignedRaster(tmp_path / "missing.tif", GRID)
    (tmp_path / "junk.tif").write_bytes(b"not a tiff")
    with pytest.raises(UnreadableFileError, match="junk.tif"):
        AlignedRaster(tmp_path / "junk.tif", GRID)
    nocrs = write_tif(tmp_path / "nocrs.tif", np.ones((4, 4), np.uint8), crs=None)
    with pytest.raises(CRSMissingError, match="nocrs.tif.*gdal_edit"):
        AlignedRaster(nocrs, GRID)
    far = write_tif(tmp_path / "far.tif", np.ones((4, 4), np.uint8),
                    transform=Affine(RES, 0, ORIGIN[0] + 1e5, 0, -RES, ORIGIN[1]))
    with pytest.raises(NoOverlapError, match="far.tif.*does not overlap"):
        AlignedRaster(far, GRID)
