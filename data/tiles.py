"""Tiles: the patches a cube is cut into, and the regions they never cross."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from rasterio.windows import Window

from data.errors import SceneSpecError

__all__ = ["Region", "Tile", "make_tiles"]


class Tile(NamedTuple):
    """A patch of the cube: the pixel window it reads and the side it is padded to.

    Attributes:
        row: First row in the cube.
        col: First column in the cube.
        height: Rows read (smaller than ``patch`` at an edge).
        width: Columns read.
        patch: Side length samples are padded to (invalid padding).
    """

    row: int
    col: int
    height: int
    width: int
    patch: int

    @property
    def slices(self) -> tuple[slice, slice]:
        """(rows, cols) slices into an (H, W) array."""
        return slice(self.row, self.row + self.height), slice(self.col, self.col + self.width)

    @property
    def window(self) -> Window:
        """The rasterio window (for gridded cubes, ``cube.transform`` georeferences it)."""
        return Window(self.col, self.row, self.width, self.height)


class Region(NamedTuple):
    """A rectangle tiles never cross: the whole grid, or one patch of a patch collection."""

    row: int
    col: int
    height: int
    width: int


def make_tiles(
    regions: Sequence[Region], patch_size: int, overlap: int
) -> list[tuple[Tile, tuple[int, int, int]]]:
    """Tile each region with a stride of ``patch_size - overlap``.

    Args:
        regions: Rectangles to tile; tiles are clipped to their region.
        patch_size: Tile side in pixels.
        overlap: Pixels shared by neighbouring tiles.

    Returns:
        (tile, (region index, tile row index, tile col index)) pairs.
    """
    if not isinstance(patch_size, int) or patch_size < 1:
        raise SceneSpecError(f"patch_size must be a positive integer, got {patch_size!r}",
                             key="patch_size", hint="e.g. patch_size = 64")
    if not isinstance(overlap, int) or not 0 <= overlap < patch_size:
        raise SceneSpecError(f"overlap must be in [0, patch_size), got {overlap!r}",
                             key="overlap", hint="e.g. overlap = 0 or patch_size // 4")
    stride = patch_size - overlap
    out = []
    for k, reg in enumerate(regions):
        n_rows = max(1, -(-(reg.height - overlap) // stride))
        n_cols = max(1, -(-(reg.width - overlap) // stride))
        for i in range(n_rows):
            for j in range(n_cols):
                r, c = i * stride, j * stride
                tile = Tile(reg.row + r, reg.col + c, min(patch_size, reg.height - r),
                            min(patch_size, reg.width - c), patch_size)
                out.append((tile, (k, i, j)))
    return out
