"""DEM derivatives: exact values on analytic surfaces, nodata, and strip-by-strip builds."""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine

import data
from data import Grid, curvature, pixel_size_m, roughness, slope_aspect, tpi

from .conftest import CRS, RES, write_tif


def _plane(dx: float, dy: float, east: float, north: float, shape=(9, 9)) -> np.ndarray:
    rows, cols = np.indices(shape)
    return east * cols * dx - north * rows * dy


@pytest.mark.parametrize(("east", "north", "aspect"), [(0.1, 0.0, 270.0), (0.0, 0.1, 180.0),
                                                       (-0.1, 0.0, 90.0), (0.0, -0.1, 0.0)])
def test_slope_and_aspect_of_planes(east, north, aspect):
    dem = _plane(30, 30, east, north)
    slope, asp = slope_aspect(dem, np.full(9, 30.0), np.full(9, 30.0))
    assert slope == pytest.approx(np.degrees(np.arctan(0.1)), abs=1e-4)
    assert asp % 360 == pytest.approx(aspect, abs=1e-4)


def test_slope_is_in_metres_on_a_geographic_grid():
    step = 0.001
    grid = Grid(Grid.from_bounds("EPSG:4326", step, (10, 60, 10.02, 60.02)).crs,
                Affine(step, 0, 10, 0, -step, 60.02), 20, 20)
    dx, dy = pixel_size_m(grid, 0, 20)
    # at 60 degrees north a degree of longitude is about half a degree of latitude
    assert dx.mean() / dy.mean() == pytest.approx(np.cos(np.radians(60.01)), rel=2e-3)
    assert dy.mean() == pytest.approx(111.4, rel=5e-3)  # metres per 0.001 degree latitude
    dem = np.cumsum(np.broadcast_to(dx * 0.2, (20, 20)).T, axis=1)  # 0.2 m per metre east
    slope, _ = slope_aspect(dem, dx, dy)
    assert slope == pytest.approx(np.degrees(np.arctan(0.2)), abs=1e-3)
    utm = Grid.from_bounds(CRS, RES, (0, 0, 300, 300))
    assert pixel_size_m(utm, 0, 3)[0] == pytest.approx([RES] * 3)


def _metres(n: int, size: float = 30.0) -> np.ndarray:
    return np.full(n, size)


def test_curvature_of_a_bowl_and_a_dome():
    rows, cols = np.indices((11, 13)) * 30.0
    bowl = 0.002 * ((rows - 150) ** 2 + (cols - 180) ** 2)  # Laplacian 4 * 0.002 per metre
    inner = (slice(1, -1), slice(1, -1))
    assert curvature(bowl, _metres(11), _metres(11))[inner] == pytest.approx(-0.008, rel=1e-5)
    assert curvature(-bowl, _metres(11), _metres(11))[inner] == pytest.approx(0.008, rel=1e-5)
    plane = _plane(30, 30, 0.1, 0.05, shape=(11, 13))
    assert curvature(plane, _metres(11), _metres(11))[inner] == pytest.approx(0.0, abs=1e-9)


def test_tpi_is_zero_on_planes_and_signs_ridges_and_valleys():
    plane = _plane(30, 30, 0.1, 0.05, shape=(21, 21))
    assert tpi(plane, 3)[3:-3, 3:-3] == pytest.approx(0.0, abs=1e-4)
    cols = np.broadcast_to(np.abs(np.arange(21) - 10.0), (21, 21))
    valley = 5.0 * cols  # a V-shaped valley along the middle column
    got = tpi(valley, 2)
    assert got[10, 10] == pytest.approx(-5.0 * (2 * (1 + 2)) / 5)  # minus the window mean
    assert (got[:, 10] < 0).all() and tpi(-valley, 2)[10, 10] > 0


def test_window_statistics_leave_nodata_and_edges_out():
    dem = np.full((9, 9), 100.0)
    dem[4, 4] = np.nan
    assert np.isnan(tpi(dem, 2)[4, 4]) and np.isnan(roughness(dem)[4, 4])
    # its neighbours average the valid pixels only, so a flat surface stays flat
    assert np.nanmax(np.abs(tpi(dem, 2))) < 1e-9
    assert np.nanmax(roughness(dem)) < 1e-4


def test_roughness_is_the_window_standard_deviation():
    dem = 4000.0 + _plane(30, 30, 0.1, 0.0, shape=(7, 7))  # 3 m per pixel eastwards
    # a 3 x 3 window holds -3, 0, +3 m three times: variance 6 m^2, at thousands of metres
    assert roughness(dem)[1:-1, 1:-1] == pytest.approx(np.sqrt(6.0), rel=1e-6)


def _rough_dem(shape=(37, 29), seed=3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (1500 + np.cumsum(np.cumsum(rng.normal(0, 2, shape), 0), 1)).astype(np.float32)


def test_terrain_derivatives_built_strip_by_strip_equal_the_whole_raster(tmp_path):
    dem = _rough_dem()
    dem[10:12, 5:8] = -9999.0
    transform = Affine(RES, 0, 340_000.0, 0, -RES, 3_820_000.0)
    write_tif(tmp_path / "dem.tif", dem, transform=transform, nodata=-9999.0)
    write_tif(tmp_path / "labels.tif", (dem > 1600).astype(np.uint8), transform=transform)
    section = {
        "format": "geotiff", "dates": ["2020"],
        "sources": [{"name": "dem", "kind": "factor", "path": "dem.tif",
                     "derive": ["slope", "curvature", "roughness", "tpi"], "tpi_radii": [2, 6]}],
        "labels": {"paths": {"2020": "labels.tif"}},
    }
    whole = data.build_cube(section, base_dir=tmp_path)
    strips = data.build_cube(section, base_dir=tmp_path, cache_dir=tmp_path / "c", block_size=4)
    names = ["dem", "dem_slope", "dem_curvature", "dem_roughness", "dem_tpi2", "dem_tpi6"]
    assert whole.source_names == names
    got, want = np.asarray(strips.values), np.asarray(whole.values)
    assert np.allclose(got, want, rtol=1e-5, atol=1e-4, equal_nan=True)
    z = np.where(dem == -9999.0, np.nan, dem).astype(np.float64)
    dx, dy = pixel_size_m(Grid.like(tmp_path / "dem.tif"), 0, dem.shape[0])
    assert np.allclose(want[names.index("dem_tpi6"), 0], tpi(z, 6), atol=1e-3, equal_nan=True)
    assert np.allclose(want[names.index("dem_curvature"), 0], curvature(z, dx, dy),
                       atol=1e-6, equal_nan=True)
    assert not whole.valid[10:12, 5:8].any()


@pytest.mark.parametrize(("raw", "message"), [
    ({"derive": ["tpi"], "tpi_radii": [0]}, "tpi_radii"),
    ({"derive": ["tpi"], "tpi_radii": [4, 4]}, "tpi_radii"),
    ({"derive": ["tpi"], "tpi_radii": "8"}, "tpi_radii"),
    ({"derive": ["slope"], "tpi_radii": [8]}, "without tpi"),
    ({"derive": ["flow"]}, "derive"),
])
def test_bad_terrain_options_are_named(raw, message):
    section = {"format": "geotiff", "dates": ["2020"],
               "sources": [{"name": "dem", "kind": "factor", "path": "dem.tif"} | raw]}
    with pytest.raises(data.SceneSpecError, match=message) as info:
        data.parse_scene(section, ".")
    assert "dem" in str(info.value) and "hint:" in str(info.value)
