"""Adapter for the general case: GeoTIFF sources (and vector layers) listed in a scene."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from data.build import build_scene
from data.raster import Grid
from data.scene import GridSpec, SceneSpec, parse_scene
from data.sources.base import Recipe, with_sidecars

__all__ = ["recipe", "scene_recipe"]


def recipe(section: Mapping[str, Any], base_dir: Path, grid: Grid | GridSpec | None,
           origin: str | None = None) -> Recipe:
    """A recipe for a ``format = "geotiff"`` scene.

    Args:
        section: The ``[data]`` section.
        base_dir: Directory its relative paths are relative to.
        grid: Overrides the scene's grid.
        origin: File named in errors.

    Returns:
        The recipe.
    """
    return scene_recipe(parse_scene(section, base_dir, origin=origin), grid)


def scene_recipe(spec: SceneSpec, grid: Grid | GridSpec | None) -> Recipe:
    """A recipe for an already parsed scene (also used by the folder adapters).

    Args:
        spec: The scene.
        grid: Overrides the scene's grid.

    Returns:
        The recipe.
    """
    files: list[Path] = []
    for src in spec.sources:
        files += [p for p in (src.path, src.vector) if p] + list((src.paths or {}).values())
    if spec.labels is not None:
        files += list((spec.labels.paths or {}).values())
        files += [spec.labels.vector] if spec.labels.vector else []
    if spec.grid is not None and spec.grid.like is not None:
        files.append(spec.grid.like)
    inputs = tuple(p for f in files for p in with_sidecars(f))
    described_grid = grid.to_json() if isinstance(grid, Grid) else grid
    description = {"scene": asdict(spec) | {"origin": None}, "grid": described_grid}

    def build(out_dir: Path | None, block_size: int, key: str) -> tuple[dict, dict]:
        return build_scene(spec, grid, out_dir, block_size, key)

    return Recipe(_jsonable(description), inputs, build)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "__dataclass_fields__"):
        return _jsonable(asdict(value))
    return value
