"""A seeded, physically grounded, multi-temporal synthetic landslide scene written as GeoTIFFs.

The scene stands in for the paper's study area (five optical dates, DEM, geology,
precipitation, landslide labels on one 30 m grid) so that every part of the toolkit can run,
and the paper's ablations mean something, without downloading data.

How it is made (each step is seeded from one ``seed``; the settings are frozen in
:data:`DEFAULTS` so experiments cannot quietly tune the generator in their own favour):

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
from rasterio.features import rasterize
from rasterio.transform import Affine, from_origin
from scipy.ndimage import distance_transform_edt

from data._terrain import fractal_field, illumination, slope_aspect, smooth_field

__all__ = ["DEFAULTS", "OPTICAL_BANDS", "SyntheticScene", "generate_scene"]

#: Optical bands written per date, in this order.
OPTICAL_BANDS: tuple[str, ...] = ("blue", "green", "red", "nir")

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

# End-member reflectances (blue, green, red, nir). Debris, rock and bare soil are close on
# purpose: fresh scars, outcrops and ploughed fields are hard to tell apart spectrally.
_VEGETATION = np.array([0.030, 0.070, 0.040, 0.380])
_SOIL = np.array([0.090, 0.130, 0.170, 0.250])
_ROCK = np.array([0.120, 0.150, 0.185, 0.235])
_DEBRIS = np.array([0.110, 0.145, 0.180, 0.240])
# Additive path radiance at unit haze; scattering is strongest at short wavelengths.
_HAZE = np.array([0.020, 0.014, 0.009, 0.004])
_NODATA_OPTICAL = 0
_OUTLINE_VERTICES = 32
_COMPONENTS = (
    "terrain",
    "geology",
    "faults",
    "hidden",
    "rain",
    "inventory",
    "landcover",
    "optical",
)


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
    if isinstance(n_dates, bool) or not isinstance(n_dates, int) or n_dates < 1:
        raise ValueError(f"n_dates must be a positive integer, got {n_dates!r}")
    if not (math.isfinite(pixel_size) and pixel_size > 0):
        raise ValueError(f"pixel_size must be a positive number, got {pixel_size!r}")
    crs_obj = CRS.from_user_input(crs)
    if not crs_obj.is_projected:
        raise ValueError(f"crs must be projected (metres), got {crs!r}; try a UTM zone")
    cfg = _resolve_params(overrides)
    year_list = _resolve_years(years, n_dates, cfg)
    dates = tuple(str(y) for y in year_list)

    out = Path(out_dir)
    for sub in ("optical", "precipitation", "labels"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    transform = from_origin(cfg["origin_x"], cfg["origin_y"], pixel_size, pixel_size)
    rngs = dict(
        zip(
            _COMPONENTS,
            map(np.random.default_rng, np.random.SeedSequence(seed).spawn(len(_COMPONENTS))),
            strict=True,
        )
    )
    grid = _Grid(shape=shape, transform=transform, pixel_size=pixel_size, crs=crs_obj)

    dem = _make_dem(rngs["terrain"], grid, cfg)
    slope, aspect = slope_aspect(dem, pixel_size)
    faults = _make_faults(rngs["faults"], grid, cfg)
    fault_distance = _distance_to_lines(faults, grid)
    lithology = _make_lithology(rngs["geology"], grid, faults, cfg)
    weakness = np.asarray(cfg["lithology_weakness"], dtype=float)[lithology - 1]
    hidden = smooth_field(rngs["hidden"], shape, cfg["hidden_length_m"] / pixel_size)
    susceptibility = _susceptibility(slope, weakness, fault_distance, hidden, cfg)

    storms = _make_storms(rngs["rain"], grid, dem, n_dates, cfg)
    slides = _make_landslides(
        rngs["inventory"], grid, susceptibility, storms.exceedance, aspect, year_list, cfg
    )
    latest = _latest_slide_per_date(slides, grid, n_dates)
    reflectance, cloud = _make_optical(
        rngs["landcover"],
        rngs["optical"],
        grid,
        dem,
        slope,
        aspect,
        weakness,
        slides,
        latest,
        year_list,
        cfg,
    )

    paths: dict[str, Any] = {band: {} for band in OPTICAL_BANDS}
    paths.update(precipitation={}, labels={})
    profile = _profile(grid)
    for t, date in enumerate(dates):
        dn = np.clip(np.rint(reflectance[t] * 10_000.0), 1, 10_000).astype(np.uint16)
        dn[:, cloud[t]] = _NODATA_OPTICAL
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
            storms.rainfall_mm[t].astype(np.float32),
            profile,
            description=f"event rainfall (mm) of the storm before {date}, "
            f"duration {storms.duration_h[t]:.1f} h",
        )
        paths["labels"][date] = _write_raster(
            out / "labels" / f"{date}_label.tif",
            (latest[t] > 0).astype(np.uint8),
            profile,
            description=f"landslides visible on {date} (1) or not (0)",
        )
    paths["dem"] = _write_raster(
        out / "dem.tif", dem.astype(np.float32), profile, description="elevation (m)"
    )
    paths["lithology"] = _write_raster(
        out / "lithology.tif",
        lithology.astype(np.uint8),
        profile,
        description="lithology codes: "
        + ", ".join(f"{i + 1}={n}" for i, n in enumerate(cfg["lithology_names"])),
    )
    paths["faults"] = _write_vector(
        out / "faults.gpkg",
        {"name": [f"fault_{i + 1}" for i in range(len(faults))]},
        faults,
        grid,
    )
    paths["landslides"] = _write_vector(
        out / "landslides.gpkg",
        {
            "id": np.arange(1, len(slides.polygons) + 1),
            "year": np.asarray(year_list, dtype=np.int64)[slides.first_date],
            "trigger_year": np.round(slides.trigger_time, 3),
            "area_m2": np.round(shapely.area(slides.polygons), 1),
        },
        slides.polygons,
        grid,
    )

    params = {
        **cfg,
        "size": shape,
        "n_dates": n_dates,
        "seed": seed,
        "pixel_size": pixel_size,
        "crs": crs,
        "years": tuple(year_list),
        "storm_duration_h": tuple(round(float(d), 3) for d in storms.duration_h),
    }
    scene_path = out / "scene.toml"
    scene_path.write_text(_scene_toml(dates, len(cfg["lithology_names"])), encoding="utf-8")
    fraction = {d: float(np.mean(latest[t] > 0)) for t, d in enumerate(dates)}
    counts = {d: int(np.sum(slides.first_date <= t)) for t, d in enumerate(dates)}
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


# --------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class _Grid:
    shape: tuple[int, int]
    transform: Affine
    pixel_size: float
    crs: CRS

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(left, bottom, right, top)`` in CRS units."""
        left, top = self.transform.c, self.transform.f
        return (
            left,
            top - self.shape[0] * self.pixel_size,
            left + self.shape[1] * self.pixel_size,
            top,
        )

    def centres(self) -> tuple[np.ndarray, np.ndarray]:
        """CRS ``(x, y)`` of every pixel centre, each shaped like the grid."""
        left, bottom, _, top = self.bounds
        x = left + (np.arange(self.shape[1]) + 0.5) * self.pixel_size
        y = top - (np.arange(self.shape[0]) + 0.5) * self.pixel_size
        return np.meshgrid(x, y)


def _make_dem(rng: np.random.Generator, grid: _Grid, cfg: Mapping[str, Any]) -> np.ndarray:
    """Fractal DEM in metres, scaled to a target median slope.

    Scaling by slope rather than by relief keeps the slope distribution (what drives the
    physics) the same whatever the scene size.
    """
    surface = fractal_field(rng, grid.shape, cfg["hurst"], cfg["dem_smoothing_m"] / grid.pixel_size)
    gy, gx = np.gradient(surface, grid.pixel_size)
    median_gradient = float(np.median(np.hypot(gx, gy)))
    scale = math.tan(math.radians(cfg["median_slope_deg"])) / max(median_gradient, 1e-12)
    dem = surface * scale
    return cfg["base_elevation_m"] + dem - dem.min()


def _make_faults(
    rng: np.random.Generator, grid: _Grid, cfg: Mapping[str, Any]
) -> list[shapely.LineString]:
    """Wavy fault traces crossing the scene, clipped to its bounds."""
    left, bottom, right, top = grid.bounds
    width, height = right - left, top - bottom
    diagonal = math.hypot(width, height)
    box = shapely.box(left, bottom, right, top)
    lines: list[shapely.LineString] = []
    while len(lines) < int(cfg["n_faults"]):
        # A point in the inner 60 % guarantees a trace that crosses a good part of the scene.
        cx = left + width * rng.uniform(0.2, 0.8)
        cy = bottom + height * rng.uniform(0.2, 0.8)
        strike = rng.uniform(0.0, np.pi)
        along = np.linspace(-diagonal, diagonal, 9)
        across = rng.normal(0.0, 0.03 * diagonal, along.size)
        xs = cx + along * np.cos(strike) - across * np.sin(strike)
        ys = cy + along * np.sin(strike) + across * np.cos(strike)
        clipped = shapely.intersection(shapely.LineString(np.column_stack([xs, ys])), box)
        # A wiggle can make the clip a MultiLineString; keep the longest piece as the trace.
        parts = list(getattr(clipped, "geoms", [clipped]))
        longest = max(parts, key=lambda g: g.length)
        if isinstance(longest, shapely.LineString) and longest.length > 0:
            lines.append(longest)
    return lines


def _distance_to_lines(lines: Sequence[shapely.LineString], grid: _Grid) -> np.ndarray:
    """Euclidean distance (CRS units) from each pixel centre to the nearest line pixel."""
    if not lines:
        return np.full(grid.shape, np.inf)
    on_line = rasterize(
        [(line, 1) for line in lines],
        out_shape=grid.shape,
        transform=grid.transform,
        fill=0,
        all_touched=True,
        dtype="uint8",
    )
    return distance_transform_edt(on_line == 0, sampling=grid.pixel_size)


def _make_lithology(
    rng: np.random.Generator,
    grid: _Grid,
    faults: Sequence[shapely.LineString],
    cfg: Mapping[str, Any],
) -> np.ndarray:
    """Folded strata of ``k`` repeating lithologies, offset across each fault (codes 1..k)."""
    x, y = grid.centres()
    dip_direction = rng.uniform(0.0, 2.0 * np.pi)
    across_strike = x * np.cos(dip_direction) + y * np.sin(dip_direction)
    warp = cfg["strata_warp_m"] * smooth_field(rng, grid.shape, 1500.0 / grid.pixel_size)
    position = across_strike + warp
    for fault in faults:
        # Side of the fault's chord, as a sign; the block on one side is displaced.
        (x0, y0), (x1, y1) = fault.coords[0], fault.coords[-1]
        side = np.sign((x1 - x0) * (y - y0) - (y1 - y0) * (x - x0))
        position = position + 0.5 * side * cfg["fault_throw_m"] * rng.uniform(0.5, 1.5)
    k = len(cfg["lithology_names"])
    # Random unit order per seed, so that no code is tied to a fixed place in the sequence.
    order = rng.permutation(k)
    unit = np.floor((position - position.min()) / cfg["strata_width_m"]).astype(np.int64) % k
    return (order[unit] + 1).astype(np.uint8)


def _susceptibility(
    slope: np.ndarray,
    weakness: np.ndarray,
    fault_distance: np.ndarray,
    hidden: np.ndarray,
    cfg: Mapping[str, Any],
) -> np.ndarray:
    """Relative landslide initiation rate per pixel (not a probability; only ratios matter).

    The slope response is a hump: gentle slopes are stable, and the steepest slopes are bare
    rock with no soil left to fail. It multiplies the rest, so flat ground never fails.
    """
    hump = np.exp(-(((slope - cfg["slope_peak_deg"]) / cfg["slope_width_deg"]) ** 2))
    proximity = np.exp(-fault_distance / cfg["fault_decay_m"])
    return hump * np.exp(
        cfg["weight_lithology"] * weakness
        + cfg["weight_fault"] * proximity
        + cfg["weight_hidden"] * hidden
    )


# --------------------------------------------------------------------------- rainfall


@dataclass(frozen=True)
class _Storms:
    duration_h: np.ndarray  # (T,)
    rainfall_mm: np.ndarray  # (T, H, W) event totals
    exceedance: np.ndarray  # (T, H, W) max(0, log(I / I_c))


def _make_storms(
    rng: np.random.Generator, grid: _Grid, dem: np.ndarray, n_dates: int, cfg: Mapping[str, Any]
) -> _Storms:
    """The triggering storm of each interval and how far it exceeds the I-D threshold."""
    duration = np.clip(
        cfg["duration_median_h"] * np.exp(cfg["duration_sigma"] * rng.standard_normal(n_dates)),
        3.0,
        120.0,
    )
    threshold = cfg["threshold_c"] * duration ** -cfg["threshold_b"]  # mm/h
    level = cfg["storm_level_mean"] + cfg["storm_level_sigma"] * rng.standard_normal(n_dates)
    relief = (dem - dem.mean()) / max(float(dem.std()), 1e-9)
    cells = np.stack(
        [
            smooth_field(rng, grid.shape, cfg["storm_length_m"] / grid.pixel_size)
            for _ in range(n_dates)
        ]
    )
    log_ratio = (
        level[:, None, None]
        + cfg["orographic_gain"] * relief[None]
        + cfg["storm_spatial_sigma"] * cells
    )
    intensity = threshold[:, None, None] * np.exp(log_ratio)
    return _Storms(
        duration_h=duration,
        rainfall_mm=intensity * duration[:, None, None],
        exceedance=np.maximum(log_ratio, 0.0),
    )


# --------------------------------------------------------------------------- inventory


@dataclass(frozen=True)
class _Slides:
    polygons: np.ndarray  # (N,) shapely Polygons
    first_date: np.ndarray  # (N,) index of the first date showing the slide
    trigger_time: np.ndarray  # (N,) decimal year of failure
    revegetation: np.ndarray  # (N,) e-folding time of regrowth, years
    severity: np.ndarray  # (N,) share of cover a fresh slide strips


def _make_landslides(
    rng: np.random.Generator,
    grid: _Grid,
    susceptibility: np.ndarray,
    exceedance: np.ndarray,
    aspect: np.ndarray,
    years: Sequence[int],
    cfg: Mapping[str, Any],
) -> _Slides:
    """Sample landslide initiations from susceptibility x rainfall exceedance, then outlines."""
    n_pixels = grid.shape[0] * grid.shape[1]
    length_px = cfg["length_median_m"] / grid.pixel_size
    ratio_lo, ratio_hi = cfg["width_ratio"]
    # Mean ellipse area (pixels) for a lognormal length and uniform width ratio.
    lognormal_square = math.exp(2 * cfg["length_sigma"] ** 2)
    mean_area = np.pi / 4 * length_px**2 * lognormal_square * (ratio_lo + ratio_hi) / 2
    n = int(rng.poisson(cfg["landslide_fraction"] * n_pixels / mean_area))
    starts = np.asarray([years[0] - cfg["pre_years"], *years[:-1]], dtype=float)
    ends = np.asarray(years, dtype=float)
    # A longer interval sees more storms like its characteristic one: rate ~ its length.
    weight = ((ends - starts)[:, None, None] * susceptibility[None] * exceedance).ravel()
    total = float(weight.sum())
    if n == 0 or total <= 0:
        empty = np.empty(0)
        return _Slides(np.empty(0, dtype=object), empty.astype(np.int64), empty, empty, empty)
    # Inverse-CDF sampling of (date, pixel) cells; ties broken by the sort of uniform draws.
    cells = np.searchsorted(np.cumsum(weight), rng.uniform(0.0, total, n), side="right")
    cells = np.minimum(cells, weight.size - 1)
    first_date, flat = np.divmod(cells, n_pixels)
    row, col = np.divmod(flat, grid.shape[1])

    trigger = rng.uniform(starts[first_date], ends[first_date])

    length = cfg["length_median_m"] * np.exp(cfg["length_sigma"] * rng.standard_normal(n))
    width = length * rng.uniform(ratio_lo, ratio_hi, n)
    azimuth = np.radians(aspect[row, col])  # downslope, clockwise from north
    down = np.column_stack([np.sin(azimuth), np.cos(azimuth)])  # (east, north)
    # Subpixel jitter so crowns are not all on pixel centres.
    x0, y0 = grid.transform @ (col + rng.uniform(0, 1, n), row + rng.uniform(0, 1, n))
    centre = np.column_stack([x0, y0]) + 0.5 * length[:, None] * down

    theta = np.linspace(0.0, 2.0 * np.pi, _OUTLINE_VERTICES, endpoint=False)
    harmonics = np.arange(2, 5)
    amp = cfg["outline_roughness"] * rng.standard_normal((n, harmonics.size))
    phase = rng.uniform(0.0, 2.0 * np.pi, (n, harmonics.size))
    # Irregular but star-shaped outline (radius stays positive), so polygons are valid.
    waves = np.cos(harmonics[None, :, None] * theta + phase[..., None])  # (n, h, vertices)
    wobble = np.clip(1.0 + np.einsum("nh,nht->nt", amp, waves), 0.5, 1.5)
    u = 0.5 * length[:, None] * np.cos(theta) * wobble  # along the slope
    v = 0.5 * width[:, None] * np.sin(theta) * wobble  # across the slope
    xs = centre[:, :1] + u * down[:, :1] + v * down[:, 1:]
    ys = centre[:, 1:] + u * down[:, 1:] - v * down[:, :1]
    ring = np.stack([xs, ys], axis=-1)
    ring = np.concatenate([ring, ring[:, :1]], axis=1)
    polygons = shapely.polygons(ring)

    tau = cfg["revegetation_years"] * np.exp(cfg["revegetation_sigma"] * rng.standard_normal(n))
    # Shallow slides under canopy strip little and barely show from above.
    severity = rng.uniform(*cfg["scar_severity"], n)
    order = np.argsort(trigger, kind="stable")  # chronological, so later slides draw on top
    return _Slides(polygons[order], first_date[order], trigger[order], tau[order], severity[order])


def _latest_slide_per_date(slides: _Slides, grid: _Grid, n_dates: int) -> np.ndarray:
    """``(T, H, W)`` int32: 1 + index of the latest slide visible per pixel and date, 0 = none."""
    latest = np.zeros((n_dates, *grid.shape), dtype=np.int32)
    for t in range(n_dates):
        visible = np.flatnonzero(slides.first_date <= t)
        if visible.size:
            # Slides are in chronological order and rasterize burns in order: last one wins.
            latest[t] = rasterize(
                zip(slides.polygons[visible], (visible + 1).tolist(), strict=True),
                out_shape=grid.shape,
                transform=grid.transform,
                fill=0,
                dtype="int32",
            )
    return latest


# --------------------------------------------------------------------------- optics


def _make_optical(
    rng_cover: np.random.Generator,
    rng_optical: np.random.Generator,
    grid: _Grid,
    dem: np.ndarray,
    slope: np.ndarray,
    aspect: np.ndarray,
    weakness: np.ndarray,
    slides: _Slides,
    latest: np.ndarray,
    years: Sequence[int],
    cfg: Mapping[str, Any],
) -> tuple[np.ndarray, np.ndarray]:
    """Top-of-canopy reflectance ``(T, 4, H, W)`` and cloud masks ``(T, H, W)``."""
    shape, px = grid.shape, grid.pixel_size
    elevation = (dem - dem.min()) / max(float(np.ptp(dem)), 1e-9)

    # Static land cover: forest thinning towards the treeline and on steep slopes.
    vegetation = np.clip(
        0.85
        - 1.2 * np.maximum(elevation - 0.8, 0.0)
        - 0.006 * np.maximum(slope - 30.0, 0.0)
        + 0.08 * smooth_field(rng_cover, shape, 300.0 / px),
        0.1,
        0.95,
    )
    # Outcrops: strong rock on steep slopes (some of them in the landslide slope range).
    outcrop_score = (
        2.0 * (1.0 - weakness)
        + (slope - cfg["slope_peak_deg"]) / 8.0
        + 0.5 * smooth_field(rng_cover, shape, 150.0 / px)
    )
    cut = np.quantile(outcrop_score, 1.0 - cfg["outcrop_fraction"])
    rock = (0.9 * np.clip((outcrop_score - cut) / 0.5 + 0.5, 0.0, 1.0)).astype(np.float32)
    # Fields: flat valley floors, in rectangular parcels that are bare or cropped per date.
    field_score = -slope / 5.0 - 2.0 * elevation + 0.8 * smooth_field(rng_cover, shape, 300.0 / px)
    field = field_score >= np.quantile(field_score, 1.0 - cfg["field_fraction"])
    parcel = max(1, round(cfg["field_parcel_m"] / px))
    rows, cols = np.indices(shape) // parcel
    n_parcels = (shape[0] // parcel + 1, shape[1] // parcel + 1)
    texture = np.exp(cfg["texture_sigma"] * rng_cover.standard_normal(shape))
    patchiness = rng_cover.uniform(0.75, 1.0, shape)  # scars are uneven within a slide

    n_dates = len(years)
    reflectance = np.empty((n_dates, len(OPTICAL_BANDS), *shape), dtype=np.float32)
    cloud = np.zeros((n_dates, *shape), dtype=bool)
    trigger = np.concatenate([[np.nan], slides.trigger_time])
    tau = np.concatenate([[1.0], slides.revegetation])
    severity = np.concatenate([[0.0], slides.severity])
    for t, year in enumerate(years):
        vigour = rng_optical.uniform(0.75, 1.0)  # phenology at the acquisition day
        ploughed = rng_optical.uniform(size=n_parcels) < cfg["field_bare_probability"]
        bare = field & ploughed[rows, cols]
        veg_cover = (np.where(field, np.where(bare, 0.1, 0.8), vegetation) * (1.0 - rock)).astype(
            np.float32
        )
        soil_cover = 1.0 - veg_cover - rock
        # Scar: the newest slide on a pixel strips a share that regrows as exp(-age / tau).
        idx = latest[t]
        age = np.where(idx > 0, year - trigger[idx], np.inf)
        stripped = (severity[idx] * np.exp(-age / tau[idx]) * patchiness).astype(np.float32)
        veg_spectrum = _VEGETATION * np.array([1.0, 1.0, 1.0 / vigour, vigour])
        sun_elevation = rng_optical.uniform(35.0, 60.0)
        cos_i = illumination(slope, aspect, sun_elevation, rng_optical.uniform(120.0, 170.0))
        cos_z = math.sin(math.radians(sun_elevation))
        light = ((cos_i + cfg["diffuse_light"]) / (cos_z + cfg["diffuse_light"]) * texture).astype(
            np.float32
        )
        haze = rng_optical.uniform(0.5, 1.5) * _HAZE
        # One band at a time in float32: a (H, W, bands) float64 mix is the memory peak.
        for b in range(len(OPTICAL_BANDS)):
            cover_mix = veg_cover * veg_spectrum[b] + soil_cover * _SOIL[b] + rock * _ROCK[b]
            mixed = cover_mix + stripped * (_DEBRIS[b] - cover_mix)
            noise = cfg["sensor_noise"] * rng_optical.standard_normal(shape, dtype=np.float32)
            reflectance[t, b] = mixed * light + (haze[b] + noise)
        cover = rng_optical.uniform(0.0, cfg["cloud_cover_max"])
        clouds = smooth_field(rng_optical, shape, cfg["cloud_length_m"] / px)
        cloud[t] = clouds > np.quantile(clouds, 1.0 - cover)
    return reflectance, cloud


# --------------------------------------------------------------------------- writers


def _profile(grid: _Grid) -> dict[str, Any]:
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


def _write_vector(path: Path, columns: Mapping[str, Any], geometry: Any, grid: _Grid) -> Path:
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
