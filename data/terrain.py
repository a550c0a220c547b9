"""DEM derivatives: the terrain factors of susceptibility work, computed strip by strip.

Every derivative here is local: it reads at most :func:`halo_rows` rows above and below a
pixel, so a cube is built one strip of rows at a time, and a strip read with that many rows
of context gives exactly the values of the whole raster. Pixel sizes are metres per row
(:func:`data.factors.pixel_size_m`), so geographic grids get true slopes and curvatures.
NaN elevations stay NaN; window statistics (TPI, roughness) average the valid pixels of
their window, so a nodata hole or the raster's edge does not bias its neighbours.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "DEM_DERIVATIVES",
    "DEFAULT_TPI_RADII",
    "curvature",
    "derive_terrain",
    "halo_rows",
    "roughness",
    "slope_aspect",
    "terrain_outputs",
    "tpi",
]

# derive names a static continuous raster accepts; "tpi" adds one output per radius
DEM_DERIVATIVES = ("slope", "aspect", "curvature", "roughness", "tpi")
DEFAULT_TPI_RADII = (8, 32)


def terrain_outputs(derive: Sequence[str], tpi_radii: Sequence[int]) -> list[str]:
    """The output suffixes of a DEM's derivatives, in the order they are stored.

    Args:
        derive: Derive names (:data:`DEM_DERIVATIVES`, others are skipped).
        tpi_radii: Radii of the ``tpi`` outputs, in pixels.

    Returns:
        Suffixes such as ``["slope", "tpi8", "tpi32"]``.
    """
    return [suffix for name in derive if name in DEM_DERIVATIVES
            for suffix in ([f"tpi{r}" for r in tpi_radii] if name == "tpi" else [name])]


def halo_rows(derive: Sequence[str], tpi_radii: Sequence[int]) -> int:
    """Rows of context each side of a strip that its derivatives need (0 for none)."""
    wanted = set(derive) & set(DEM_DERIVATIVES)
    if not wanted:
        return 0
    return max([1] + (list(tpi_radii) if "tpi" in wanted else []))


def derive_terrain(dem: np.ndarray, dx: np.ndarray, dy: np.ndarray, derive: Sequence[str],
                   tpi_radii: Sequence[int]) -> list[np.ndarray]:
    """The derivatives of one block, in the order of :func:`terrain_outputs`.

    Args:
        dem: Elevations in metres, (rows, cols).
        dx: Pixel width in metres per row.
        dy: Pixel height in metres per row.
        derive: Derive names.
        tpi_radii: Radii of the ``tpi`` outputs, in pixels.

    Returns:
        float32 arrays of the block's shape.
    """
    slope_and_aspect = (slope_aspect(dem, dx, dy) if {"slope", "aspect"} & set(derive)
                        else None)
    makers = {
        "slope": lambda: [slope_and_aspect[0]],
        "aspect": lambda: [slope_and_aspect[1]],
        "curvature": lambda: [curvature(dem, dx, dy)],
        "roughness": lambda: [roughness(dem)],
        "tpi": lambda: [tpi(dem, r) for r in tpi_radii],
    }
    return [array for name in derive if name in makers for array in makers[name]()]


def slope_aspect(
    dem: np.ndarray, dx: np.ndarray, dy: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Slope and aspect of a north-up DEM by central differences.

    Args:
        dem: Elevations in metres, (rows, cols); NaN propagates to its neighbours.
        dx: Pixel width in metres per row, (rows,).
        dy: Pixel height in metres per row, (rows,).

    Returns:
        (slope, aspect) in degrees, float32. Aspect is the compass bearing the slope faces
        (0 = north, 90 = east); flat pixels get 0.
    """
    dem = np.asarray(dem, dtype=np.float64)
    if dem.shape[0] < 2 or dem.shape[1] < 2:
        zeros = np.zeros(dem.shape, np.float32)
        return zeros, zeros.copy()
    d_row, d_col = np.gradient(dem)
    dz_east = d_col / dx[:, None]
    dz_north = -d_row / dy[:, None]  # rows run south
    slope = np.degrees(np.arctan(np.hypot(dz_east, dz_north)))
    aspect = np.degrees(np.arctan2(-dz_east, -dz_north)) % 360.0
    aspect[(dz_east == 0) & (dz_north == 0)] = 0.0
    return slope.astype(np.float32), aspect.astype(np.float32)


def curvature(dem: np.ndarray, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """Total curvature: minus the Laplacian of the surface, in 1/m.

    Positive on convex ground (ridges, spurs), negative in hollows and gullies, where water
    and colluvium gather; the sign follows the common GIS convention. A raster edge repeats
    its outermost row or column, so the second difference across it is one-sided.

    Args:
        dem: Elevations in metres, (rows, cols).
        dx: Pixel width in metres per row, (rows,).
        dy: Pixel height in metres per row, (rows,).

    Returns:
        float32 of the DEM's shape.
    """
    z = np.pad(np.asarray(dem, dtype=np.float64), 1, mode="edge")
    d2_col = (z[1:-1, 2:] - 2 * z[1:-1, 1:-1] + z[1:-1, :-2]) / dx[:, None] ** 2
    d2_row = (z[2:, 1:-1] - 2 * z[1:-1, 1:-1] + z[:-2, 1:-1]) / dy[:, None] ** 2
    return (-(d2_col + d2_row)).astype(np.float32)


def _window_mean(values: np.ndarray, radius: int) -> np.ndarray:
    """Mean of the finite values in the (2 r + 1)^2 window of every pixel (NaN if none)."""
    # scipy.ndimage takes most of a second to import; only derived terrain layers need it
    from scipy.ndimage import uniform_filter

    finite = np.isfinite(values)
    size = 2 * radius + 1
    # Zero-padded box sums of the values and of the count: the ratio is the mean of what the
    # window holds, so the raster edge and nodata holes are left out, not padded in.
    total = uniform_filter(np.where(finite, values, 0.0), size, mode="constant")
    count = uniform_filter(finite.astype(np.float64), size, mode="constant")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0.5 / size**2, total / count, np.nan)


def tpi(dem: np.ndarray, radius: int) -> np.ndarray:
    """Topographic position index: elevation minus the mean elevation of a square window.

    Positive on ridges and upper slopes, negative in valleys, at the scale of the window:
    a radius of a few pixels finds gullies, tens of pixels valley sides and crests.

    Args:
        dem: Elevations in metres, (rows, cols).
        radius: Half the window side, in pixels (the window is ``2 r + 1`` square).

    Returns:
        float32 metres; NaN where the DEM is.
    """
    z = np.asarray(dem, dtype=np.float64)
    return (z - _window_mean(z, radius)).astype(np.float32)


def roughness(dem: np.ndarray) -> np.ndarray:
    """Standard deviation of the elevations in the 3 x 3 window of every pixel, in metres.

    Args:
        dem: Elevations in metres, (rows, cols).

    Returns:
        float32; NaN where the DEM is.
    """
    z = np.asarray(dem, dtype=np.float64)
    spread = _window_mean(z**2, 1) - _window_mean(z, 1) ** 2
    out = np.sqrt(np.maximum(spread, 0.0))
    return np.where(np.isfinite(z), out, np.nan).astype(np.float32)
