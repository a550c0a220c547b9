"""Entry points: build a cube from a scene, or load it from an on-disk cache keyed by its inputs."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from data.build import CUBE_VERSION, DEFAULT_BLOCK_SIZE
from data.cube import Cube
from data.errors import DataError
from data.raster import Grid
from data.scene import GridSpec, load_scene, parse_grid, resolve_section
from data.sources import PATCH_FORMATS, Recipe, recipe_for
from data.splits import few_groups_warning, validation_plan
from data.store import META_FILE

__all__ = ["DEFAULT_CACHE_DIR", "build_cube", "cube_key", "open_source", "prepare",
           "validation_summary"]

DEFAULT_CACHE_DIR = Path(".cache") / "cubes"
_SPLIT_OPTIONS = ("patch_size", "overlap", "split", "fractions", "block_size", "seed", "select",
                  "folds", "fold", "fold_role", "stratify", "context",
                  "normalization", "clip", "validation", "buffer", "test_groups")


def cube_key(recipe: Recipe) -> str:
    """The cache key: a hash of the recipe and each input's path, size and modification time.

    Args:
        recipe: The adapter's recipe.

    Returns:
        20 hex digits.
    """
    stats = []
    for path in recipe.inputs:
        try:
            st = path.stat()
        except OSError:
            continue  # the build names the missing file
        stats.append([str(path.resolve()), st.st_size, st.st_mtime_ns])
    blob = json.dumps({"version": CUBE_VERSION, "recipe": recipe.description, "inputs": stats},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _as_section(scene: Mapping[str, Any] | str | Path, base_dir: str | Path | None
                ) -> tuple[dict[str, Any], Path, str | None]:
    if isinstance(scene, str | Path):
        path = Path(scene).resolve()
        return load_scene(path), path.parent, str(path)
    return dict(scene), Path(base_dir) if base_dir is not None else Path.cwd(), None


def build_cube(
    scene: Mapping[str, Any] | str | Path,
    *,
    base_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    grid: Grid | Mapping[str, Any] | None = None,
    target: str | None = None,
    block_size: int = DEFAULT_BLOCK_SIZE,
) -> Cube:
    """Build the cube a scene describes, or load it from ``cache_dir`` when already built.

    Args:
        scene: A ``[data]`` section (dict) or the path of a scene.toml / study file.
        base_dir: Directory the section's relative paths are relative to (default: the
            scene file's directory, else the working directory).
        cache_dir: Store the cube under ``cache_dir/<hash>/`` and reuse it; None builds in
            memory.
        grid: Target grid (a ``Grid`` or a ``[data.grid]``-like table), overriding the
            scene's.
        target: ``last``, ``new`` or a label date (default: the section's ``target``, else
            ``last``).
        block_size: Rows per processing strip; the build holds about
            ``block_size * width * (sources + 2) * 4`` bytes.

    Returns:
        The cube (memory-mapped from the cache when ``cache_dir`` is given).
    """
    section, base, origin = _as_section(scene, base_dir)
    section, base = resolve_section(section, base)
    grid_choice: Grid | GridSpec | None = (
        grid if grid is None or isinstance(grid, Grid) else parse_grid(grid, base))
    recipe = recipe_for(section, base, grid_choice, origin)
    key = cube_key(recipe)
    target = target or section.get("target", "last")
    options = {k: section[k] for k in _SPLIT_OPTIONS if k in section}
    options |= recipe.split_options or {}
    if cache_dir is None:
        arrays, meta = recipe.build(None, block_size, key)
        return Cube(arrays, meta, target=target, options=options)
    final = Path(cache_dir) / key
    if not (final / META_FILE).exists():
        _build_atomically(recipe, final, block_size, key)
    return Cube.load(final, target=target, options=options)


def _build_atomically(recipe: Recipe, final: Path, block_size: int, key: str) -> None:
    """Build into a private temporary directory, then rename it into place.

    Readers never see a half-written cube; when two processes race, the first rename wins
    and the loser discards its copy.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{key}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        recipe.build(tmp, block_size, key)
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / META_FILE).exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def open_source(data_section: Mapping[str, Any], base_dir: str | Path, *,
                cache_dir: str | Path | None = None, **kwargs: Any) -> Cube:
    """Open a ``[data]`` section with the adapter its ``format`` names.

    Args:
        data_section: The section (``geotiff``, ``l4s``, ``kashmir`` or ``hokkaido``).
        base_dir: Directory its relative paths are relative to.
        cache_dir: As in ``build_cube``.
        **kwargs: ``grid``, ``target``, ``block_size`` as in ``build_cube``.

    Returns:
        The cube.
    """
    return build_cube(data_section, base_dir=base_dir, cache_dir=cache_dir, **kwargs)


def prepare(data_section: dict[str, Any], base_dir: Path, cache_dir: Path | None = None) -> Cube:
    """The cube for a study: loaded from the cache, or built once and cached.

    The cache directory is ``cache_dir``, else the section's ``cache_dir`` (relative to
    ``base_dir``), else ``base_dir/.cache/cubes``. The section's split options
    (``patch_size``, ``split``, ...) become the cube's ``splits()`` defaults and its
    ``target`` the labels.

    Args:
        data_section: The study file's ``[data]`` section.
        base_dir: The study file's directory.
        cache_dir: Overrides the cache directory.

    Returns:
        The memory-mapped cube; many trials and processes can share it.
    """
    base_dir = Path(base_dir)
    if cache_dir is None:
        configured = data_section.get("cache_dir")
        cache_dir = base_dir / (configured if configured else DEFAULT_CACHE_DIR)
    return build_cube(data_section, base_dir=base_dir, cache_dir=cache_dir)


def validation_summary(data_section: Mapping[str, Any], base_dir: str | Path) -> dict[str, Any]:
    """Which validation a study's splits use, read from its ``[data]`` section alone.

    Nothing is built: a patch folder is listed for its groups and split lists; a scene
    that cannot be read yet (a synthetic scene not generated) is judged by its keys.

    Args:
        data_section: The study's ``[data]`` section.
        base_dir: The study file's folder.

    Returns:
        ``data.splits.validation_plan``'s answer, with ``buffer`` (pixels) for a blocked
        scene.

    Raises:
        SceneSpecError: The validation asked for does not fit the split (e.g. ``grouped``
            without groups).
    """
    base = Path(base_dir)
    try:
        section, base = resolve_section(data_section, base)
    except DataError:
        section = dict(data_section)
    by_region = section.get("format", "geotiff") in PATCH_FORMATS
    options: dict[str, Any] = {}
    if by_region:
        try:
            options = recipe_for(section, base).split_options or {}
        except DataError:  # the dry run's file check names the problem
            options = {"groups": {} if "group" in section else None,
                       "lists": {n: [] for n in ("train", "test") if n in section}}
    lists = options.get("lists") or {}
    method = section.get("split", "random")
    plan = validation_plan(
        method=method, by_region=by_region, grouped=options.get("groups") is not None,
        test_from="file" if "test" in lists or "train" in lists
        else "groups" if section.get("test_groups") else None,
        validation=section.get("validation", "auto"))
    groups = options.get("groups")
    if plan["validation"] == "grouped" and groups and not plan["warning"]:
        test_ids, held = set(lists.get("test") or ()), set(section.get("test_groups") or ())
        free = {g for pid, g in groups.items() if pid not in test_ids and g not in held}
        # without a split list or test groups the test takes one group at least
        plan["warning"] = few_groups_warning(len(free) - (not test_ids and not held))
    if not by_region and method == "blocked":
        buffer, context = section.get("buffer", 0), section.get("context", 0)
        plan["buffer"] = max(v for v in (buffer, context, 0) if isinstance(v, int))
    return plan
