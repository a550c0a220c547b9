"""Splitting a cube's tiles into train / val / test (and folds): the settings and the result.

The tiles are :mod:`data.tiles`'s; dealing the units is :mod:`data.assign`'s. How
:func:`split_tiles` splits:

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
other folds by the ratio of the validation to the training fraction or, with
``inner_folds``, is one of that many folds dealt over the other folds' units (nested
cross-validation: the folds of a tuning objective never reach the outer test fold).

With ``share`` the split is stratified by landslide share: units are ranked by the
mean share of their tiles, and every split (and fold) draws evenly across that
ranking instead of from one shuffled order; the counts per split are the same.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from data.assign import Unit, assign_general, assign_units, blocked_units, keep_apart, region_units
from data.errors import SceneSpecError, TestSplitWithheldError
from data.tiles import Tile

__all__ = ["FOLD_ROLES", "SPLIT_METHODS", "VALIDATIONS", "SplitResult", "Splits",
           "split_tiles", "validation_plan"]

SPLIT_METHODS = ("random", "blocked", "paper")
# The paper holds out 30 % for testing and carves validation out of the remaining 70 %.
_PAPER_TEST = 0.3


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


VALIDATIONS = ("auto", "random", "grouped", "blocked")
"""How validation (and the tuning folds) is cut: ``auto`` follows the test split's kind."""
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


FEW_GROUPS = 5
"""Below this many groups beside the test, grouped validation is flagged."""


def few_groups_warning(n_free: int) -> str | None:
    """A warning when grouped validation has fewer than :data:`FEW_GROUPS` groups to draw on.

    Validation then holds out one group or two, and their score says as much about those
    groups as about a new place: on the region-shift benchmark (docs/results.md, section
    7) validation on one held-out region of three chose a worse configuration than random
    validation did, and held-out blocks within the regions a better one.

    Args:
        n_free: Groups not in the test split.
    """
    if n_free >= FEW_GROUPS:
        return None
    return (f"validation holds out whole groups, but only {n_free} groups are not in the "
            "test: a held-out group's score says as much about that group as about a new "
            "place. Group by smaller units (e.g. tile-grid blocks within each region), or "
            f"score every trial on each group in turn ([tuning] folds = {max(2, n_free)})")


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
    inner_folds: int | str | None = None,
    inner_fold: int | None = None,
) -> SplitResult:
    """Assign tiles to train / val / test (and folds), as the module docstring says.

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
        inner_folds: With ``fold_role="test"``: deal the units outside the test fold into
            this many folds (``"groups"``: one per group) instead of cutting a validation
            fraction (nested cross-validation: tuning folds inside an outer test fold).
        inner_fold: The inner fold that validates (default 0).

    Returns:
        (train, val, test, info); ``info`` says which validation was used, what the test
        holds out, the buffer and the tiles it dropped, the resolved fold counts
        (``folds``, ``inner_folds``) and, with groups, the groups of each split.

    Raises:
        SceneSpecError: A bad method, fractions, block size, fold or validation setting, or
            fewer units left for training than folds.
    """
    fracs = _check_settings(method, fractions, block_size, buffer, grouped=groups is not None,
                            by_region=by_region)
    lists = {k: set(v) for k, v in (lists or {}).items()}
    test_from = "file" if "test" in lists or "train" in lists else "groups" if test_groups else None
    plan = validation_plan(method=method, by_region=by_region, grouped=groups is not None,
                           test_from=test_from, validation=validation)
    kind = plan["validation"]
    _check_fold_settings(folds, fold, fold_role, grouped=groups is not None,
                         test_from=test_from, val_listed="val" in lists)
    inner = _inner_folds(inner_folds, inner_fold, folds, fold_role, grouped=groups is not None)
    rng = np.random.default_rng(seed)
    what, units = _test_units(tiles, groups, by_region, method, block_size)
    # one dealing of units serves test and validation when validation draws the test's kind
    # of unit and no split list or test group fixes the test
    if (kind != "random" or what not in ("groups", "blocks")) and not lists and not test_groups:
        codes, counts = assign_units(units, rng, share, *fracs, folds, fold, fold_role, what,
                                     inner)
        pairs = [(pair, int(codes[u]), int(codes[u])) for u, unit in enumerate(units)
                 for pair in unit.tiles]
    else:
        pairs, counts = assign_general(
            tiles, units, by_region=by_region, groups=groups, lists=lists,
            test_groups=test_groups, grouped_val=kind == "grouped", rng=rng, share=share,
            fractions=fracs, folds=folds, fold=fold, fold_role=fold_role,
            what=what, inner=inner)
    out, kept = _tiles_of_splits(pairs, blocked=method == "blocked" and not by_region,
                                 block_size=block_size, stride=stride, buffer=buffer)
    info = _plan_info(plan) | counts | kept
    if groups is not None:
        info["groups"] = _groups_of_splits(pairs, groups)
    return SplitResult(*out, info)


def _test_units(
    tiles: list[tuple[Tile, tuple[int, int, int]]], groups: Sequence[str] | None,
    by_region: bool, method: str, block_size: int,
) -> tuple[str, list[Unit]]:
    """The units the test split holds out whole (groups, patches, blocks or tiles): kind, units."""
    what = ("groups" if groups is not None else "patches" if by_region
            else "blocks" if method == "blocked" else "tiles")
    units = (region_units(tiles, groups) if by_region
             else blocked_units(tiles, block_size) if method == "blocked"
             else [Unit([pair]) for pair in tiles])
    return what, units


def _plan_info(plan: Mapping[str, Any]) -> dict[str, Any]:
    """A split's record of its plan: the validation, the test's unit, any warning."""
    info: dict[str, Any] = {"validation": plan["validation"], "test_by": plan["test"]}
    if plan["explicit"]:
        info["validation_default"] = plan["default"]
    if plan["warning"]:
        info["warning"] = plan["warning"]
    return info


def _tiles_of_splits(
    pairs: list[tuple[tuple[Tile, Any], int, int]], *, blocked: bool, block_size: int,
    stride: int, buffer: int,
) -> tuple[tuple[list[Tile], list[Tile], list[Tile]], dict[str, Any]]:
    """The (train, val, test) tiles of the assigned pairs, and what the buffer dropped.

    A blocked scene drops (or clips) the tiles closer than ``buffer`` to a block of a more
    withheld split; otherwise every tile with a split (code >= 0) goes to it.
    """
    out: tuple[list[Tile], list[Tile], list[Tile]] = ([], [], [])
    if blocked:
        dropped, clipped = keep_apart(pairs, block_size, stride, buffer, out)
        return out, {"buffer": buffer, "buffer_dropped": dropped, "buffer_clipped": clipped}
    for (tile, _), code, _ in pairs:
        if code >= 0:
            out[code].append(tile)
    return out, {}


def _check_settings(
    method: str, fractions: Sequence[float], block_size: int, buffer: int, *, grouped: bool,
    by_region: bool,
) -> tuple[float, float, float]:
    """The (train, val, test) fractions, once the split's method and sizes are valid."""
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
    if grouped and not by_region:
        raise SceneSpecError("groups apply to patch collections", key="group",
                             hint='split a scene in spatial blocks: split = "blocked"')
    return f_train, f_val, f_test


def _check_fold_settings(
    folds: int | str | None, fold: int | None, fold_role: str, *, grouped: bool,
    test_from: str | None, val_listed: bool,
) -> None:
    """Raise unless the fold settings fit the split (groups, split lists, test groups)."""
    logo = folds == "groups"
    if logo and not grouped:
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
    if folds is not None and fold_role == "validation" and val_listed:
        raise SceneSpecError("the split lists fix validation, so there is nothing to fold",
                             key="folds", hint="drop folds, or drop the val list")


def _inner_folds(inner_folds: int | str | None, inner_fold: int | None,
                 folds: int | str | None, fold_role: str, *, grouped: bool
                 ) -> tuple[int | str, int] | None:
    """``(inner_folds, inner_fold)`` once valid, or None for no nested folds."""
    if inner_folds is None:
        if inner_fold is not None:
            raise SceneSpecError(f"inner_fold = {inner_fold!r} needs inner_folds",
                                 key="inner_fold", hint="pass inner_folds beside it")
        return None
    if folds is None or fold_role != "test":
        raise SceneSpecError(
            "inner folds deal the units outside an outer test fold, and this split has none",
            key="inner_folds", hint='set folds and fold_role = "test", or use folds alone')
    if inner_folds == "groups" and not grouped:
        raise SceneSpecError('inner_folds = "groups" (leave one group out) needs groups',
                             key="inner_folds", hint="declare group = {...}, or give a number")
    if inner_folds != "groups":
        _check_folds(inner_folds, inner_fold, "validation")
    return inner_folds, inner_fold or 0


def _groups_of_splits(
    pairs: Sequence[tuple[tuple[Tile, tuple[int, int, int]], int, int]], groups: Sequence[str]
) -> dict[str, list[str]]:
    """The groups with tiles in each split."""
    region_codes: dict[str, set[int]] = {}
    for (_, (k, _, _)), code, _ in pairs:
        region_codes.setdefault(groups[k], set()).add(code)
    return {name: sorted(g for g, c in region_codes.items() if code in c)
            for code, name in enumerate(("train", "val", "test"))}


