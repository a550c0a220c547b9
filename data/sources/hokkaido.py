"""Adapter for pre/post-event optical imagery with a DEM on another grid (the Hokkaido folder).

Sentinel-2 B2-B4 at 10 m, DSM and slope at 30 m, all EPSG:4326, no labels.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from data.errors import SceneSpecError
from data.raster import Grid
from data.scene import GridSpec, parse_scene
from data.sources.base import Recipe, adapter_root, check_adapter_keys
from data.sources.geotiff import scene_recipe

__all__ = ["BANDS", "DATES", "recipe"]

DATES = {"pre": "pre-event", "post": "post-event"}
BANDS = ("B2", "B3", "B4")
_DSM = "dem/download.DSM.tif"
_SLOPE = "slope/download.slope.tif"
_GRIDS = {"optical": f"{DATES['pre']}/download.{BANDS[0]}.tif", "dem": _DSM}


def recipe(section: Mapping[str, Any], base_dir: Path, grid: Grid | GridSpec | None,
           origin: str | None = None) -> Recipe:
    """A recipe for ``format = "hokkaido"``: ``path`` = the folder.

    Dates ``pre`` and ``post``; optical B2, B3, B4 per date; DSM and the folder's slope as
    static factors. ``grid = "optical"`` (default, the 10 m Sentinel-2 grid) or ``"dem"``
    (the 30 m DSM grid), or a ``[data.grid]`` table.

    Args:
        section: The ``[data]`` section.
        base_dir: Directory ``path`` is relative to.
        grid: Overrides the grid choice.
        origin: File named in errors.

    Returns:
        The recipe (an unlabelled cube, for prediction).
    """
    check_adapter_keys(section, {"path", "grid"}, "hokkaido")
    root = adapter_root(section, base_dir, "hokkaido")
    choice = section.get("grid", "optical")
    if isinstance(choice, str):
        if choice not in _GRIDS:
            raise SceneSpecError(f"grid {choice!r} is unknown", key="data.grid",
                                 hint=f"use one of {sorted(_GRIDS)} or a [data.grid] table")
        choice = {"like": _GRIDS[choice]}
    scene = {
        "format": "hokkaido",
        "dates": list(DATES),
        "sources": [
            {"name": band, "kind": "optical", "type": "continuous",
             "paths": {d: f"{folder}/download.{band}.tif" for d, folder in DATES.items()}}
            for band in BANDS
        ] + [
            {"name": "dsm", "kind": "factor", "type": "continuous", "path": _DSM},
            {"name": "slope", "kind": "factor", "type": "continuous", "path": _SLOPE},
        ],
        "grid": choice,
    }
    return scene_recipe(parse_scene(scene, root, origin=origin or str(root)), grid)
