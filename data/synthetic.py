"""A seeded, physically grounded, multi-temporal synthetic landslide scene written as GeoTIFFs.

The scene stands in for the paper's study area (five optical dates, DEM, geology,
precipitation, landslide labels on one 30 m grid) so that every part of the toolkit can run,
and the paper's ablations mean something, without downloading data.

How it is made (each step is seeded from one ``seed``; the settings are frozen in
:data:`DEFAULTS` so experiments cannot quietly tune the generator in their own favour;
:mod:`data.landscape` simulates, this module writes):

1. **Terrain**: a fractal DEM (spectral synthesis, Hurst exponent ``hurst``) scaled so the
   median slope is ``median_slope_deg``.
2. **Geology**: folded strata of ``len(lithology_names)`` lithologies (codes ``1..k``),
   offset across ``n_faults`` wavy fault lines (written as ``faults.gpkg``).
3. **Susceptibility** (relative initiation rate per pixel): a hump-shaped slope response
   peaking at ``slope_peak_deg``, times ``exp`` of weak lithology, fault proximity and an
   *unobserved* soil/groundwater field. The unobserved part, and the fact that only a few
   susceptible pixels actually fail, is why the factors alone cannot say where landslides are.
4. **Rainfall**: one triggering storm per interval before each date (the first interval is
   the ``pre_years`` before the first image). Each storm has a duration ``D`` and a spatial
   intensity field ``I`` (regional level, orographic gain, storm cells). Landslides start only
   where ``I`` exceeds the intensity-duration threshold ``I_c = c * D ** -b`` (Caine 1980:
   ``c = 14.82 mm/h, b = 0.39``), at a rate proportional to
   ``susceptibility * log(I / I_c)``. The precipitation raster of a date is that storm's
   event total ``I * D`` in mm.
5. **Inventory**: the number of landslides is Poisson with a mean that puts
   ``landslide_fraction`` of the scene under landslides; each is an irregular ellipse whose
   long axis points downslope, starting at its crown. They are written as
   ``landslides.gpkg`` (``year`` = the date at which a landslide is first visible) and
   rasterized into cumulative per-date labels.
6. **Optical**: linear mixing of vegetation / soil / rock / debris end-members with
   seasonal vigour, terrain illumination, haze, sensor noise and clouds (nodata). A
   landslide strips vegetation (NIR down, red up) and revegetates with an e-folding time of
   ``revegetation_years``, so old scars fade. Bare-rock outcrops on steep, strong rock and
   ploughed fields on flat land look like scars, so optical data alone is fooled too.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import geopandas as gpd
import numpy as np
import rasterio
import shapely
from rasterio.crs import CRS
from rasterio.transform import Affine, from_origin

from data.landscape import OPTICAL_BANDS, Landscape, SceneGrid, simulate_landscape

__all__ = ["DEFAULTS", "OPTICAL_BANDS", "SyntheticScene", "generate_scene"]

#: The generator's frozen settings. ``generate_scene(..., overrides={...})`` may change them
#: for a deliberate experiment (the change is recorded in ``SyntheticScene.params``), but the
#: defaults themselves are fixed: results reported on "the synthetic scene" use these.
DEFAULTS: Mapping[str, Any] = MappingProxyType(
    {
        # -- grid origin (UTM 43N, roughly the Kashmir Himalaya) --
        "origin_x": 500_000.0,
        "origin_y": 3_800_000.0,
        # -- terrain --
        "base_elevation_m": 1800.0,
        "hurst": 0.8,
        "dem_smoothing_m": 150.0,
        "median_slope_deg": 24.0,
        # -- geology --
        "lithology_names": ("granite", "sandstone", "schist", "shale"),
        "lithology_weakness": (0.0, 0.45, 0.7, 1.0),
        "strata_width_m": 600.0,
        "strata_warp_m": 400.0,
        "fault_throw_m": 350.0,
        "n_faults": 3,
        # -- susceptibility --
        "slope_peak_deg": 35.0,
        "slope_width_deg": 9.0,
        "weight_lithology": 1.6,
        "weight_fault": 1.4,
        "fault_decay_m": 450.0,
        "weight_hidden": 0.6,
        "hidden_length_m": 600.0,
        # -- rainfall: intensity-duration threshold I_c = c * D ** -b (mm/h, h) --
        "threshold_c": 14.82,
        "threshold_b": 0.39,
        "duration_median_h": 24.0,
        "duration_sigma": 0.6,
        "storm_level_mean": 0.0,
        "storm_level_sigma": 0.25,
        "storm_spatial_sigma": 0.5,
        "storm_length_m": 2000.0,
        "orographic_gain": 0.15,
        # -- inventory --
        "landslide_fraction": 0.03,
        "length_median_m": 240.0,
        "length_sigma": 0.4,
        "width_ratio": (0.3, 0.55),
        "outline_roughness": 0.08,
        "pre_years": 3.0,
        "year_step": 3,
        "first_year": 2008,
        # -- land cover and optics --
        "revegetation_years": 12.0,
        "revegetation_sigma": 0.3,
        "scar_severity": (0.25, 1.0),
        "outcrop_fraction": 0.06,
        "field_fraction": 0.08,
        "field_parcel_m": 180.0,
        "field_bare_probability": 0.4,
        "cloud_cover_max": 0.3,
        "cloud_length_m": 450.0,
        "sensor_noise": 0.004,
        "texture_sigma": 0.04,
        "diffuse_light": 0.25,
    }
)

_NODATA_OPTICAL = 0


@dataclass(frozen=True)
class SyntheticScene:
    """What :func:`generate_scene` wrote.

    Attributes:
        out_dir: Folder holding the scene.
        scene_path: ``scene.toml`` (a ``[data]`` section in the study-file format).
        dates: Date names, oldest first (``"2008"``, ...).
        paths: Absolute paths: ``paths[band][date]`` for each optical band,
            ``paths["precipitation"][date]``, ``paths["labels"][date]``, and ``paths["dem"]``,
            ``paths["lithology"]``, ``paths["faults"]``, ``paths["landslides"]``.
        landslide_fraction: Share of pixels under a visible landslide, per date (cumulative).
        n_landslides: Landslides visible at each date (cumulative).
        shape: Raster ``(rows, cols)``.
        crs: Coordinate reference system of every layer.
        transform: Affine pixel-to-CRS transform of every raster.
        params: Every generator setting used (``DEFAULTS`` merged with overrides, plus size,
            seed, grid and years), read-only.
    """

    out_dir: Path
    scene_path: Path
    dates: tuple[str, ...]
    paths: Mapping[str, Any]
    landslide_fraction: Mapping[str, float]
    n_landslides: Mapping[str, int]
    shape: tuple[int, int]
    crs: str
    transform: Affine
    params: Mapping[str, Any]


def generate_scene(
    out_dir: str | Path,
    *,
    size: int | tuple[int, int] = 256,
    n_dates: int = 5,
    seed: int = 0,
    pixel_size: float = 30.0,
    crs: str = "EPSG:32643",
    years: Sequence[int] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> SyntheticScene:
    """Write a seeded multi-temporal landslide scene (GeoTIFFs, GeoPackages, scene.toml).

    Layout under ``out_dir``::

        scene.toml                      [data] section: sources, dates, labels
        optical/<date>_<band>.tif       uint16 reflectance * 10000, nodata 0 (clouds)
        precipitation/<date>_precipitation.tif   float32 event rainfall, mm
        labels/<date>_label.tif         uint8 {0, 1}, every landslide visible at <date>
        dem.tif                         float32 elevation, m
        lithology.tif                   uint8 codes 1..k
        faults.gpkg                     fault lines
        landslides.gpkg                 landslide polygons, field ``year`` = first visible

    Args:
        out_dir: Folder to write into (created; existing scene files are overwritten).
        size: Raster size, ``n`` for ``n x n`` or ``(rows, cols)``.
        n_dates: Number of optical dates (>= 1).
        seed: Seed of every random choice; the same seed gives byte-identical rasters.
        pixel_size: Pixel edge in CRS units (metres; the CRS must be projected).
        crs: Projected CRS of the scene.
        years: Year of each date, strictly increasing; default ``first_year`` in steps of
            ``year_step`` (2008, 2011, 2014, 2017, 2020 for five dates, as in the paper).
        overrides: Changes to :data:`DEFAULTS` for a deliberate experiment.

    Returns:
        A :class:`SyntheticScene` describing what was written.

    Raises:
        ValueError: A size, date count, year list, pixel size, CRS or override is invalid.
    """
    shape = _resolve_shape(size)
    crs_obj = _check_grid(n_dates, pixel_size, crs)
    cfg = _resolve_params(overrides)
    year_list = _resolve_years(years, n_dates, cfg)
    dates = tuple(str(y) for y in year_list)

    out = Path(out_dir)
    for sub in ("optical", "precipitation", "labels"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    transform = from_origin(cfg["origin_x"], cfg["origin_y"], pixel_size, pixel_size)
    grid = SceneGrid(shape=shape, transform=transform, pixel_size=pixel_size, crs=crs_obj)
    land = simulate_landscape(grid, year_list, seed, cfg)
    paths = _write_layers(out, land, dates, year_list, cfg)

    params = {
        **cfg, "size": shape, "n_dates": n_dates, "seed": seed, "pixel_size": pixel_size,
        "crs": crs, "years": tuple(year_list),
        "storm_duration_h": tuple(round(float(d), 3) for d in land.storms.duration_h),
    }
    scene_path = out / "scene.toml"
    scene_path.write_text(_scene_toml(dates, len(cfg["lithology_names"])), encoding="utf-8")
    fraction = {d: float(np.mean(land.latest[t] > 0)) for t, d in enumerate(dates)}
    counts = {d: int(np.sum(land.slides.first_date <= t)) for t, d in enumerate(dates)}
    return SyntheticScene(
        out_dir=out,
        scene_path=scene_path,
        dates=dates,
        paths=MappingProxyType(
            {k: MappingProxyType(v) if isinstance(v, dict) else v for k, v in paths.items()}
        ),
        landslide_fraction=MappingProxyType(fraction),
        n_landslides=MappingProxyType(counts),
        shape=shape,
        crs=crs,
        transform=transform,
        params=MappingProxyType(params),
    )


def _check_grid(n_dates: int, pixel_size: float, crs: str) -> CRS:
    """The scene's CRS, once the date count, pixel size and CRS are valid.

    Raises:
        ValueError: ``n_dates`` is not a positive integer, ``pixel_size`` not a positive
            number, or ``crs`` not a projected CRS.
    """
    if isinstance(n_dates, bool) or not isinstance(n_dates, int) or n_dates < 1:
        raise ValueError(f"n_dates must be a positive integer, got {n_dates!r}")
    if not (math.isfinite(pixel_size) and pixel_size > 0):
        raise ValueError(f"pixel_size must be a positive number, got {pixel_size!r}")
    crs_obj = CRS.from_user_input(crs)
    if not crs_obj.is_projected:
        raise ValueError(f"crs must be projected (metres), got {crs!r}; try a UTM zone")
    return crs_obj


def _write_layers(
    out: Path,
    land: Landscape,
    dates: Sequence[str],
    years: Sequence[int],
    cfg: Mapping[str, Any],
) -> dict[str, Any]:
    """Write every layer of the landscape; the paths as :attr:`SyntheticScene.paths`."""
    paths: dict[str, Any] = {band: {} for band in OPTICAL_BANDS}
    paths.update(precipitation={}, labels={})
    profile = _profile(land.grid)
    for t, date in enumerate(dates):
        dn = np.clip(np.rint(land.reflectance[t] * 10_000.0), 1, 10_000).astype(np.uint16)
        dn[:, land.cloud[t]] = _NODATA_OPTICAL
        for b, band in enumerate(OPTICAL_BANDS):
            paths[band][date] = _write_raster(
                out / "optical" / f"{date}_{band}.tif",
                dn[b],
                profile,
                nodata=_NODATA_OPTICAL,
                description=f"{band} reflectance x 10000 on {date}; 0 = cloud",
            )
        paths["precipitation"][date] = _write_raster(
            out / "precipitation" / f"{date}_precipitation.tif",
            land.storms.rainfall_mm[t].astype(np.float32),
            profile,
            description=f"event rainfall (mm) of the storm before {date}, "
            f"duration {land.storms.duration_h[t]:.1f} h",
        )
        paths["labels"][date] = _write_raster(
            out / "labels" / f"{date}_label.tif",
            (land.latest[t] > 0).astype(np.uint8),
            profile,
            description=f"landslides visible on {date} (1) or not (0)",
        )
    paths["dem"] = _write_raster(
        out / "dem.tif", land.dem.astype(np.float32), profile, description="elevation (m)"
    )
    paths["lithology"] = _write_raster(
        out / "lithology.tif",
        land.lithology.astype(np.uint8),
        profile,
        description="lithology codes: "
        + ", ".join(f"{i + 1}={n}" for i, n in enumerate(cfg["lithology_names"])),
    )
    paths["faults"] = _write_vector(
        out / "faults.gpkg",
        {"name": [f"fault_{i + 1}" for i in range(len(land.faults))]},
        land.faults,
        land.grid,
    )
    slides = land.slides
    paths["landslides"] = _write_vector(
        out / "landslides.gpkg",
        {
            "id": np.arange(1, len(slides.polygons) + 1),
            "year": np.asarray(years, dtype=np.int64)[slides.first_date],
            "trigger_year": np.round(slides.trigger_time, 3),
            "area_m2": np.round(shapely.area(slides.polygons), 1),
        },
        slides.polygons,
        land.grid,
    )
    return paths


# --------------------------------------------------------------------------- arguments


def _resolve_shape(size: int | tuple[int, int]) -> tuple[int, int]:
    """Normalise ``size`` to ``(rows, cols)``, each at least 8 pixels."""
    dims = (size, size) if isinstance(size, int) and not isinstance(size, bool) else size
    try:
        rows, cols = (int(d) for d in dims)
        ok = all(isinstance(d, int | np.integer) and not isinstance(d, bool) for d in dims)
    except (TypeError, ValueError):
        ok = False
    # Below 8 pixels there is no room for a single landslide outline.
    if not ok or rows < 8 or cols < 8:
        raise ValueError(f"size must be an int or (rows, cols), each >= 8, got {size!r}")
    return rows, cols


def _resolve_params(overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """``DEFAULTS`` with ``overrides`` applied; unknown keys are an error, not ignored."""
    cfg = dict(DEFAULTS)
    unknown = sorted(set(overrides or {}) - set(cfg))
    if unknown:
        raise ValueError(f"unknown generator setting(s) {unknown}; known: {sorted(cfg)}")
    cfg.update(overrides or {})
    if len(cfg["lithology_weakness"]) != len(cfg["lithology_names"]):
        raise ValueError("lithology_weakness and lithology_names must have the same length")
    if not 0.0 < cfg["landslide_fraction"] < 0.5:
        raise ValueError(f"landslide_fraction must be in (0, 0.5), got {cfg['landslide_fraction']}")
    return cfg


def _resolve_years(years: Sequence[int] | None, n_dates: int, cfg: Mapping[str, Any]) -> list[int]:
    """Years of the dates: given (checked) or ``first_year`` in ``year_step`` steps."""
    if years is None:
        return [int(cfg["first_year"]) + int(cfg["year_step"]) * i for i in range(n_dates)]
    out = [int(y) for y in years]
    if len(out) != n_dates or any(b <= a for a, b in zip(out, out[1:], strict=False)):
        raise ValueError(f"years must be {n_dates} strictly increasing years, got {list(years)}")
    return out


# --------------------------------------------------------------------------- writers


def _profile(grid: SceneGrid) -> dict[str, Any]:
    """GeoTIFF creation options shared by every raster of the scene."""
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "height": grid.shape[0],
        "width": grid.shape[1],
        "count": 1,
        "crs": grid.crs,
        "transform": grid.transform,
        "compress": "deflate",
    }
    # Tiles let windowed readers fetch blocks; GDAL wants multiples of 16 within the image.
    if min(grid.shape) >= 256:
        profile.update(tiled=True, blockxsize=256, blockysize=256)
    return profile


def _write_raster(
    path: Path,
    array: np.ndarray,
    profile: Mapping[str, Any],
    *,
    description: str,
    nodata: float | None = None,
) -> Path:
    """Write one single-band GeoTIFF and return its absolute path."""
    with rasterio.open(path, "w", **profile, dtype=array.dtype, nodata=nodata) as dst:
        dst.write(array, 1)
        dst.set_band_description(1, description)
    return path.resolve()


def _write_vector(path: Path, columns: Mapping[str, Any], geometry: Any, grid: SceneGrid) -> Path:
    """Write a GeoPackage layer (replacing any earlier file) and return its absolute path."""
    path.unlink(missing_ok=True)
    frame = gpd.GeoDataFrame(dict(columns), geometry=list(geometry), crs=grid.crs)
    frame.to_file(path, driver="GPKG", engine="pyogrio")
    return path.resolve()


# --------------------------------------------------------------------------- scene.toml


def _scene_toml(dates: Sequence[str], n_lithologies: int) -> str:
    """The ``[data]`` section describing the scene (see contracts/data_section.md)."""
    optical = [
        {
            "name": band,
            "kind": "optical",
            "type": "continuous",
            "nodata": _NODATA_OPTICAL,
            "paths": {d: f"optical/{d}_{band}.tif" for d in dates},
        }
        for band in OPTICAL_BANDS
    ]
    factors = [
        {
            "name": "dem",
            "kind": "factor",
            "type": "continuous",
            "path": "dem.tif",
            "derive": ["slope", "aspect"],
        },
        {
            "name": "lithology",
            "kind": "factor",
            "type": "categorical",
            "codes": list(range(1, n_lithologies + 1)),
            "encoding": "onehot",
            "path": "lithology.tif",
        },
        {
            "name": "fault_distance",
            "kind": "factor",
            "type": "continuous",
            "vector": "faults.gpkg",
            "derive": ["distance"],
        },
        {
            "name": "precipitation",
            "kind": "factor",
            "type": "continuous",
            "paths": {d: f"precipitation/{d}_precipitation.tif" for d in dates},
        },
    ]
    data = {
        "format": "geotiff",
        "dates": list(dates),
        "sources": optical + factors,
        "labels": {"paths": {d: f"labels/{d}_label.tif" for d in dates}},
    }
    header = "# Written by data.synthetic.generate_scene; paths are relative to this file.\n"
    return header + "\n".join(_toml_table("data", data)) + "\n"


_BARE_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def _toml_key(key: str) -> str:
    """A bare key where TOML allows one and it reads as a name; otherwise a quoted key."""
    return key if _BARE_KEY.fullmatch(key) else _toml_value(key)


def _toml_value(value: Any) -> str:
    """One TOML value: string, bool, int, finite float, array or inline table."""
    if isinstance(value, str):
        # JSON string escapes are a subset of TOML basic-string escapes; TOML also wants DEL
        # escaped. ensure_ascii=False keeps non-ASCII literal (surrogate escapes are not TOML).
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        if not math.isfinite(value):
            raise ValueError(f"cannot write non-finite float {value!r} to scene.toml")
        return repr(float(value))
    if isinstance(value, Sequence):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        items = ", ".join(f"{_toml_key(str(k))} = {_toml_value(v)}" for k, v in value.items())
        return "{ " + items + " }" if items else "{}"
    raise TypeError(f"cannot write {type(value).__name__} to scene.toml")


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, Mapping) for v in value)


def _is_subtable(value: Any) -> bool:
    """Mappings holding tables or table arrays become ``[a.b]`` sections; flat ones inline."""
    return isinstance(value, Mapping) and any(
        isinstance(v, Mapping) or _is_table_array(v) for v in value.values()
    )


def _toml_table(name: str, table: Mapping[str, Any], header: str | None = None) -> list[str]:
    """Lines of one table (header ``[name]`` unless given), its sub-tables and table arrays."""
    lines = [header or f"[{name}]"]
    nested: list[tuple[str, Any]] = []
    for key, value in table.items():
        if _is_subtable(value) or _is_table_array(value):
            nested.append((key, value))
        else:
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    for key, value in nested:
        path = f"{name}.{_toml_key(key)}"
        if _is_table_array(value):
            for item in value:
                lines += ["", *_toml_table(path, item, header=f"[[{path}]]")]
        else:
            lines += ["", *_toml_table(path, value)]
    return lines
