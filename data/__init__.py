"""Rasters in, tensors out: aligned (source, time, H, W) cubes, splits and torch datasets.

Typical use::

    import data
    cube = data.prepare(section, base_dir)            # built once, cached, memory-mapped
    splits = cube.splits(patch_size=64, method="blocked")
    norm = cube.norm_stats(splits.train)
    train = cube.dataset(splits.train, norm=norm)     # (x, y, valid) samples
    for fold in cube.fold_splits(5):                  # k-fold validation, one shared test
        ...                                           # (groups / blocks dealt whole)
"""

import importlib

from data.build import DEFAULT_BLOCK_SIZE
from data.cache import (
    DEFAULT_CACHE_DIR,
    build_cube,
    cube_key,
    open_source,
    prepare,
    validation_summary,
)
from data.cube import Cube, CubeValues
from data.errors import (
    AllNodataError,
    BandCountMismatchError,
    CRSMissingError,
    DataError,
    DataNotFoundError,
    DateParseError,
    EmptyLabelError,
    EmptyLayerError,
    InvalidGeometryError,
    MissingMaskError,
    NoFilesMatchedError,
    NoOverlapError,
    RasterTooLargeError,
    SceneSpecError,
    SizeMismatchError,
    SplitFileError,
    TestSplitWithheldError,
    UnknownCodeError,
    UnreadableFileError,
)
from data.factors import (
    antecedent_precipitation,
    distance_to_lines,
    inventory_masks,
    one_hot,
    parse_date,
    pixel_size_m,
    subpixel_points,
)
from data.raster import AlignedRaster, Grid, open_raster
from data.scene import SceneSpec, load_scene, parse_scene
from data.splits import Splits
from data.terrain import curvature, roughness, slope_aspect, tpi
from data.tiles import Tile

# Imported on first use: the dataset pulls in torch, the generator geopandas and scipy, and
# building or loading a cube needs neither.
_LAZY = {"CubeDataset": "data.dataset", "generate_scene": "data.synthetic",
         "SyntheticScene": "data.synthetic"}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'data' has no attribute {name!r}")


__all__ = [
    "DEFAULT_BLOCK_SIZE",
    "DEFAULT_CACHE_DIR",
    "AlignedRaster",
    "AllNodataError",
    "BandCountMismatchError",
    "CRSMissingError",
    "Cube",
    "CubeDataset",
    "CubeValues",
    "DataError",
    "DataNotFoundError",
    "DateParseError",
    "EmptyLabelError",
    "EmptyLayerError",
    "InvalidGeometryError",
    "Grid",
    "MissingMaskError",
    "NoFilesMatchedError",
    "NoOverlapError",
    "RasterTooLargeError",
    "SceneSpec",
    "SceneSpecError",
    "SizeMismatchError",
    "SplitFileError",
    "Splits",
    "SyntheticScene",
    "TestSplitWithheldError",
    "Tile",
    "UnknownCodeError",
    "UnreadableFileError",
    "antecedent_precipitation",
    "build_cube",
    "cube_key",
    "curvature",
    "distance_to_lines",
    "generate_scene",
    "inventory_masks",
    "subpixel_points",
    "load_scene",
    "one_hot",
    "open_raster",
    "open_source",
    "parse_date",
    "parse_scene",
    "pixel_size_m",
    "prepare",
    "roughness",
    "slope_aspect",
    "tpi",
    "validation_summary",
]
