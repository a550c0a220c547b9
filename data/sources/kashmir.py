"""Adapter for a vector landslide inventory with factor rasters and faults (the Kashmir folder).

Factors only (DEM, geology, land cover, faults), one label mask per observation year.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from data.errors import DataNotFoundError
from data.raster import Grid
from data.scene import GridSpec, parse_scene
from data.sources.base import Recipe, adapter_root, check_adapter_keys
from data.sources.geotiff import scene_recipe

__all__ = ["DEM", "FAULTS", "GEOLOGY", "GEOLOGY_CODES", "INVENTORY", "LANDCOVER",
           "LANDCOVER_CODES", "YEAR_FIELD", "recipe"]

DEM = "AW3D30.tif"
GEOLOGY = "Geology.tif"
LANDCOVER = "Landcover.tif"
FAULTS = "Confirmed_faults.shp"
INVENTORY = "landslides.shp"
YEAR_FIELD = "Year_obs"
# The codes the folder's rasters hold (checked against the files; others are an error).
GEOLOGY_CODES = [2, 3, 6, 7, 8, 10, 18, 19, 20]
LANDCOVER_CODES = [1, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]


def observation_years(inventory: Path) -> list[str]:
    """The distinct observation years of the inventory, ascending, as date names.

    Args:
        inventory: The polygon layer.

    Returns:
        Years as strings.
    """
    import pyogrio  # a second to import; only the inventory's attribute table needs it

    if not inventory.exists():
        raise DataNotFoundError("landslide inventory not found", file=inventory,
                                hint=f"the folder must hold {INVENTORY}")
    table = pyogrio.read_dataframe(inventory, columns=[YEAR_FIELD], read_geometry=False)
    return [str(y) for y in sorted({int(v) for v in table[YEAR_FIELD].dropna()})]


def recipe(section: Mapping[str, Any], base_dir: Path, grid: Grid | GridSpec | None,
           origin: str | None = None) -> Recipe:
    """A recipe for ``format = "kashmir"``: ``path`` = the folder, optional ``dates``.

    Sources: DEM (+ its ``derive`` list, default slope and aspect; ``tpi_radii`` as for any
    DEM, :mod:`data.terrain`), geology and land cover one-hot, distance to faults; the
    grid is the DEM's; labels are the inventory rasterized per observation year
    (cumulative). ``dates`` (a list of years) picks a subset of the years.

    Args:
        section: The ``[data]`` section.
        base_dir: Directory ``path`` is relative to.
        grid: Overrides the DEM grid.
        origin: File named in errors.

    Returns:
        The recipe.
    """
    check_adapter_keys(section, {"path", "dates", "derive", "tpi_radii"}, "kashmir")
    root = adapter_root(section, base_dir, "kashmir")
    dates = section.get("dates") or observation_years(root / INVENTORY)
    dem = {"name": "dem", "kind": "factor", "type": "continuous", "path": DEM,
           "derive": section.get("derive", ["slope", "aspect"])}
    if "tpi_radii" in section:
        dem["tpi_radii"] = section["tpi_radii"]
    scene = {
        "format": "kashmir",
        "dates": dates,
        "sources": [
            dem,
            {"name": "geology", "kind": "factor", "type": "categorical", "path": GEOLOGY,
             "codes": GEOLOGY_CODES},
            {"name": "landcover", "kind": "factor", "type": "categorical", "path": LANDCOVER,
             "codes": LANDCOVER_CODES},
            {"name": "fault_distance", "kind": "factor", "type": "continuous", "vector": FAULTS},
        ],
        "labels": {"vector": INVENTORY, "date_field": YEAR_FIELD},
        "grid": {"like": DEM},
    }
    return scene_recipe(parse_scene(scene, root, origin=origin or str(root)), grid)
