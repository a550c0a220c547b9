"""Tiling a cube into patches and splitting the tiles into train / val / test."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
from rasterio.windows import Window

from data.errors import SceneSpecError, TestSplitWithheldError

__all__ = ["Region", "SplitResult", "Splits", "Tile", "make_splits", "make_tiles", "split_tiles",
           "validation_plan", "SPLIT_METHODS", "VALIDATIONS"]

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
        extra = "".join(f", {k}={self.info[k]!r}" for k in ("validation", "buffer")
                        if k in self.info)
        return (f"Splits(train={len(self.train)}, val={len(self.val)}, test={len(self._test)}, "
                f"method={self.info.get('method')!r}{extra}"
                f"{', withheld' if self.withheld else ''})")


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


VALIDATIONS = ("auto", "random", "grouped", "blocked")
"""How validation (and the tuning folds) is cut: ``auto`` follows the test split's kind."""
_FREE, _EXCLUDED = -9, -1


class SplitResult(NamedTuple):
    """Tiles of each split and how they were cut (``Splits.info`` entries)."""

    train: list[Tile]
    val: list[Tile]
    test: list[Tile]
    info: dict[str, Any]


def validation_plan(*, method: str, by_region: bool, grouped: bool, test_from: str | None,
                    validation: str = "auto") -> dict[str, Any]:
    """Which validation a split uses, and a warning when it cannot see the test's shift.

    The test split is *shifted* when it holds out groups, spatial blocks or a list from a
    split file: then validation holds out the same kind of unit by default (``grouped`` or
    ``blocked``), so tuning ranks configurations by how they do on places they never
    trained on. ``validation = "random"`` draws validation units from the training places
    instead; it is allowed, but flagged.

    Args:
        method: ``random``, ``blocked`` or ``paper``.
        by_region: A patch collection.
        grouped: The patches have groups.
        test_from: ``file`` (split lists fix the test), ``groups`` (``test_groups``) or None.
        validation: ``auto`` (follow the test), ``random``, ``grouped`` or ``blocked``.

    Returns:
        ``{"test": what the test holds out, "validation": kind, "default": the kind auto
        gives, "explicit": bool, "shifted": bool, "warning": str or None}``.

    Raises:
        SceneSpecError: An unknown kind, ``grouped`` without groups, ``blocked`` on patches
            or without ``split = "blocked"``.
    """
    if validation not in VALIDATIONS:
        raise SceneSpecError(f"validation must be one of {list(VALIDATIONS)}, got "
                             f"{validation!r}", key="validation",
                             hint='leave it out: validation then follows the test split')
    test = ("split file" if test_from == "file" else "groups" if grouped
            else "patches" if by_region else "blocks" if method == "blocked" else "tiles")
    default = ("grouped" if grouped else "blocked" if not by_region and method == "blocked"
               else "random")
    if validation == "grouped" and not grouped:
        raise SceneSpecError(
            'validation = "grouped" needs groups', key="validation",
            hint=("declare them with group = { regex = ... } or { file = ... }" if by_region
                  else 'a scene is split in spatial blocks: split = "blocked"'))
    if validation == "blocked" and (by_region or method != "blocked"):
        raise SceneSpecError(
            'validation = "blocked" needs a scene split with split = "blocked"',
            key="validation", hint='patches: validation = "grouped" with groups' if by_region
            else 'set split = "blocked", or leave validation out')
    kind = default if validation == "auto" else validation
    shifted = test in ("split file", "groups", "blocks")
    warning = None
    if shifted and kind == "random":
        if validation == "random":
            held = "is a split list" if test == "split file" else f"holds out {test}"
            warning = (f"validation is random while the test split {held}: tuning then "
                       "ranks configurations where they train, not where they will map "
                       '(asked for with validation = "random")')
        else:
            warning = ("the test split comes from a split file and the patches have no "
                       "groups, so validation draws patches at random: declare groups "
                       "(group = ...) so validation holds out whole places like the test")
    return {"test": test, "validation": kind, "default": default,
            "explicit": validation != "auto", "shifted": shifted, "warning": warning}


def make_splits(
    tiles: list[tuple[Tile, tuple[int, int, int]]],
    *,
    method: str,
    fractions: Sequence[float],
    block_size: int,
    seed: int,
    by_region: bool,
    stride: int,
    folds: int | str | None = None,
    fold: int | None = None,
    fold_role: str = "validation",
    share: Callable[[Tile], float] | None = None,
    groups: Sequence[str] | None = None,
    lists: Mapping[str, Collection[int]] | None = None,
    test_groups: Sequence[str] | None = None,
    validation: str = "auto",
    buffer: int = 0,
) -> tuple[list[Tile], list[Tile], list[Tile]]:
    """Assign tiles to train / val / test (see ``split_tiles``, which also says how).

    Returns:
        (train, val, test) tile lists.
    """
    train, val, test, _ = split_tiles(
        tiles, method=method, fractions=fractions, block_size=block_size, seed=seed,
        by_region=by_region, stride=stride, folds=folds, fold=fold, fold_role=fold_role,
        share=share, groups=groups, lists=lists, test_groups=test_groups,
        validation=validation, buffer=buffer)
    return train, val, test


def split_tiles(
    tiles: list[tuple[Tile, tuple[int, int, int]]],
    *,
    method: str,
    fractions: Sequence[float],
    block_size: int,
    seed: int,
    by_region: bool,
    stride: int,
    folds: int | str | None = None,
    fold: int | None = None,
    fold_role: str = "validation",
    share: Callable[[Tile], float] | None = None,
    groups: Sequence[str] | None = None,
    lists: Mapping[str, Collection[int]] | None = None,
    test_groups: Sequence[str] | None = None,
    validation: str = "auto",
    buffer: int = 0,
) -> SplitResult:
    """Assign tiles to train / val / test.

    ``random`` and ``paper`` shuffle tiles (the paper's split; overlapping tiles may share
    pixels across splits); ``blocked`` shuffles blocks of tiles and then drops every tile
    that reaches into a block of another split, so no pixel is in two splits, and every
    tile closer than ``buffer`` pixels to a block of a more withheld split (training to
    validation or test, validation to test), so that neither a network's receptive field
    nor the ``context`` read around an evaluated tile sees pixels of another split. In a
    patch collection (``by_region``) the unit is the patch, or with ``groups`` the group:
    every patch of a group goes to one split.

    The test split comes first: from ``lists`` (``test``; or everything outside ``train``
    and ``val`` when only those are listed), from ``test_groups``, or as the ``test``
    fraction of the units. Validation is cut from the rest by ``validation``: ``auto``
    holds out the same kind of unit as the test (groups, blocks, patches or tiles);
    ``random`` draws patches (or tiles) from the training places even when the test holds
    out groups or blocks (see ``validation_plan``).

    With ``folds`` (k-fold cross-validation) the validation units outside the test split
    are dealt, in shuffled order, into ``folds`` folds whose sizes differ by at most one;
    fold ``fold`` validates and the others train, so the folds of one seed are disjoint,
    cover every non-test unit and share the same test split, and with groups no group is
    on both sides of any fold. ``folds = "groups"`` is leave-one-group-out (one fold per
    group). With ``fold_role="test"`` the folds are cut from every unit and fold ``fold``
    is the test split instead (outer cross-validation); validation is then cut from the
    other folds by the ratio of the validation to the training fraction.

    With ``share`` the split is stratified by landslide share: units are ranked by the
    mean share of their tiles, and every split (and fold) draws evenly across that
    ranking instead of from one shuffled order; the counts per split are the same.

    Args:
        tiles: From ``make_tiles``.
        method: ``random``, ``blocked`` or ``paper``.
        fractions: (train, val, test); ``paper`` keeps test at 0.3 and splits the rest by
            the ratio of train to val.
        block_size: Tiles per block side (``blocked``).
        seed: Shuffling seed.
        by_region: Keep each region's tiles together (patch collections).
        stride: ``patch_size - overlap``, to find which blocks a tile reaches into.
        folds: Number of cross-validation folds, ``"groups"`` for one per group; None for a
            plain split.
        fold: The held-out fold (default 0 when ``folds`` is given).
        fold_role: What the held-out fold is: ``validation`` or ``test``.
        share: A tile's landslide share (positive over valid pixels), to stratify by.
        groups: The group of each region (patch collections).
        lists: Region indices fixed to ``train`` / ``val`` / ``test`` (split files).
        test_groups: The groups that make the test split.
        validation: ``auto``, ``random``, ``grouped`` or ``blocked``.
        buffer: Pixels kept free between the blocks of different splits (``blocked``).

    Returns:
        (train, val, test, info); ``info`` says which validation was used, what the test
        holds out, the buffer and the tiles it dropped, the resolved fold count and, with
        groups, the groups of each split.

    Raises:
        SceneSpecError: A bad method, fractions, block size, fold or validation setting, or
            fewer units left for training than folds.
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
    if isinstance(buffer, bool) or not isinstance(buffer, int) or buffer < 0:
        raise SceneSpecError(f"buffer must be a whole number of pixels >= 0, got {buffer!r}",
                             key="buffer", hint="e.g. buffer = 32 (default: the context)")
    if groups is not None and not by_region:
        raise SceneSpecError("groups apply to patch collections", key="group",
                             hint='split a scene in spatial blocks: split = "blocked"')
    lists = {k: set(v) for k, v in (lists or {}).items()}
    test_from = ("file" if "test" in lists or "train" in lists
                 else "groups" if test_groups else None)
    plan = validation_plan(method=method, by_region=by_region, grouped=groups is not None,
                           test_from=test_from, validation=validation)
    kind = plan["validation"]
    logo = folds == "groups"
    if logo and groups is None:
        raise SceneSpecError('folds = "groups" (leave one group out) needs groups',
                             key="folds", hint="declare group = {...}, or give a number")
    _check_folds(2 if logo else folds, fold if not logo or fold is None else 0, fold_role)
    if logo and fold is not None and (isinstance(fold, bool) or not isinstance(fold, int)
                                      or fold < 0):
        raise SceneSpecError(f"fold must be an integer >= 0, got {fold!r}", key="fold",
                             hint="fold = 0 ... (number of groups - 1)")
    if folds is not None and fold_role == "test" and test_from is not None:
        raise SceneSpecError(f'fold_role = "test" rotates the test split, which '
                             f"{'the split lists' if test_from == 'file' else 'test_groups'} "
                             "fix", key="fold_role", hint='use fold_role = "validation"')
    if folds is not None and fold_role == "validation" and "val" in lists:
        raise SceneSpecError("the split lists fix validation, so there is nothing to fold",
                             key="folds", hint="drop folds, or drop the val list")
    rng = np.random.default_rng(seed)
    what = ("groups" if groups is not None else "patches" if by_region
            else "blocks" if method == "blocked" else "tiles")
    # units the test split holds out whole: a group, a patch, a block or a tile
    if by_region:
        units = _region_units(tiles, groups)
    elif method == "blocked":
        units = _blocked_units(tiles, block_size)
    else:
        units = [_Unit([pair]) for pair in tiles]
    same = kind != "random" or not (groups is not None or (not by_region and method == "blocked"))
    info: dict[str, Any] = {"validation": kind, "test_by": plan["test"]}
    if plan["explicit"]:
        info["validation_default"] = plan["default"]
    if plan["warning"]:
        info["warning"] = plan["warning"]
    if same and not lists and not test_groups:
        codes, n_folds = _assign_units(units, rng, share, f_train, f_val, f_test, folds, fold,
                                       fold_role, what)
        pairs = [(pair, int(codes[u]), int(codes[u])) for u, unit in enumerate(units)
                 for pair in unit.tiles]
    else:
        pairs, n_folds = _assign_general(
            tiles, units, by_region=by_region, groups=groups, lists=lists,
            test_groups=test_groups, grouped_val=kind == "grouped", rng=rng, share=share,
            fractions=(f_train, f_val, f_test), folds=folds, fold=fold, fold_role=fold_role,
            what=what)
    if n_folds is not None:
        info["folds"] = n_folds
    out: tuple[list[Tile], list[Tile], list[Tile]] = ([], [], [])
    if method == "blocked" and not by_region:
        dropped, clipped = _keep_apart(pairs, block_size, stride, buffer, out)
        info |= {"buffer": buffer, "buffer_dropped": dropped, "buffer_clipped": clipped}
    else:
        for (tile, _), code, _ in pairs:
            if code >= 0:
                out[code].append(tile)
    if groups is not None:
        region_codes: dict[str, set[int]] = {}
        for (_, (k, _, _)), code, _ in pairs:
            region_codes.setdefault(groups[k], set()).add(code)
        info["groups"] = {name: sorted(g for g, c in region_codes.items() if code in c)
                          for code, name in enumerate(("train", "val", "test"))}
    return SplitResult(*out, info)


def _region_units(tiles: list[tuple[Tile, tuple[int, int, int]]],
                  groups: Sequence[str] | None) -> list[_Unit]:
    """One unit per region (patch), or per group of regions, in order of appearance."""
    units: dict[Any, _Unit] = {}
    for tile, (k, i, j) in tiles:
        units.setdefault(groups[k] if groups is not None else k, _Unit()).tiles.append(
            (tile, (k, i, j)))
    return list(units.values())


def _ranked(units: Sequence[_Unit], rng: np.random.Generator,
            share: Callable[[Tile], float] | None) -> np.ndarray:
    """A shuffled order of ``units``, ranked by landslide share when stratifying."""
    order = rng.permutation(len(units))
    if share is not None:
        # the shuffle breaks ties in share at random
        shares = np.array([np.mean([share(t) for t, _ in units[u].tiles]) for u in order])
        order = order[np.argsort(shares, kind="stable")]
    return order


def _assign_units(units: list[_Unit], rng: np.random.Generator,
                  share: Callable[[Tile], float] | None, f_train: float, f_val: float,
                  f_test: float, folds: int | str | None, fold: int | None, fold_role: str,
                  what: str) -> tuple[np.ndarray, int | None]:
    """The split of each unit when test and validation hold out the same kind of unit."""
    order = _ranked(units, rng, share)
    split_of_unit = np.zeros(len(units), np.int8)
    spread = share is not None
    n_folds = None
    if folds is not None and fold_role == "test":
        n_folds = len(units) if folds == "groups" else int(folds)
        _enough(len(units), n_folds, fold, what, "")
        in_fold = _fold_labels(len(order), n_folds, rng, spread) == (fold or 0)
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
        else:
            n_folds = len(rest) if folds == "groups" else int(folds)
            _enough(len(rest), n_folds, fold, what, " outside the test split")
            split_of_unit[rest[_fold_labels(len(rest), n_folds, rng, spread)
                               == (fold or 0)]] = 1
    return split_of_unit, n_folds


def _enough(n: int, folds: int, fold: int | None, what: str, where: str) -> None:
    if n < max(folds, 2):
        raise SceneSpecError(
            f"{n} {what}{where} cannot make {folds} folds", key="folds",
            hint="use fewer folds" + (" or a smaller test fraction" if where else ""))
    if fold is not None and fold >= folds:
        raise SceneSpecError(f"fold must be an integer in [0, {folds}), got {fold!r}",
                             key="fold", hint=f"there are {folds} folds: fold = 0 ... "
                             f"{folds - 1}")


def _assign_general(
    tiles: list[tuple[Tile, tuple[int, int, int]]], units: list[_Unit], *, by_region: bool,
    groups: Sequence[str] | None, lists: Mapping[str, set[int]],
    test_groups: Sequence[str] | None, grouped_val: bool, rng: np.random.Generator,
    share: Callable[[Tile], float] | None, fractions: tuple[float, float, float],
    folds: int | str | None, fold: int | None, fold_role: str, what: str,
) -> tuple[list[tuple[tuple[Tile, tuple[int, int, int]], int, int]], int | None]:
    """Split lists, test groups, or validation finer than the test's units.

    Works on *fine* units (a patch, or a tile of a blocked scene) inside the test's
    *coarse* units (a group, or a block). Returns (pair, split, split of its coarse unit
    for the block rule) in tile order, and the resolved fold count.
    """
    f_train, f_val, f_test = fractions
    spread = share is not None
    fine: list[_Unit] = []
    coarse_of: list[int] = []
    for c, unit in enumerate(units):
        if by_region:
            for sub in _region_units(unit.tiles, None):
                fine.append(sub)
                coarse_of.append(c)
        else:
            for pair in unit.tiles:
                fine.append(_Unit([pair]))
                coarse_of.append(c)
    region = [f.tiles[0][1][0] for f in fine]
    code = np.full(len(fine), _FREE, np.int8)
    for name, split in (("test", 2), ("val", 1), ("train", 0)):
        for f, k in enumerate(region):
            if k in lists.get(name, ()):
                code[f] = split
    free = code == _FREE
    if "test" in lists and "train" in lists:
        code[free] = _EXCLUDED  # a patch in no list is left out
    elif "train" in lists:
        code[free] = 2  # the train (and val) lists name everything that is not test
    n_folds = None
    if test_groups:
        chosen = set(test_groups)
        for f, k in enumerate(region):
            if groups is not None and groups[k] in chosen:
                if code[f] == 1:
                    raise SceneSpecError(
                        f"a patch of the val list is in test group {groups[k]!r}",
                        key="test_groups", hint="a patch belongs to one split")
                code[f] = 2
    elif "test" not in lists and "train" not in lists:
        # the test split is a fraction (or a fold) of the coarse units with free patches
        cands = sorted({coarse_of[f] for f in range(len(fine)) if code[f] == _FREE})
        order = np.array(cands, int)[_ranked([units[c] for c in cands], rng, share)] \
            if cands else np.array([], int)
        if folds is not None and fold_role == "test":
            n_folds = len(cands) if folds == "groups" else int(folds)
            _enough(len(cands), n_folds, fold, what, "")
            chosen_units = order[_fold_labels(len(order), n_folds, rng, spread) == (fold or 0)]
        else:
            chosen_units = _take(order, _cut(len(cands), 0.0, f_test)[1], rng, spread)
        in_test = np.isin(coarse_of, chosen_units) & (code == _FREE)
        code[in_test] = 2
    # validation: whole coarse units (grouped) or fine units, from the training pool
    pool = [f for f in range(len(fine))
            if code[f] == _FREE or (code[f] == 0 and "val" not in lists)]
    for f in pool:
        code[f] = 0
    if "val" not in lists and pool:
        members: dict[int, list[int]] = {}
        for f in pool:
            members.setdefault(coarse_of[f] if grouped_val else f, []).append(f)
        keys = list(members)
        val_units = [_Unit([p for f in members[key] for p in fine[f].tiles]) for key in keys]
        order = _ranked(val_units, rng, share)
        ratio = f_val / (f_train + f_val)
        if folds is not None and fold_role == "validation":
            n_folds = len(keys) if folds == "groups" else int(folds)
            unit_word = "groups" if grouped_val else "patches" if by_region else "tiles"
            _enough(len(keys), n_folds, fold, unit_word, " outside the test split")
            chosen_units = order[_fold_labels(len(order), n_folds, rng, spread) == (fold or 0)]
        else:
            chosen_units = _take(order, _cut(len(keys), ratio, 0.0)[0], rng, spread)
        for u in chosen_units:
            for f in members[keys[int(u)]]:
                code[f] = 1
    # the block rule sees a blocked scene's non-test blocks as one pool
    block = [int(code[f]) if by_region else (2 if code[f] == 2 else 0) for f in range(len(fine))]
    where = {pair[0]: (int(code[f]), block[f]) for f in range(len(fine)) for pair in fine[f].tiles}
    return [(pair, *where[pair[0]]) for pair in tiles], n_folds


def _keep_apart(pairs: Sequence[tuple[tuple[Tile, tuple[int, int, int]], int, int]],
                block_size: int, stride: int, buffer: int,
                out: tuple[list[Tile], list[Tile], list[Tile]]) -> tuple[int, int]:
    """Put each tile into its split, keeping the splits apart.

    A tile is dropped when it reaches into another split's block. A tile within ``buffer``
    pixels of a more withheld split's block (training near validation or test, validation
    near test) is cut back to the largest part outside that band, or dropped when nothing
    is left, so no pixel it holds lies within ``buffer`` of the other split's pixels.

    Returns:
        (tiles the buffer dropped, tiles it cut back).
    """
    block_split: dict[tuple[int, int, int], int] = {}
    for (_, (k, i, j)), _, b in pairs:
        block_split[(k, i // block_size, j // block_size)] = b
    span = stride * block_size
    dropped = clipped = 0
    for (tile, (k, i, j)), code, own in pairs:
        if code < 0:
            continue
        r0, c0 = i * stride, j * stride
        # the far edge of an overlapping tile may reach the next block's pixels
        reached = {block_split.get((k, bi, bj), own)
                   for bi in range(i // block_size, (r0 + tile.height - 1) // span + 1)
                   for bj in range(j // block_size, (c0 + tile.width - 1) // span + 1)}
        if reached != {own}:
            continue
        near = [(bi * span - buffer, bj * span - buffer,
                 (bi + 1) * span + buffer, (bj + 1) * span + buffer)
                for bi in range((r0 - buffer) // span, (r0 + tile.height - 1 + buffer) // span + 1)
                for bj in range((c0 - buffer) // span, (c0 + tile.width - 1 + buffer) // span + 1)
                if buffer and block_split.get((k, bi, bj), -1) > own]
        kept = _outside((r0, c0, r0 + tile.height, c0 + tile.width), near)
        if kept is None:
            dropped += 1  # the buffer: a receptive field or context would see held-out pixels
            continue
        if kept != (r0, c0, r0 + tile.height, c0 + tile.width):
            clipped += 1
            # region-relative rectangle back to cube coordinates
            tile = Tile(tile.row + kept[0] - r0, tile.col + kept[1] - c0, kept[2] - kept[0],
                        kept[3] - kept[1], tile.patch)
        out[code].append(tile)
    return dropped, clipped


def _outside(rect: tuple[int, int, int, int], bands: Sequence[tuple[int, int, int, int]]
             ) -> tuple[int, int, int, int] | None:
    """The largest part of ``rect`` (r0, c0, r1, c1) left by cutting each band off one side.

    Each band that overlaps the rectangle is cut off along the side that keeps the most
    pixels; None when nothing is left.
    """
    r0, c0, r1, c1 = rect
    for b0, d0, b1, d1 in bands:
        if b0 >= r1 or b1 <= r0 or d0 >= c1 or d1 <= c0:
            continue
        options = [(r0, c0, min(r1, b0), c1), (max(r0, b1), c0, r1, c1),
                   (r0, c0, r1, min(c1, d0)), (r0, max(c0, d1), r1, c1)]
        best = max(options, key=lambda o: max(0, o[2] - o[0]) * max(0, o[3] - o[1]))
        if best[2] <= best[0] or best[3] <= best[1]:
            return None
        r0, c0, r1, c1 = best
    return r0, c0, r1, c1
