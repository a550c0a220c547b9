"""Conditioning factors on the grid: fault distance, codes, rain, inventories, pixel sizes."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from affine import Affine
from pyproj import Transformer
from rasterio import features

from data.errors import (
    CRSMissingError,
    DataNotFoundError,
    DateParseError,
    EmptyLayerError,
    InvalidGeometryError,
    NoOverlapError,
    SceneSpecError,
    UnknownCodeError,
    UnreadableFileError,
)
from data.raster import Grid

__all__ = [
    "antecedent_precipitation",
    "LineDistance",
    "check_codes",
    "distance_to_lines",
    "inventory_masks",
    "one_hot",
    "parse_date",
    "pixel_size_m",
    "read_vector",
    "subpixel_points",
]

# WGS84 ellipsoid, for metre-per-degree in geographic grids.
_A = 6378137.0
_E2 = 6.69437999014e-3


def pixel_size_m(grid: Grid, row_start: int, row_stop: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel width and height in metres for each row of a strip.

    In a geographic CRS a degree of longitude shrinks with latitude, so the size is computed
    per row from the WGS84 radii of curvature; in a projected CRS it is constant.

    Args:
        grid: The grid.
        row_start: First row.
        row_stop: One past the last row.

    Returns:
        (dx, dy), each float64 of shape (rows,).
    """
    rows = np.arange(row_start, row_stop, dtype=np.float64)
    res_x, res_y = grid.res
    if not grid.crs.is_geographic:
        factor = grid.crs.linear_units_factor[1]
        n = len(rows)
        return np.full(n, res_x * factor), np.full(n, res_y * factor)
    lat = np.radians(grid.transform.f + grid.transform.e * (rows + 0.5))
    w = 1.0 - _E2 * np.sin(lat) ** 2
    meridional = _A * (1.0 - _E2) / w**1.5
    prime_vertical = _A / np.sqrt(w)
    return (
        np.radians(res_x) * prime_vertical * np.cos(lat),
        np.radians(res_y) * meridional,
    )


def read_vector(path: str | Path, grid: Grid, *, columns: Sequence[str] = ()) -> Any:
    """Read a vector layer with pyogrio and reproject it to the grid's CRS.

    Args:
        path: A vector file (GeoPackage, shapefile, ...).
        grid: The target grid.
        columns: Attribute fields to keep (a missing one is a ``SceneSpecError``).

    Returns:
        A ``geopandas.GeoDataFrame`` in the grid's CRS, empty geometries dropped.

    Raises:
        DataNotFoundError: The file does not exist.
        UnreadableFileError: It cannot be read as a vector layer.
        CRSMissingError: It has no CRS.
        SceneSpecError: A requested field is absent.
        EmptyLayerError: No feature has a geometry.
        InvalidGeometryError: A geometry is invalid (e.g. a self-intersecting polygon).
        NoOverlapError: Its coordinates cannot be reprojected (a wrong CRS).
    """
    # geopandas and pyogrio take a second or two to import: only vector inputs need them
    import geopandas as gpd
    import pyogrio

    path = Path(path)
    if not path.exists():
        raise DataNotFoundError("vector file not found", file=path, hint="check the path")
    try:
        fields = set(pyogrio.read_info(path)["fields"])
        missing = [c for c in columns if c not in fields]
        if missing:
            raise SceneSpecError(
                f"field(s) {missing} not in the layer", file=path, key="date_field",
                hint=f"available fields: {sorted(fields)}",
            )
        frame = gpd.read_file(path, columns=list(columns), engine="pyogrio")
    except (
        pyogrio.errors.DataSourceError,
        pyogrio.errors.DataLayerError,
        pyogrio.errors.FeatureError,
        pyogrio.errors.GeometryError,
    ) as exc:
        raise UnreadableFileError(
            f"cannot read as a vector layer ({exc})", file=path,
            hint="use a GeoPackage or a complete shapefile (.shp, .shx, .dbf, .prj)",
        ) from exc
    if frame.crs is None:
        raise CRSMissingError(
            "vector layer has no coordinate reference system", file=path,
            hint="write it with a CRS (for a shapefile, add the .prj)",
        )
    frame = frame[~frame.geometry.is_empty & frame.geometry.notna()]
    if frame.empty:
        raise EmptyLayerError(
            "vector layer has no feature with a geometry", file=path,
            hint="check that it is the right file (and its first layer the right one)",
        )
    _check_valid(frame.geometry.values, path)
    # Z coordinates (PolygonZ inventories) mean nothing on a 2-D grid
    frame = frame.set_geometry(shapely.force_2d(frame.geometry.values))
    source_crs = frame.crs
    frame = frame.to_crs(grid.crs)
    if not np.isfinite(frame.total_bounds).all():
        # pyproj returns inf for coordinates outside the declared CRS's domain
        raise NoOverlapError(
            f"its coordinates do not fit its CRS {source_crs.to_string()}, so they cannot "
            f"be placed on the grid ({grid.crs.to_string()})", file=path,
            hint="the layer's CRS is probably wrong: assign the right one (ogr2ogr -a_srs)",
        )
    return frame


def _check_valid(geometries: Any, path: Path) -> None:
    """Raise on the first invalid geometry, naming the feature and GEOS's reason."""
    geometries = np.asarray(geometries, dtype=object)
    invalid = np.flatnonzero(~shapely.is_valid(geometries))
    if invalid.size:
        first = int(invalid[0])
        raise InvalidGeometryError(
            f"{invalid.size} invalid geometr{'y' if invalid.size == 1 else 'ies'}, the first "
            f"at feature {first}: {shapely.is_valid_reason(geometries[first])}", file=path,
            hint="repair them, e.g. QGIS 'Fix geometries' or `ogr2ogr -makevalid OUT IN`",
        )


class LineDistance:
    """Distance in metres from pixel centres to the nearest of a set of lines, strip by strip.

    The lines are densified to vertices at most half a pixel apart and put in a k-d tree,
    so a strip costs one nearest-neighbour query per pixel and the grid is never rasterized
    as a whole. The result is within 1/4 pixel of the exact distance. A geographic grid is
    measured in its local UTM zone.

    Args:
        lines: Shapely geometries in the grid's CRS.
        grid: The grid.
    """

    def __init__(self, lines: Sequence[Any], grid: Grid) -> None:
        # scipy.spatial is slow to import; only distance-to-line factors need it
        from scipy.spatial import cKDTree

        self.grid = grid
        geoms = np.asarray(lines, dtype=object)
        self._to_metric: Transformer | None = None
        if grid.crs.is_geographic and len(geoms):
            import geopandas as gpd  # slow to import; only lines on a geographic grid

            series = gpd.GeoSeries(geoms, crs=grid.crs)
            utm = series.estimate_utm_crs()
            self._to_metric = Transformer.from_crs(grid.crs, utm, always_xy=True)
            geoms = series.to_crs(utm).values
            self._scale = 1.0
            dx, dy = pixel_size_m(grid, 0, grid.height)
            spacing = float(min(dx.min(), dy.min())) / 2
        else:
            self._scale = grid.crs.linear_units_factor[1]
            spacing = min(grid.res) / 2
        vertices = shapely.get_coordinates(shapely.segmentize(geoms, spacing)) if len(geoms) else []
        # an unbalanced tree queries collinear vertex chains about twice as fast
        self._tree = (cKDTree(vertices, balanced_tree=False, compact_nodes=False)
                      if len(vertices) else None)

    def __call__(self, row_start: int, row_stop: int) -> np.ndarray:
        """Distances for rows ``[row_start, row_stop)``.

        Args:
            row_start: First row.
            row_stop: One past the last row.

        Returns:
            float32 (rows, width); NaN everywhere when there are no lines.
        """
        rows, cols = row_stop - row_start, self.grid.width
        if self._tree is None:
            return np.full((rows, cols), np.nan, np.float32)
        cc, rr = np.meshgrid(np.arange(cols) + 0.5, np.arange(row_start, row_stop) + 0.5)
        xs, ys = self.grid.transform @ (cc.ravel(), rr.ravel())
        if self._to_metric is not None:
            xs, ys = self._to_metric.transform(xs, ys)
        dist, _ = self._tree.query(np.column_stack([xs, ys]))
        return (dist * self._scale).reshape(rows, cols).astype(np.float32)


def distance_to_lines(
    lines: Sequence[Any], grid: Grid, row_start: int, row_stop: int
) -> np.ndarray:
    """Distance in metres from each pixel centre of a strip to the nearest line.

    Args:
        lines: Shapely geometries in the grid's CRS.
        grid: The grid.
        row_start: First row.
        row_stop: One past the last row.

    Returns:
        float32 (rows, width), within 1/4 pixel of exact (see ``LineDistance``).
    """
    return LineDistance(lines, grid)(row_start, row_stop)


def check_codes(values: np.ndarray, codes: Sequence[int], *, file: str | Path, name: str) -> None:
    """Raise when a categorical block holds a code outside the declared set.

    Args:
        values: Block of codes, NaN for nodata.
        codes: Declared codes.
        file: The raster, for the message.
        name: The source name, for the message.

    Raises:
        UnknownCodeError: Some valid value is not a declared code.
    """
    found = np.unique(values[np.isfinite(values)])
    unknown = np.setdiff1d(found, np.asarray(codes, dtype=np.float32))
    if unknown.size:
        shown = [int(v) if float(v).is_integer() else float(v) for v in unknown[:10]]
        raise UnknownCodeError(
            f"code(s) {shown} not in the declared codes {list(codes)}", file=file, key=name,
            hint="add them to `codes` of this source, or set them to the file's nodata value",
        )


def one_hot(values: np.ndarray, codes: Sequence[int]) -> np.ndarray:
    """One 0/1 layer per declared code.

    Args:
        values: Block of codes (..., rows, cols), NaN for nodata.
        codes: Declared codes, in output order.

    Returns:
        float32 (len(codes), ...); NaN where the input is nodata.
    """
    out = np.stack([(values == c).astype(np.float32) for c in codes])
    out[:, np.isnan(values)] = np.nan
    return out


def antecedent_precipitation(rain: np.ndarray, decay: float) -> np.ndarray:
    """Antecedent precipitation index over the dates: ``API_t = P_t + decay * API_{t-1}``.

    Args:
        rain: Precipitation per date, (T, ...), dates in order.
        decay: Per-step decay in (0, 1).

    Returns:
        float32 array of the same shape.
    """
    api = np.empty_like(rain, dtype=np.float32)
    api[0] = rain[0]
    for t in range(1, rain.shape[0]):
        api[t] = rain[t] + decay * api[t - 1]
    return api


_DATE = re.compile(r"^\s*(\d{4})(?:[-/.](\d{1,2}))?(?:[-/.](\d{1,2}))?(?:[T ].*)?\s*$")


def parse_date(
    value: Any, *, end: bool, file: str | Path | None = None, key: str | None = None
) -> dt.date:
    """Parse a date name or a date field value.

    Accepted: ``2008``, ``"2008-06"``, ``"2008-06-15"``, a ``date`` or a pandas ``Timestamp``.

    A partial date names a period; ``end`` picks its last day (a scene date: everything seen
    by then) or its first (an observation: counts from the start of its period).

    Args:
        value: The value.
        end: Return the period's last day instead of its first.
        file: File named in the error.
        key: Key or field named in the error.

    Returns:
        The date.

    Raises:
        DateParseError: The value is not a date.
    """
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if hasattr(value, "to_pydatetime"):
        return value.to_pydatetime().date()
    text = str(int(value)) if isinstance(value, int | np.integer) else str(value)
    if isinstance(value, float | np.floating):
        # 2008.0 from a numeric year field is a year; 2008.5 is not May 2008
        text = str(int(value)) if float(value).is_integer() else "not a date"
    match = _DATE.match(text)
    try:
        if not match:
            raise ValueError(text)
        year, month, day = (int(g) if g else None for g in match.groups())
        if month is None:
            return dt.date(year, 12, 31) if end else dt.date(year, 1, 1)
        if day is None:
            if not end:
                return dt.date(year, month, 1)
            nxt = dt.date(year + month // 12, month % 12 + 1, 1)
            return nxt - dt.timedelta(days=1)
        return dt.date(year, month, day)
    except ValueError as exc:
        raise DateParseError(
            f"{value!r} is not a date", file=file, key=key,
            hint="use YYYY, YYYY-MM or YYYY-MM-DD",
        ) from exc


def subpixel_points(geometries: Sequence[Any], grid: Grid) -> np.ndarray:
    """The pixel of each polygon that covers no pixel centre, where it must be burnt.

    Rasterizing by pixel centre drops a landslide smaller than a pixel (or a sliver between
    centres): it would become background, and a model that finds it would be scored a false
    positive. Such a polygon is burnt at the pixel holding its representative point instead,
    one pixel per landslide, so no mapped landslide is lost and none is enlarged.

    Args:
        geometries: Polygons in the grid's CRS.
        grid: The grid.

    Returns:
        int64 (N, 2) of (row, col); (-1, -1) for a polygon that covers a pixel centre or
        whose point lies off the grid.
    """
    out = np.full((len(geometries), 2), -1, np.int64)
    inverse = ~grid.transform
    for i, geom in enumerate(geometries):
        if geom is None or geom.is_empty:
            continue
        x0, y0, x1, y1 = geom.bounds
        cols, rows = zip(*(inverse @ xy for xy in ((x0, y0), (x1, y1))), strict=True)
        c0, c1 = max(0, int(np.floor(min(cols)))), min(grid.width, int(np.ceil(max(cols))))
        r0, r1 = max(0, int(np.floor(min(rows)))), min(grid.height, int(np.ceil(max(rows))))
        if c1 > c0 and r1 > r0 and features.rasterize(
                [(geom, 1)], out_shape=(r1 - r0, c1 - c0), dtype=np.uint8,
                transform=grid.transform @ Affine.translation(c0, r0)).any():
            continue
        point = shapely.point_on_surface(geom)
        col, row = (int(np.floor(v)) for v in inverse @ (point.x, point.y))
        if 0 <= row < grid.height and 0 <= col < grid.width:
            out[i] = row, col
    return out


def inventory_masks(
    geometries: Sequence[Any],
    observed: Sequence[dt.date] | None,
    dates: Sequence[dt.date],
    grid: Grid,
    row_start: int,
    row_stop: int,
    points: np.ndarray | None = None,
) -> np.ndarray:
    """Rasterize landslide polygons into one cumulative mask per date for a strip.

    A polygon counts from the date it was observed on, so each mask holds every landslide
    visible by that date.

    Args:
        geometries: Polygons in the grid's CRS.
        observed: Observation date per polygon; None counts every polygon at every date.
        dates: Scene dates (the last day of each named period), ascending.
        grid: The grid.
        row_start: First row.
        row_stop: One past the last row.
        points: From :func:`subpixel_points`: where polygons that cover no pixel centre
            are burnt (None: they are dropped).

    Returns:
        uint8 (T, rows, width) of {0, 1}.
    """
    strip = grid.rows(row_start, row_stop)
    out = np.zeros((len(dates), strip.height, strip.width), np.uint8)
    if len(geometries) == 0:
        return out
    geoms = np.asarray(geometries, dtype=object)
    hits = shapely.STRtree(geoms).query(shapely.box(*strip.bounds))
    for t, date in enumerate(dates):
        keep = [i for i in hits if observed is None or observed[i] <= date]
        if keep:
            features.rasterize(
                ((geoms[i], 1) for i in keep), out=out[t], transform=strip.transform,
                dtype=np.uint8,
            )
            if points is not None:
                row, col = points[keep].T
                inside = (row >= row_start) & (row < row_stop)
                out[t, row[inside] - row_start, col[inside]] = 1
    return out
