"""Building a gridded cube from a scene description, one strip of rows at a time."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import shapely
from rasterio.warp import transform_bounds

from data.errors import AllNodataError, BandCountMismatchError, NoOverlapError
from data.factors import (
    LineDistance,
    antecedent_precipitation,
    check_codes,
    inventory_masks,
    one_hot,
    parse_date,
    pixel_size_m,
    read_vector,
    subpixel_points,
)
from data.raster import AlignedRaster, Grid, open_raster
from data.scene import GridSpec, SceneSpec, SourceSpec
from data.store import CubeWriter
from data.terrain import derive_terrain, halo_rows, terrain_outputs

__all__ = ["DEFAULT_BLOCK_SIZE", "CUBE_VERSION", "build_scene", "resolve_grid"]

DEFAULT_BLOCK_SIZE = 512
# Bump when the stored layout or any computed value changes, so old caches are not reused.
CUBE_VERSION = 2  # 2: inventory polygons below a pixel are kept (factors.subpixel_points)
# GDAL's block cache; its default (5 % of RAM) would dominate the footprint of a windowed build.
_GDAL_CACHE_BYTES = 256 * 2**20


def resolve_grid(spec: SceneSpec, grid: Grid | GridSpec | None = None) -> Grid:
    """The target grid: explicit, from ``[data.grid]``, or the first optical raster's.

    Args:
        spec: The scene.
        grid: Overrides the scene's grid.

    Returns:
        The grid.
    """
    if isinstance(grid, Grid):
        return grid
    choice = grid or spec.grid
    rasters = [s for s in spec.sources if s.vector is None]
    first = next((s for s in rasters if s.kind == "optical"), rasters[0] if rasters else None)
    if choice is not None and choice.like is not None:
        return Grid.like(choice.like)
    if first is None:
        raise NoOverlapError("no raster source to take the grid from", file=spec.origin,
                             key="data.grid", hint="add [data.grid] with crs, resolution, bounds")
    first_path = first.path or next(iter(first.paths.values()))
    if choice is None:
        return Grid.like(first_path)
    bounds = choice.bounds
    if bounds is None:
        with open_raster(first_path) as src:
            bounds = transform_bounds(src.crs, choice.crs, *src.bounds)
    return Grid.from_bounds(choice.crs, choice.resolution, bounds)


@dataclass
class _Output:
    name: str
    kind: str
    type: str
    store: str
    index: int
    origin: str


class _Job:
    """Reads one source strip by strip and writes its outputs (bands, encodings, derivatives)."""

    def __init__(self, src: SourceSpec, grid: Grid, stack: ExitStack, dates: tuple[str, ...],
                 counter: Callable[[str], int]) -> None:
        self.src = src
        self.grid = grid
        self.dates = dates
        self.valid_pixels: dict[str, int] = {}
        categorical = src.type == "categorical"
        self.readers: list[AlignedRaster] = []
        if src.vector is not None:
            self.distance = LineDistance(read_vector(src.vector, grid).geometry.values, grid)
            self.valid_pixels[str(src.vector)] = 1  # distances exist wherever lines exist
        else:
            paths = [src.path] if src.paths is None else [src.paths[d] for d in dates]
            self.readers = [stack.enter_context(AlignedRaster(p, grid, categorical=categorical,
                                                              nodata=src.nodata))
                            for p in paths]
            counts = {r.path.name: r.count for r in self.readers}
            if len(set(counts.values())) > 1:
                raise BandCountMismatchError(
                    f"the dates of source {src.name!r} have different band counts {counts}",
                    file=self.readers[0].path, key=src.name,
                    hint="every date of a source needs the same bands in the same order",
                )
            self.valid_pixels = {str(r.path): 0 for r in self.readers}
        self.outputs = self._plan(counter)

    def _plan(self, counter: Callable[[str], int]) -> list[_Output]:
        src = self.src
        store = "dynamic" if src.dynamic else "static"
        origin = str(src.vector or src.path or next(iter(src.paths.values())))
        bands = self.readers[0].count if self.readers else 1
        if src.type == "categorical" and src.encoding == "onehot":
            base = [(f"{src.name}_{c}" if bands == 1 else f"{src.name}_b{b + 1}_{c}")
                    for b in range(bands) for c in src.codes]
        else:
            base = [src.name] if bands == 1 else [f"{src.name}_b{b + 1}" for b in range(bands)]
        derived = ["api"] if "api" in src.derive else terrain_outputs(src.derive, src.tpi_radii)
        names = base + [f"{src.name}_{d}" for d in derived]
        return [_Output(n, src.kind, src.type, store, counter(store), origin) for n in names]

    def _encode(self, block: np.ndarray, reader: AlignedRaster) -> np.ndarray:
        """(bands, rows, W) raw -> (outputs before derivatives, rows, W)."""
        self.valid_pixels[str(reader.path)] += int(np.isfinite(block[0]).sum())
        if self.src.type != "categorical":
            return block
        check_codes(block, self.src.codes, file=reader.path, name=self.src.name)
        if self.src.encoding == "codes":
            return block
        return np.concatenate([one_hot(band, self.src.codes) for band in block])

    def run(self, r0: int, r1: int, writer: CubeWriter) -> None:
        """Compute and write rows ``[r0, r1)``."""
        src, outs = self.src, self.outputs
        if src.vector is not None:
            writer.write_static(outs[0].index, r0, self.distance(r0, r1))
            return
        if src.dynamic:
            per_date = [self._encode(r.read(r0, r1), r) for r in self.readers]
            n_base = per_date[0].shape[0]
            for t, enc in enumerate(per_date):
                for b in range(n_base):
                    writer.write_dynamic(outs[b].index, t, r0, enc[b])
            if "api" in src.derive:
                api = antecedent_precipitation(np.stack([enc[0] for enc in per_date]),
                                               src.api_decay)
                for t in range(len(per_date)):
                    writer.write_dynamic(outs[n_base].index, t, r0, api[t])
            return
        # DEM derivatives read rows of context on each side of the strip
        halo = halo_rows(src.derive, src.tpi_radii)
        h0, h1 = max(0, r0 - halo), min(self.grid.height, r1 + halo)
        reader = self.readers[0]
        enc = self._encode(reader.read(h0, h1), reader)
        inner = slice(r0 - h0, r0 - h0 + (r1 - r0))
        for b in range(enc.shape[0]):
            writer.write_static(outs[b].index, r0, enc[b, inner])
        if halo:
            dx, dy = pixel_size_m(self.grid, h0, h1)
            derived = derive_terrain(enc[0], dx, dy, src.derive, src.tpi_radii)
            for k, band in enumerate(derived):
                writer.write_static(outs[enc.shape[0] + k].index, r0, band[inner])


class _Labels:
    """Label masks per date from rasters or a vector inventory."""

    def __init__(self, spec: SceneSpec, grid: Grid, stack: ExitStack) -> None:
        labels = spec.labels
        self.grid = grid
        self.readers: list[AlignedRaster] = []
        self.geoms: list[Any] = []
        self.observed: list[Any] | None = None
        self.points: np.ndarray | None = None
        if labels is None:
            self.dates: list[str] = []
            self.origin = None
        elif labels.paths is not None:
            self.dates = list(labels.paths)
            self.readers = [stack.enter_context(AlignedRaster(labels.paths[d], grid,
                                                              categorical=True))
                            for d in self.dates]
            self.origin = str(labels.paths[self.dates[-1]])
        else:
            self.dates = list(spec.dates)
            self.origin = str(labels.vector)
            field = labels.date_field
            frame = read_vector(labels.vector, grid, columns=[field] if field else [])
            if len(frame) and not frame.intersects(shapely.box(*grid.bounds)).any():
                raise NoOverlapError("no landslide polygon lies on the grid",
                                     file=labels.vector, key="labels",
                                     hint="check the inventory's CRS and the grid extent")
            self.geoms = list(frame.geometry.values)
            self.points = subpixel_points(self.geoms, grid)
            if field:
                self.observed = [parse_date(v, end=False, file=labels.vector, key=field)
                                 for v in frame[field]]
            self.scene_dates = [parse_date(d, end=True, file=spec.origin, key="data.dates")
                                for d in spec.dates]

    def run(self, r0: int, r1: int, writer: CubeWriter) -> None:
        """Compute and write rows ``[r0, r1)`` of every label date."""
        if self.readers:
            for t, reader in enumerate(self.readers):
                block = reader.read(r0, r1)[0]
                valid = np.isfinite(block)
                writer.write_labels(t, r0, valid & (np.nan_to_num(block) > 0), valid)
        elif self.dates:
            masks = inventory_masks(self.geoms, self.observed, self.scene_dates, self.grid, r0, r1,
                                    self.points)
            for t in range(len(self.dates)):
                writer.write_labels(t, r0, masks[t])


def build_scene(spec: SceneSpec, grid: Grid | GridSpec | None, out_dir: Path | None,
                block_size: int, key: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Align every source of a scene onto one grid, ``block_size`` rows at a time.

    Args:
        spec: The scene.
        grid: Target grid (None: the scene's choice).
        out_dir: Directory for the arrays (None: in memory).
        block_size: Rows per strip; memory use grows with ``block_size * width``.
        key: The cube's hash, stored in its meta.

    Returns:
        (arrays, meta) for ``Cube``.

    Raises:
        AllNodataError: A source has no valid pixel on the grid.
    """
    target = resolve_grid(spec, grid)
    counters = {"dynamic": 0, "static": 0}

    def counter(store: str) -> int:
        counters[store] += 1
        return counters[store] - 1

    with rasterio.Env(GDAL_CACHEMAX=_GDAL_CACHE_BYTES), ExitStack() as stack:
        jobs = [_Job(s, target, stack, spec.dates, counter) for s in spec.sources]
        labels = _Labels(spec, target, stack)
        writer = CubeWriter(out_dir, n_dynamic=counters["dynamic"], n_static=counters["static"],
                            n_dates=len(spec.dates), n_label_dates=len(labels.dates),
                            height=target.height, width=target.width)
        for r0 in range(0, target.height, max(1, int(block_size))):
            r1 = min(target.height, r0 + max(1, int(block_size)))
            for job in jobs:
                job.run(r0, r1, writer)
            labels.run(r0, r1, writer)
        for job in jobs:
            for path, n in job.valid_pixels.items():
                if n == 0:
                    raise AllNodataError(
                        f"source {job.src.name!r} has no valid pixel on the grid", file=path,
                        key=job.src.name, hint="check its nodata value and that it covers the "
                        "grid (a different CRS or extent?)",
                    )
        outputs = [o for job in jobs for o in job.outputs]
        meta = {
            "version": CUBE_VERSION, "hash": key, "format": spec.format,
            "sources": [vars(o) for o in outputs], "dates": list(spec.dates),
            "label_dates": labels.dates, "label_origin": labels.origin,
            # inventory polygons that cover no pixel centre, burnt at one pixel each
            "labels_below_pixel": 0 if labels.points is None
            else int((labels.points[:, 0] >= 0).sum()),
            "grid": target.to_json(), "patch_shape": None,
        }
        return writer.finish(meta), meta
