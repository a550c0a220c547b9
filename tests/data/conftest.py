"""Tiny seeded scenes written as GeoTIFFs / GeoPackages in code."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from affine import Affine
from pyproj import Transformer

CRS = "EPSG:32643"
ORIGIN = (340_000.0, 3_820_000.0)  # top-left corner, UTM 43N
RES = 30.0
H, W = 48, 40
DATES = ["2008", "2011", "2014"]
SLOPE_GRADIENT = 0.1  # the DEM rises 0.1 m per metre eastwards


def write_tif(path: Path, array: np.ndarray, *, crs: str | None = CRS,
              transform: Affine | None = None, nodata: float | None = None) -> Path:
    """Write a (bands, rows, cols) or (rows, cols) array as a GeoTIFF."""
    array = np.asarray(array)
    if array.ndim == 2:
        array = array[None]
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(
        path, "w", driver="GTiff", width=array.shape[2], height=array.shape[1],
        count=array.shape[0], dtype=array.dtype, crs=crs,
        transform=transform or Affine(RES, 0, ORIGIN[0], 0, -RES, ORIGIN[1]), nodata=nodata,
    ) as dst:
        dst.write(array)
    return path


def grid_xy() -> tuple[np.ndarray, np.ndarray]:
    """UTM coordinates of the pixel centres of the fixture grid."""
    cols, rows = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
    return ORIGIN[0] + cols * RES, ORIGIN[1] - rows * RES


def write_scene(root: Path, seed: int = 0) -> dict[str, Any]:
    """3 dates x (red, nir, rain) + DEM (EPSG:4326, finer) + lithology (15 m) + faults + labels.

    Returns the scene's [data] section (paths relative to ``root``).
    """
    rng = np.random.default_rng(seed)
    xs, ys = grid_xy()
    # landslides grow over time: a disc at 2008, a second one by 2014
    disc1 = (xs - (ORIGIN[0] + 300)) ** 2 + (ys - (ORIGIN[1] - 400)) ** 2 < 150**2
    disc2 = (xs - (ORIGIN[0] + 900)) ** 2 + (ys - (ORIGIN[1] - 1000)) ** 2 < 120**2
    masks = {"2008": disc1, "2011": disc1, "2014": disc1 | disc2}
    for t, date in enumerate(DATES):
        red = (800 + 40 * t + rng.integers(0, 100, (H, W)) + 600 * masks[date]).astype(np.uint16)
        nir = (3000 - 50 * t + rng.integers(0, 200, (H, W)) - 1500 * masks[date]).astype(
            np.uint16)
        if t == 1:
            red[2:5, 30:34] = 0  # a cloud marked nodata at the middle date
            nir[2:5, 30:34] = 0
        write_tif(root / f"optical/{date}_red.tif", red, nodata=0)
        write_tif(root / f"optical/{date}_nir.tif", nir, nodata=0)
        rain = (rng.gamma(2.0, 20.0, (H, W)) + 10 * t).astype(np.float32)
        write_tif(root / f"rain/{date}.tif", rain)
    for date in ("2008", "2014"):
        write_tif(root / f"labels/{date}_label.tif", masks[date].astype(np.uint8))

    # DEM in geographic coordinates at ~half the pixel size, a plane rising east in metres
    to_geo = Transformer.from_crs(CRS, "EPSG:4326", always_xy=True)
    to_utm = Transformer.from_crs("EPSG:4326", CRS, always_xy=True)
    left, top = to_geo.transform(ORIGIN[0] - 200, ORIGIN[1] + 200)
    right, bottom = to_geo.transform(ORIGIN[0] + W * RES + 200, ORIGIN[1] - H * RES - 200)
    step = 0.00015
    nx, ny = int((right - left) / step) + 1, int((top - bottom) / step) + 1
    lon, lat = np.meshgrid(left + (np.arange(nx) + 0.5) * step, top - (np.arange(ny) + 0.5) * step)
    ux, _ = to_utm.transform(lon, lat)
    dem = (500 + SLOPE_GRADIENT * (ux - ORIGIN[0])).astype(np.float32)
    write_tif(root / "dem.tif", dem, crs="EPSG:4326",
              transform=Affine(step, 0, left, 0, -step, top), nodata=-9999.0)

    # lithology at 15 m: three vertical zones, nodata in a corner
    litho = np.ones((2 * H, 2 * W), np.int16)
    litho[:, 2 * W // 3:] = 2
    litho[:, 4 * W // 3:] = 3
    litho[:4, :4] = -1
    write_tif(root / "lithology.tif", litho, transform=Affine(15, 0, ORIGIN[0], 0, -15, ORIGIN[1]),
              nodata=-1)

    import geopandas as gpd
    from shapely.geometry import LineString, Point

    fault = LineString([(ORIGIN[0] + 600, ORIGIN[1] + 100), (ORIGIN[0] + 600, ORIGIN[1] - 2000)])
    gpd.GeoDataFrame({"name": ["f1"]}, geometry=[fault], crs=CRS).to_file(
        root / "faults.gpkg", engine="pyogrio")
    polys = [Point(ORIGIN[0] + 300, ORIGIN[1] - 400).buffer(150),
             Point(ORIGIN[0] + 900, ORIGIN[1] - 1000).buffer(120)]
    gpd.GeoDataFrame({"year": ["2008", "2013-05"]}, geometry=polys, crs=CRS).to_file(
        root / "landslides.gpkg", engine="pyogrio")

    return {
        "format": "geotiff",
        "dates": list(DATES),
        "sources": [
            {"name": "red", "kind": "optical", "type": "continuous",
             "paths": {d: f"optical/{d}_red.tif" for d in DATES}},
            {"name": "nir", "kind": "optical", "type": "continuous",
             "paths": {d: f"optical/{d}_nir.tif" for d in DATES}},
            {"name": "dem", "kind": "factor", "type": "continuous", "path": "dem.tif",
             "derive": ["slope", "aspect"]},
            {"name": "lithology", "kind": "factor", "type": "categorical", "codes": [1, 2, 3],
             "encoding": "onehot", "path": "lithology.tif"},
            {"name": "rain", "kind": "factor", "type": "continuous",
             "paths": {d: f"rain/{d}.tif" for d in DATES}, "derive": ["api"]},
            {"name": "fault_distance", "kind": "factor", "type": "continuous",
             "vector": "faults.gpkg"},
        ],
        "labels": {"paths": {d: f"labels/{d}_label.tif" for d in ("2008", "2014")}},
    }


@pytest.fixture(scope="session")
def scene_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("scene")
    section = write_scene(root)
    import json

    (root / "section.json").write_text(json.dumps(section))
    return root


@pytest.fixture
def section(scene_dir: Path) -> dict[str, Any]:
    import json

    return json.loads((scene_dir / "section.json").read_text())


@pytest.fixture(scope="session")
def cube(scene_dir: Path):
    import json

    import data

    section = json.loads((scene_dir / "section.json").read_text())
    return data.build_cube(section, base_dir=scene_dir)


def shared_data_dir() -> Path:
    """``../shared/data`` beside the repository, or $LANDSLIDE_SHARED_DATA."""
    env = os.environ.get("LANDSLIDE_SHARED_DATA")
    if env:
        return Path(env)
    return (Path(__file__).parents[2] / ".." / "shared" / "data").resolve()
