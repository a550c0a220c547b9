"""The synthetic scene's landscape: terrain, geology, rainfall, landslides and optics.

:func:`simulate_landscape` makes every layer of the scene in memory, each from its own
seeded generator; :mod:`data.synthetic` (whose docstring describes the physics step by
step) writes them as GeoTIFFs and GeoPackages.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely
from rasterio.crs import CRS
from rasterio.features import rasterize
from rasterio.transform import Affine
from scipy.ndimage import distance_transform_edt

from data._terrain import fractal_field, illumination, slope_aspect, smooth_field

__all__ = ["OPTICAL_BANDS", "Landscape", "SceneGrid", "Slides", "Storms", "simulate_landscape"]

#: Optical bands made per date, in this order.
OPTICAL_BANDS: tuple[str, ...] = ("blue", "green", "red", "nir")

# End-member reflectances (blue, green, red, nir). Debris, rock and bare soil are close on
# purpose: fresh scars, outcrops and ploughed fields are hard to tell apart spectrally.
_VEGETATION = np.array([0.030, 0.070, 0.040, 0.380])
_SOIL = np.array([0.090, 0.130, 0.170, 0.250])
_ROCK = np.array([0.120, 0.150, 0.185, 0.235])
_DEBRIS = np.array([0.110, 0.145, 0.180, 0.240])
# Additive path radiance at unit haze; scattering is strongest at short wavelengths.
_HAZE = np.array([0.020, 0.014, 0.009, 0.004])
_OUTLINE_VERTICES = 32
# One independent generator per component: changing one component's draws leaves the
# others' as they were.
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
class Landscape:
    """Every layer of a simulated scene, before it is written.

    Attributes:
        grid: The raster grid.
        dem: Elevation (m), ``(H, W)``.
        faults: Fault lines (shapely).
        lithology: Lithology codes ``1..k``, ``(H, W)``.
        storms: Each date's triggering storm.
        slides: The landslide inventory.
        latest: ``(T, H, W)``: 1 + index of the latest slide visible per pixel, 0 = none.
        reflectance: ``(T, 4, H, W)`` top-of-canopy reflectance.
        cloud: ``(T, H, W)`` cloud masks.
    """

    grid: SceneGrid
    dem: np.ndarray
    faults: list[shapely.LineString]
    lithology: np.ndarray
    storms: Storms
    slides: Slides
    latest: np.ndarray
    reflectance: np.ndarray
    cloud: np.ndarray


def simulate_landscape(
    grid: SceneGrid, years: Sequence[int], seed: int, cfg: Mapping[str, Any]
) -> Landscape:
    """Simulate the scene: terrain, geology, susceptibility, storms, landslides, optics.

    Args:
        grid: The raster grid.
        years: Year of each date, strictly increasing.
        seed: Seed of every random choice.
        cfg: The generator's settings (``data.synthetic.DEFAULTS`` with overrides).

    Returns:
        The layers.
    """
    rngs = dict(
        zip(
            _COMPONENTS,
            map(np.random.default_rng, np.random.SeedSequence(seed).spawn(len(_COMPONENTS))),
            strict=True,
        )
    )
    n_dates = len(years)
    dem = _make_dem(rngs["terrain"], grid, cfg)
    slope, aspect = slope_aspect(dem, grid.pixel_size)
    faults = _make_faults(rngs["faults"], grid, cfg)
    fault_distance = _distance_to_lines(faults, grid)
    lithology = _make_lithology(rngs["geology"], grid, faults, cfg)
    weakness = np.asarray(cfg["lithology_weakness"], dtype=float)[lithology - 1]
    hidden = smooth_field(rngs["hidden"], grid.shape, cfg["hidden_length_m"] / grid.pixel_size)
    susceptibility = _susceptibility(slope, weakness, fault_distance, hidden, cfg)

    storms = _make_storms(rngs["rain"], grid, dem, n_dates, cfg)
    slides = _make_landslides(
        rngs["inventory"], grid, susceptibility, storms.exceedance, aspect, years, cfg
    )
    latest = _latest_slide_per_date(slides, grid, n_dates)
    reflectance, cloud = _make_optical(
        rngs["landcover"], rngs["optical"], grid, dem, slope, aspect, weakness, slides,
        latest, years, cfg,
    )
    return Landscape(grid, dem, faults, lithology, storms, slides, latest, reflectance, cloud)


# --------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class SceneGrid:
    """The scene's raster grid: shape, transform, pixel size and (projected) CRS."""

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


def _make_dem(rng: np.random.Generator, grid: SceneGrid, cfg: Mapping[str, Any]) -> np.ndarray:
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
    rng: np.random.Generator, grid: SceneGrid, cfg: Mapping[str, Any]
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


def _distance_to_lines(lines: Sequence[shapely.LineString], grid: SceneGrid) -> np.ndarray:
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
    grid: SceneGrid,
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
class Storms:
    """The triggering storm of every date's interval."""

    duration_h: np.ndarray  # (T,)
    rainfall_mm: np.ndarray  # (T, H, W) event totals
    exceedance: np.ndarray  # (T, H, W) max(0, log(I / I_c))


def _make_storms(
    rng: np.random.Generator, grid: SceneGrid, dem: np.ndarray, n_dates: int, cfg: Mapping[str, Any]
) -> Storms:
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
    return Storms(
        duration_h=duration,
        rainfall_mm=intensity * duration[:, None, None],
        exceedance=np.maximum(log_ratio, 0.0),
    )


# --------------------------------------------------------------------------- inventory


@dataclass(frozen=True)
class Slides:
    """The landslide inventory, in chronological order."""

    polygons: np.ndarray  # (N,) shapely Polygons
    first_date: np.ndarray  # (N,) index of the first date showing the slide
    trigger_time: np.ndarray  # (N,) decimal year of failure
    revegetation: np.ndarray  # (N,) e-folding time of regrowth, years
    severity: np.ndarray  # (N,) share of cover a fresh slide strips


def _make_landslides(
    rng: np.random.Generator,
    grid: SceneGrid,
    susceptibility: np.ndarray,
    exceedance: np.ndarray,
    aspect: np.ndarray,
    years: Sequence[int],
    cfg: Mapping[str, Any],
) -> Slides:
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
        return Slides(np.empty(0, dtype=object), empty.astype(np.int64), empty, empty, empty)
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
    return Slides(polygons[order], first_date[order], trigger[order], tau[order], severity[order])


def _latest_slide_per_date(slides: Slides, grid: SceneGrid, n_dates: int) -> np.ndarray:
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
    grid: SceneGrid,
    dem: np.ndarray,
    slope: np.ndarray,
    aspect: np.ndarray,
    weakness: np.ndarray,
    slides: Slides,
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
