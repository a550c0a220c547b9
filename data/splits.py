"""Tiling a cube into patches and splitting the tiles into train / val / test."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
from rasterio.windows import Window

from data.errors import SceneSpecError, TestSplitWithheldError

__all__ = ["Region", "Splits", "Tile", "make_splits", "make_tiles", "SPLIT_METHODS"]

SPLIT_METHODS = ("random", "blocked", "paper")
# The paper holds out 30 % for testing and carves validation out of the remaining 70 %.
_PAPER_TEST = 0.3


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


@dataclass(frozen=True)
class _Unit:
    """Tiles that go to one split together (one tile, one block or one patch)."""

    tiles: list[tuple[Tile, tuple[int, int, int]]] = field(default_factory=list)


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


class Splits:
    """Train / validation / test tiles of one cube.

    ``train`` and ``val`` are plain attributes; the test tiles come only from the
    ``test`` accessor, and ``for_tuning()`` returns a copy whose ``test`` raises, which is
    what tuning code should hold.

    Args:
        train: Training tiles.
        val: Validation tiles.
        test: Test tiles.
        info: How they were made (method, seed, sizes) for provenance.
    """

    def __init__(self, train: Sequence[Tile], val: Sequence[Tile], test: Sequence[Tile],
                 info: dict[str, Any], *, withheld: bool = False) -> None:
        self.train: tuple[Tile, ...] = tuple(train)
        self.val: tuple[Tile, ...] = tuple(val)
        self._test: tuple[Tile, ...] = tuple(test)
        self.info = dict(info)
        self.withheld = withheld

    @property
    def test(self) -> tuple[Tile, ...]:
        """The test tiles (for final training and reported tables, never for tuning).

        Raises:
            TestSplitWithheldError: On a copy made by ``for_tuning()``.
        """
        if self.withheld:
            raise TestSplitWithheldError(
                "the test split is withheld from tuning", key="splits.test",
                hint="tune on train / val; read test only in `hpo train` and reports",
            )
        return self._test

    def for_tuning(self) -> Splits:
        """A copy that hands out train and val only."""
        return Splits(self.train, self.val, self._test, self.info, withheld=True)

    def to_dict(self) -> dict[str, Any]:
        """Provenance: how the splits were made and how many tiles each holds."""
        return {**self.info, "n_train": len(self.train), "n_val": len(self.val),
                "n_test": len(self._test)}

    def __repr__(self) -> str:
        return (f"Splits(train={len(self.train)}, val={len(self.val)}, test={len(self._test)}, "
                f"method={self.info.get('method')!r}{', withheld' if self.withheld else ''})")


def _check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    if (len(fractions) != 3 or any(not isinstance(f, int | float) or f < 0 for f in fractions)
            or fractions[0] <= 0 or abs(sum(fractions) - 1.0) > 1e-6):
        raise SceneSpecError(f"fractions must be [train, val, test] >= 0 summing to 1, got "
                             f"{list(fractions)}", key="fractions", hint="e.g. [0.6, 0.1, 0.3]")
    return float(fractions[0]), float(fractions[1]), float(fractions[2])


def _cut(n: int, val: float, test: float) -> tuple[int, int]:
    """Unit counts for val and test: rounded, at least one each when asked for and possible."""
    n_test = round(n * test)
    n_val = round(n * val)
    if test > 0 and n_test == 0 and n >= 2:
        n_test = 1
    if val > 0 and n_val == 0 and n - n_test >= 2:
        n_val = 1
    return n_val, n_test


FOLD_ROLES = ("validation", "test")


def _check_folds(folds: int | None, fold: int | None, fold_role: str) -> None:
    """Raise unless ``fold_role``, ``folds`` (None or >= 2) and ``fold`` are valid."""
    if fold_role not in FOLD_ROLES:
        raise SceneSpecError(f"fold_role must be one of {list(FOLD_ROLES)}, got {fold_role!r}",
                             key="fold_role",
                             hint='"test" rotates the test split; "validation" keeps it fixed')
    if folds is None:
        if fold is not None:
            raise SceneSpecError(f"fold = {fold!r} needs folds", key="fold",
                                 hint="set folds = 3 (or more) beside fold, or drop fold")
        return
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise SceneSpecError(f"folds must be an integer >= 2, got {folds!r}", key="folds",
                             hint="e.g. folds = 5; drop it for a plain train / val split")
    if fold is not None and (isinstance(fold, bool) or not isinstance(fold, int)
                             or not 0 <= fold < folds):
        raise SceneSpecError(f"fold must be an integer in [0, {folds}), got {fold!r}",
                             key="fold", hint=f"run one study per fold: fold = 0 ... {folds - 1}")


def _blocked_units(
    tiles: list[tuple[Tile, tuple[int, int, int]]], block_size: int
) -> list[_Unit]:
    """Group tiles into blocks of ``block_size`` x ``block_size`` tile positions."""
    groups: dict[tuple[int, int, int], _Unit] = {}
    for tile, (k, i, j) in tiles:
        groups.setdefault((k, i // block_size, j // block_size), _Unit()).tiles.append(
            (tile, (k, i, j)))
    return list(groups.values())


def _take(order: np.ndarray, n: int, rng: np.random.Generator, spread: bool) -> np.ndarray:
    """``n`` units of ``order``: its first ``n``, or one from each of ``n`` equal stretches.

    With ``spread`` the units sit at one random offset into each stretch (systematic
    sampling over a ranking).
    """
    if not spread or n == 0:
        return order[:n]
    return order[((np.arange(n) + rng.random()) * len(order) / n).astype(int)]


def _fold_labels(n: int, folds: int, rng: np.random.Generator, spread: bool) -> np.ndarray:
    """The fold of each of ``n`` units in order; fold sizes differ by at most one.

    Without ``spread`` units are dealt round-robin (the order is already shuffled); with
    it, each run of ``folds`` consecutive units of a ranking goes one to each fold, in a
    random order, so every fold draws from the whole ranking.
    """
    if not spread:
        return np.arange(n) % folds
    labels = np.concatenate([rng.permutation(folds) for _ in range(-(-n // folds))])
    return labels[:n]


def make_splits(
    tiles: list[tuple[Tile, tuple[int, int, int]]],
    *,
    method: str,
    fractions: Sequence[float],
    block_size: int,
    seed: int,
    by_region: bool,
    stride: int,
    folds: int | None = None,
    fold: int | None = None,
    fold_role: str = "validation",
    share: Callable[[Tile], float] | None = None,
) -> tuple[list[Tile], list[Tile], list[Tile]]:
    """Assign tiles to train / val / test.

    ``random`` and ``paper`` shuffle tiles (the paper's split; overlapping tiles may share
    pixels across splits); ``blocked`` shuffles blocks of tiles and then drops every tile
    that reaches into a block of another split, so no pixel is in two splits. In a patch
    collection (``by_region``) the unit is always the patch.

    With ``folds`` (k-fold cross-validation, for small sets) the test units are cut first
    as usual; the remaining units are dealt, in shuffled order, into ``folds`` folds whose
    sizes differ by at most one. Fold ``fold`` is the validation split and the others
    train, so the folds of one seed are disjoint, cover every non-test unit and share the
    same test split; the validation fraction is not used. With ``fold_role="test"`` the
    folds are cut from every unit and fold ``fold`` is the test split instead (outer
    cross-validation: each unit is tested exactly once over the folds); validation is then
    cut from the other folds by the ratio of the validation to the training fraction.

    With ``share`` the split is stratified by landslide share: units are ranked by the
    mean share of their tiles, and every split (and fold) draws evenly across that
    ranking instead of from one shuffled order. With a handful of patches of 1 to 40 %
    landslide pixels a plain shuffle often gives validation a few nearly empty patches,
    and the threshold chosen there then misfits test; the counts per split are the same.

    Args:
        tiles: From ``make_tiles``.
        method: ``random``, ``blocked`` or ``paper``.
        fractions: (train, val, test); ``paper`` keeps test at 0.3 and splits the rest by
            the ratio of train to val.
        block_size: Tiles per block side (``blocked``).
        seed: Shuffling seed.
        by_region: Keep each region's tiles together (patch collections).
        stride: ``patch_size - overlap``, to find which blocks a tile reaches into.
        folds: Number of cross-validation folds; None for a plain split.
        fold: The held-out fold (default 0 when ``folds`` is given).
        fold_role: What the held-out fold is: ``validation`` or ``test``.
        share: A tile's landslide share (positive over valid pixels), to stratify by.

    Returns:
        (train, val, test) tile lists.

    Raises:
        SceneSpecError: A bad method, fractions, block size or fold setting, or fewer units
            left for training than folds.
    """
    if method not in SPLIT_METHODS:
        raise SceneSpecError(f"split method {method!r} is unknown", key="split",
                             hint=f"use one of {list(SPLIT_METHODS)}")
    f_train, f_val, f_test = _check_fractions(fractions)
    if method == "paper":
        f_test = _PAPER_TEST
        f_val = (1 - f_test) * f_val / (f_train + f_val)
    if not isinstance(block_size, int) or block_size < 1:
        raise SceneSpecError(f"block_size must be a positive integer, got {block_size!r}",
                             key="block_size", hint="e.g. block_size = 4")
    if by_region:
        units = _blocked_units(tiles, 10**9)  # one unit per region (patch)
    elif method == "blocked":
        units = _blocked_units(tiles, block_size)
    else:
        units = [_Unit([pair]) for pair in tiles]
    _check_folds(folds, fold, fold_role)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(units))
    if share is not None:
        # the shuffle breaks ties in share at random
        shares = np.array([np.mean([share(t) for t, _ in units[u].tiles]) for u in order])
        order = order[np.argsort(shares, kind="stable")]
    split_of_unit = np.zeros(len(units), np.int8)
    spread = share is not None
    what = "patches" if by_region else "blocks" if method == "blocked" else "tiles"
    if folds is not None and fold_role == "test":
        if len(units) < folds:
            raise SceneSpecError(f"{len(units)} {what} cannot make {folds} folds",
                                 key="folds", hint="use fewer folds")
        in_fold = _fold_labels(len(order), folds, rng, spread) == (fold or 0)
        rest = order[~in_fold]
        n_val, _ = _cut(len(rest), f_val / (f_train + f_val), 0.0)
        split_of_unit[order[in_fold]] = 2
        split_of_unit[_take(rest, n_val, rng, spread)] = 1
    else:
        # with folds, validation is a fold of the rest, not a fraction of it
        n_val, n_test = _cut(len(units), 0.0 if folds is not None else f_val, f_test)
        test = _take(order, n_test, rng, spread)
        split_of_unit[test] = 2
        rest = order[~np.isin(order, test)]
        if folds is None:
            split_of_unit[_take(rest, n_val, rng, spread)] = 1
        elif len(rest) < folds:
            raise SceneSpecError(
                f"{len(rest)} {what} outside the test split cannot make {folds} folds",
                key="folds", hint="use fewer folds or a smaller test fraction")
        else:
            split_of_unit[rest[_fold_labels(len(rest), folds, rng, spread) == (fold or 0)]] = 1
    out: tuple[list[Tile], list[Tile], list[Tile]] = ([], [], [])
    if method == "blocked" and not by_region:
        block_split = {}
        for u, unit in enumerate(units):
            for _, (k, i, j) in unit.tiles:
                block_split[(k, i // block_size, j // block_size)] = split_of_unit[u]
        span = stride * block_size
        for u, unit in enumerate(units):
            for tile, (k, i, j) in unit.tiles:
                # the far edge of an overlapping tile may reach the next block's pixels
                i_end = (i * stride + tile.height - 1) // span
                j_end = (j * stride + tile.width - 1) // span
                reached = {block_split.get((k, bi, bj), split_of_unit[u])
                           for bi in range(i // block_size, i_end + 1)
                           for bj in range(j // block_size, j_end + 1)}
                if reached == {split_of_unit[u]}:
                    out[split_of_unit[u]].append(tile)
        return out
    for u, unit in enumerate(units):
        out[split_of_unit[u]].extend(tile for tile, _ in unit.tiles)
    return out
