"""One adapter per input format; each turns a ``[data]`` section into a ``Recipe``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from data.errors import SceneSpecError
from data.groups import check_only_patches
from data.raster import Grid
from data.scene import FORMATS, GridSpec
from data.sources import geotiff, hokkaido, kashmir, l4s, patches
from data.sources.base import Recipe

__all__ = ["ADAPTERS", "PATCH_FORMATS", "Recipe", "recipe_for"]

ADAPTERS: dict[str, Callable[..., Recipe]] = {
    "geotiff": geotiff.recipe,
    "l4s": l4s.recipe,
    "patches": patches.recipe,
    "kashmir": kashmir.recipe,
    "hokkaido": hokkaido.recipe,
}
assert set(ADAPTERS) == set(FORMATS)  # a format without an adapter is a programming error
PATCH_FORMATS = ("l4s", "patches")
"""Formats whose cube is a patch collection with patch ids (groups and split lists apply)."""


def recipe_for(section: Mapping[str, Any], base_dir: Path, grid: Grid | GridSpec | None = None,
               origin: str | None = None) -> Recipe:
    """Dispatch a ``[data]`` section on its ``format`` to the adapter.

    Args:
        section: The section (``format`` defaults to ``geotiff``).
        base_dir: Directory its relative paths are relative to.
        grid: Overrides the grid.
        origin: File named in errors.

    Returns:
        The adapter's recipe.

    Raises:
        SceneSpecError: The format is unknown.
    """
    fmt = section.get("format", "geotiff")
    if fmt not in ADAPTERS:
        raise SceneSpecError(f"format {fmt!r} is unknown", file=origin, key="data.format",
                             hint=f"use one of {sorted(ADAPTERS)}")
    if fmt not in PATCH_FORMATS:
        check_only_patches(section, fmt)
    return ADAPTERS[fmt](section, base_dir, grid, origin)
