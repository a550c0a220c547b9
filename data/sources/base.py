"""What every adapter returns: a recipe that describes its inputs and builds the cube."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data.errors import DataNotFoundError, SceneSpecError
from data.scene import OPTION_KEYS

__all__ = ["Recipe", "BuildFn", "adapter_root", "check_adapter_keys", "with_sidecars"]

BuildFn = Callable[[Path | None, int, str], tuple[dict[str, Any], dict[str, Any]]]
"""(out_dir or None for memory, block_size, hash) -> (arrays, meta)."""


@dataclass(frozen=True)
class Recipe:
    """How to build one cube.

    Attributes:
        description: JSON-able description of everything that shapes the result; it and the
            inputs' paths, sizes and modification times make the cache key.
        inputs: Files the cube is built from.
        build: Builds the arrays and meta.
        split_options: Resolved split options of a patch collection (groups, split lists;
            see :mod:`data.groups`); they shape the splits, not the cube, so they are not
            part of the cache key.
    """

    description: dict[str, Any]
    inputs: tuple[Path, ...]
    build: BuildFn
    split_options: dict[str, Any] | None = None


def check_adapter_keys(section: Mapping[str, Any], allowed: Iterable[str], fmt: str) -> None:
    """Reject keys an adapter does not know (typos would otherwise be silently ignored).

    Args:
        section: The ``[data]`` section.
        allowed: Keys the adapter reads, besides ``format`` and the split / cache options.
        fmt: Adapter name, for the message.

    Raises:
        SceneSpecError: An unknown key is present.
    """
    known = {"format", *allowed, *OPTION_KEYS}
    unknown = sorted(set(section) - known)
    if unknown:
        raise SceneSpecError(f"unknown key(s) {unknown} for format {fmt!r}", key="data",
                             hint=f"allowed: {sorted(known)}")


def adapter_root(section: Mapping[str, Any], base_dir: Path, fmt: str) -> Path:
    """The folder a folder-based adapter reads (``path``, relative to ``base_dir``).

    Args:
        section: The ``[data]`` section.
        base_dir: Directory of the file that holds the section.
        fmt: Adapter name, for messages.

    Returns:
        The absolute folder.

    Raises:
        SceneSpecError: ``path`` is missing.
        DataNotFoundError: The folder does not exist.
    """
    raw = section.get("path")
    if not isinstance(raw, str) or not raw:
        raise SceneSpecError(f"format {fmt!r} needs `path`, the data folder", key="data.path",
                             hint=f'e.g. path = "../shared/data/{fmt}-folder"')
    root = (base_dir / raw).resolve()
    if not root.is_dir():
        raise DataNotFoundError(f"{fmt} data folder not found", file=root, key="data.path",
                                hint="check the path; it is relative to the study file")
    return root


def with_sidecars(path: Path) -> list[Path]:
    """A file plus the files that belong to it (a shapefile's .dbf, .shx, .prj, .cpg)."""
    if path.suffix.lower() != ".shp":
        return [path]
    return [path] + [path.with_suffix(ext) for ext in (".dbf", ".shx", ".prj", ".cpg")
                     if path.with_suffix(ext).exists()]
