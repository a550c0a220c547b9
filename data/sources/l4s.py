"""Adapter for Landslide4Sense HDF5 patches.

14 channels, one date, no grid: a patch collection (patches stacked vertically, split by patch).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from data.build import CUBE_VERSION
from data.errors import (
    BandCountMismatchError,
    DataNotFoundError,
    SceneSpecError,
    UnreadableFileError,
)
from data.groups import resolve_patch_splits
from data.raster import Grid
from data.scene import GridSpec
from data.sources.base import Recipe, adapter_root, check_adapter_keys
from data.store import CubeWriter

__all__ = ["CHANNELS", "KINDS", "recipe"]

# Channel order of the official release: Sentinel-2 B1-B12 without B8A, then ALOS PALSAR
# slope and DEM.
CHANNELS = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B9", "B10", "B11", "B12",
            "slope", "dem")
KINDS = ("optical",) * 12 + ("factor",) * 2
_DATE = "post"
_ID = re.compile(r"image_(\d+)\.h5$")


def _read(path: Path, key: str) -> np.ndarray:
    import h5py  # a quarter second to import, for the .h5 patches only

    if not path.exists():
        raise DataNotFoundError("patch file not found", file=path,
                                hint="img/image_N.h5 needs mask/mask_N.h5 beside it")
    try:
        with h5py.File(path, "r") as f:
            return np.asarray(f[key])
    except (OSError, KeyError) as exc:
        raise UnreadableFileError(f"cannot read dataset {key!r} ({exc})", file=path,
                                  hint="expected a Landslide4Sense HDF5 patch") from exc


def recipe(section: Mapping[str, Any], base_dir: Path, grid: Grid | GridSpec | None,
           origin: str | None = None) -> Recipe:
    """A recipe for ``format = "l4s"``: ``path`` = folder with ``img/`` (and ``mask/``).

    Optional ``ids`` (list of patch numbers) picks patches; default all, by number.

    Args:
        section: The ``[data]`` section.
        base_dir: Directory ``path`` is relative to.
        grid: Must be None: the patches have no georeferencing.
        origin: The study file, named in errors about its groups and split lists.

    Returns:
        The recipe.
    """
    check_adapter_keys(section, {"path", "ids"}, "l4s")
    if grid is not None or "grid" in section:
        raise SceneSpecError("Landslide4Sense patches have no georeferencing", key="data.grid",
                             hint="drop the grid; the cube is a patch collection")
    root = adapter_root(section, base_dir, "l4s")
    found = {int(m.group(1)): p for p in (root / "img").glob("image_*.h5")
             if (m := _ID.search(p.name))}
    ids = section.get("ids") or sorted(found)
    missing = [i for i in ids if i not in found]
    if missing or not ids:
        raise DataNotFoundError(f"patch ids {missing or '(none)'} not in img/", file=root / "img",
                                key="data.ids", hint=f"available: {sorted(found)[:20]}...")
    images = [found[i] for i in ids]
    masks = [root / "mask" / f"mask_{i}.h5" for i in ids]
    labelled = (root / "mask").is_dir()

    def build(out_dir: Path | None, block_size: int, key: str) -> tuple[dict, dict]:
        first = _read(images[0], "img")
        ph, pw = first.shape[:2]
        writer = CubeWriter(out_dir, n_dynamic=12, n_static=2, n_dates=1,
                            n_label_dates=int(labelled), height=ph * len(images), width=pw)
        # one patch at a time: never more than one patch in memory
        for k, path in enumerate(images):
            img = _read(path, "img")
            if img.ndim != 3 or img.shape != (ph, pw, len(CHANNELS)):
                raise BandCountMismatchError(
                    f"shape {img.shape}, expected ({ph}, {pw}, {len(CHANNELS)})", file=path,
                    hint="all patches need the same size and the 14 L4S channels")
            chw = np.moveaxis(img, -1, 0).astype(np.float32)
            for c in range(12):
                writer.write_dynamic(c, 0, k * ph, chw[c])
            for c in (12, 13):
                writer.write_static(c - 12, k * ph, chw[c])
            if labelled:
                writer.write_labels(0, k * ph, _read(masks[k], "mask") > 0)
        sources = [{"name": n, "kind": kind, "type": "continuous",
                    "store": "dynamic" if i < 12 else "static", "index": i if i < 12 else i - 12,
                    "origin": str(root / "img")}
                   for i, (n, kind) in enumerate(zip(CHANNELS, KINDS, strict=True))]
        meta = {"version": CUBE_VERSION, "hash": key, "format": "l4s", "sources": sources,
                "dates": [_DATE], "label_dates": [_DATE] if labelled else [],
                "label_origin": str(root / "mask") if labelled else None, "grid": None,
                "patch_shape": [ph, pw], "patch_ids": list(ids)}
        return writer.finish(meta), meta

    description = {"format": "l4s", "root": str(root), "ids": list(ids)}
    inputs = tuple(images) + (tuple(masks) if labelled else ())
    # groups / split lists name patches by number (``image_N`` -> "N")
    return Recipe(description, inputs, build,
                  resolve_patch_splits(section, root, [str(i) for i in ids], origin))
