"""Raster reading with rasterio: one target grid, windowed reads aligned onto it, nodata masks."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.vrt import WarpedVRT
from rasterio.warp import calculate_default_transform, transform_bounds
from rasterio.windows import Window

from data.errors import (
    CRSMissingError,
    DataNotFoundError,
    NoOverlapError,
    RasterTooLargeError,
    SceneSpecError,
    UnreadableFileError,
)

__all__ = ["MAX_PIXELS", "Grid", "AlignedRaster", "check_size", "open_raster"]

MAX_PIXELS = 2**34
"""Most pixels a raster header or a target grid may declare (about 131,072 x 131,072).

A damaged or hostile header can claim 10^6 x 10^6 pixels; the cube for such a grid would
need terabytes, so it is refused when the header is read, before anything is allocated.
"""

# A source counts as coarsened (average / mode instead of bilinear / nearest) when the grid's
# pixels are this much larger than the source's; below it, interpolation keeps more detail.
_COARSEN_RATIO = 1.5


@dataclass(frozen=True)
class Grid:
    """A north-up target grid: CRS, affine transform and size in pixels.

    Attributes:
        crs: Coordinate reference system.
        transform: Affine transform of the top-left pixel corner.
        width: Columns.
        height: Rows.
    """

    crs: CRS
    transform: Affine
    width: int
    height: int

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) in pixels."""
        return self.height, self.width

    @property
    def res(self) -> tuple[float, float]:
        """Pixel size (x, y) in CRS units, both positive."""
        return abs(self.transform.a), abs(self.transform.e)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in CRS units."""
        left, top = self.transform.c, self.transform.f
        return left, top + self.transform.e * self.height, left + self.transform.a * self.width, top

    def rows(self, start: int, stop: int) -> Grid:
        """The strip of rows ``[start, stop)`` as a grid of its own."""
        shifted = self.transform @ Affine.translation(0, start)
        return Grid(self.crs, shifted, self.width, stop - start)

    @classmethod
    def like(cls, path: str | Path) -> Grid:
        """The grid of an existing raster.

        Args:
            path: A raster file.

        Returns:
            Its grid.
        """
        with open_raster(path) as src:
            return cls(src.crs, src.transform, src.width, src.height)

    @classmethod
    def from_bounds(
        cls, crs: CRS | str, resolution: float, bounds: tuple[float, float, float, float]
    ) -> Grid:
        """A grid covering ``bounds`` with square pixels of ``resolution`` CRS units.

        Args:
            crs: Anything ``rasterio.crs.CRS.from_user_input`` accepts.
            resolution: Pixel size in CRS units.
            bounds: (left, bottom, right, top); right and bottom are rounded outward.

        Returns:
            The grid.
        """
        left, bottom, right, top = bounds
        if not all(math.isfinite(v) for v in (*bounds, resolution)) or resolution <= 0:
            raise SceneSpecError(
                f"grid bounds {tuple(bounds)} at resolution {resolution} are not finite "
                "positive numbers", key="data.grid",
                hint="check that bounds and resolution are in the units of the grid's CRS",
            )
        width = max(1, math.ceil((right - left) / resolution - 1e-9))
        height = max(1, math.ceil((top - bottom) / resolution - 1e-9))
        check_size(width, height, key="data.grid")
        transform = Affine(resolution, 0.0, left, 0.0, -resolution, top)
        return cls(CRS.from_user_input(crs), transform, width, height)

    def to_json(self) -> dict[str, Any]:
        """A JSON-able description (WKT CRS, GDAL-order transform, size)."""
        return {
            "crs": self.crs.to_wkt(),
            "transform": list(self.transform.to_gdal()),
            "width": self.width,
            "height": self.height,
        }


def check_size(
    width: int, height: int, *, file: str | Path | None = None, key: str | None = None
) -> None:
    """Refuse a raster or grid larger than :data:`MAX_PIXELS`.

    Args:
        width: Columns.
        height: Rows.
        file: The raster, for the message.
        key: The scene key, for the message.

    Raises:
        RasterTooLargeError: ``width * height`` exceeds :data:`MAX_PIXELS`.
    """
    if width * height > MAX_PIXELS:
        raise RasterTooLargeError(
            f"{width} x {height} pixels is more than the {MAX_PIXELS:,} this toolkit "
            "allocates", file=file, key=key,
            hint="crop it to the study area (gdal_translate -projwin) or choose a coarser "
            "[data.grid] resolution; a damaged header can also claim such a size",
        )


@contextmanager
def open_raster(path: str | Path, *, require_crs: bool = True) -> Iterator[Any]:
    """Open a raster for reading, turning rasterio's failures into named errors.

    Args:
        path: The raster file.
        require_crs: Raise ``CRSMissingError`` when the file has no CRS.

    Yields:
        The open ``rasterio`` dataset.

    Raises:
        DataNotFoundError: The file does not exist.
        UnreadableFileError: GDAL cannot read it.
        RasterTooLargeError: Its header declares more than :data:`MAX_PIXELS` pixels.
        CRSMissingError: It has no CRS and ``require_crs`` is set.
    """
    path = Path(path)
    if not path.exists():
        raise DataNotFoundError(
            "raster not found", file=path, hint="check the path; relative paths are resolved "
            "against the file that names them (study file or scene.toml)"
        )
    try:
        src = rasterio.open(path)
    except RasterioError as exc:
        raise UnreadableFileError(
            f"cannot read as a raster ({exc})", file=path,
            hint="is it a GeoTIFF (or another GDAL format) and complete?",
        ) from exc
    with src:
        check_size(src.width, src.height, file=path)
        if require_crs and src.crs is None:
            raise CRSMissingError(
                "raster has no coordinate reference system", file=path,
                hint="assign one, e.g. `gdal_edit.py -a_srs EPSG:32643 FILE`",
            )
        yield src


class AlignedRaster:
    """A raster opened once and read strip by strip on a target grid.

    Reads go through a ``WarpedVRT`` (or straight from the file when it already lies on the
    grid), so no more than one strip of the output is held in memory. Values come back as
    float32 with NaN wherever the input is nodata or does not cover the grid.

    Args:
        path: The raster file.
        grid: The target grid.
        categorical: Resample with nearest / mode (codes are kept) instead of bilinear /
            average.
        nodata: Overrides the file's nodata value.
    """

    def __init__(
        self,
        path: str | Path,
        grid: Grid,
        *,
        categorical: bool = False,
        nodata: float | None = None,
    ) -> None:
        self.path = Path(path)
        self.grid = grid
        self._stack = open_raster(self.path)
        self.src = self._stack.__enter__()
        try:
            self.count = self.src.count
            self.nodata = self.src.nodata if nodata is None else nodata
            self._check_overlap()
            self._vrts = self._open_vrts(categorical)
        except BaseException:
            self.close()
            raise

    def _check_overlap(self) -> None:
        try:
            box = transform_bounds(self.src.crs, self.grid.crs, *self.src.bounds)
        except RasterioError:
            box = (math.nan,) * 4
        if not all(math.isfinite(v) for v in box):
            # e.g. UTM metres under a declared geographic CRS: they cannot be reprojected
            raise NoOverlapError(
                f"its extent {tuple(round(v, 3) for v in self.src.bounds)} does not fit its "
                f"CRS {self.src.crs.to_string()}, so it cannot be placed on the grid "
                f"({self.grid.crs.to_string()})",
                file=self.path,
                hint="the file's CRS is probably wrong; fix it with "
                "`gdal_edit.py -a_srs EPSG:XXXX FILE`",
            )
        left, bottom, right, top = box
        g_left, g_bottom, g_right, g_top = self.grid.bounds
        if left >= g_right or right <= g_left or bottom >= g_top or top <= g_bottom:
            raise NoOverlapError(
                f"extent {tuple(round(v, 3) for v in (left, bottom, right, top))} does not "
                f"overlap the target grid {tuple(round(v, 3) for v in self.grid.bounds)} "
                f"({self.grid.crs.to_string()})",
                file=self.path,
                hint="check the file's CRS and the [data.grid] section; every input must "
                "cover part of the grid",
            )

    def _on_grid(self) -> bool:
        src = self.src
        return (
            src.crs == self.grid.crs
            and src.transform.almost_equals(self.grid.transform)
            and (src.width, src.height) == (self.grid.width, self.grid.height)
        )

    def _coarsened(self) -> bool:
        transform, _, _ = calculate_default_transform(
            self.src.crs, self.grid.crs, self.src.width, self.src.height, *self.src.bounds
        )
        src_res = math.sqrt(abs(transform.a * transform.e))
        grid_res = math.sqrt(self.grid.res[0] * self.grid.res[1])
        return grid_res > _COARSEN_RATIO * src_res

    def _open_vrts(self, categorical: bool) -> list[WarpedVRT]:
        if self._on_grid():
            return []
        coarse = self._coarsened()
        if categorical:
            methods = [Resampling.mode] if coarse else [Resampling.nearest]
        else:
            methods = [Resampling.average] if coarse else [Resampling.bilinear]
        if coarse:
            # GDAL's average / mode kernels fill grid pixels just outside the source footprint
            # from clamped neighbours; a nearest read marks the true footprint.
            methods.append(Resampling.nearest)
        g = self.grid
        return [
            WarpedVRT(
                self.src, crs=g.crs, transform=g.transform, width=g.width, height=g.height,
                resampling=method, dtype="float32", src_nodata=self.nodata, nodata=np.nan,
            )
            for method in methods
        ]

    def read(self, row_start: int, row_stop: int) -> np.ndarray:
        """Read the grid rows ``[row_start, row_stop)``, all columns, all bands.

        Args:
            row_start: First grid row.
            row_stop: One past the last grid row.

        Returns:
            float32 array (bands, rows, width); NaN where there is no valid data.
        """
        try:
            return self._read(Window(0, row_start, self.grid.width, row_stop - row_start))
        except RasterioError as exc:
            # GDAL reads lazily: a truncated file opens fine and fails only here
            raise UnreadableFileError(
                f"cannot read rows {row_start}-{row_stop} ({exc})", file=self.path,
                hint="the file is truncated or damaged; copy or export it again",
            ) from exc

    def _read(self, window: Window) -> np.ndarray:
        if not self._vrts:
            out = self.src.read(window=window, out_dtype=np.float32)
            if self.nodata is not None and not math.isnan(self.nodata):
                # float32 holds every int16/uint16 code and the float32 nodata values exactly
                out[out == np.float32(self.nodata)] = np.nan
            return out
        out = self._vrts[0].read(window=window)
        for footprint in self._vrts[1:]:
            out[np.isnan(footprint.read(window=window))] = np.nan
        return out

    def close(self) -> None:
        """Close the VRTs and the file."""
        for vrt in getattr(self, "_vrts", []):
            vrt.close()
        self._stack.__exit__(None, None, None)

    def __enter__(self) -> AlignedRaster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
