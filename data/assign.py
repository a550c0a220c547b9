"""Dealing split units (tiles, blocks, patches, groups) into train / val / test and folds.

:func:`data.splits.split_tiles` checks the settings and chooses the units; this module
deals them (shuffled, or evenly across a landslide-share ranking) and keeps the splits of
a blocked scene apart.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from data.errors import SceneSpecError
from data.tiles import Tile

__all__ = ["EXCLUDED", "FREE", "Unit", "assign_general", "assign_units", "blocked_units",
           "cut", "keep_apart", "region_units"]

FREE, EXCLUDED = -9, -1
"""Split codes besides 0 (train), 1 (val), 2 (test): not dealt yet; left out (no list)."""


@dataclass(frozen=True)
class Unit:
    """Tiles that go to one split together (one tile, one block or one patch)."""

    tiles: list[tuple[Tile, tuple[int, int, int]]] = field(default_factory=list)


def cut(n: int, val: float, test: float) -> tuple[int, int]:
    """Unit counts for val and test: rounded, at least one each when asked for and possible."""
    n_test = round(n * test)
    n_val = round(n * val)
    if test > 0 and n_test == 0 and n >= 2:
        n_test = 1
    if val > 0 and n_val == 0 and n - n_test >= 2:
        n_val = 1
    return n_val, n_test


def blocked_units(
    tiles: list[tuple[Tile, tuple[int, int, int]]], block_size: int
) -> list[Unit]:
    """Group tiles into blocks of ``block_size`` x ``block_size`` tile positions."""
    groups: dict[tuple[int, int, int], Unit] = {}
    for tile, (k, i, j) in tiles:
        groups.setdefault((k, i // block_size, j // block_size), Unit()).tiles.append(
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


def region_units(tiles: list[tuple[Tile, tuple[int, int, int]]],
                  groups: Sequence[str] | None) -> list[Unit]:
    """One unit per region (patch), or per group of regions, in order of appearance."""
    units: dict[Any, Unit] = {}
    for tile, (k, i, j) in tiles:
        units.setdefault(groups[k] if groups is not None else k, Unit()).tiles.append(
            (tile, (k, i, j)))
    return list(units.values())


def _ranked(units: Sequence[Unit], rng: np.random.Generator,
            share: Callable[[Tile], float] | None) -> np.ndarray:
    """A shuffled order of ``units``, ranked by landslide share when stratifying."""
    order = rng.permutation(len(units))
    if share is not None:
        # the shuffle breaks ties in share at random
        shares = np.array([np.mean([share(t) for t, _ in units[u].tiles]) for u in order])
        order = order[np.argsort(shares, kind="stable")]
    return order


def assign_units(units: list[Unit], rng: np.random.Generator,
                  share: Callable[[Tile], float] | None, f_train: float, f_val: float,
                  f_test: float, folds: int | str | None, fold: int | None, fold_role: str,
                  what: str, inner: tuple[int | str, int] | None = None,
                  ) -> tuple[np.ndarray, dict[str, int]]:
    """The split of each unit when test and validation hold out the same kind of unit.

    ``inner`` (folds, fold), with ``fold_role="test"``: validation is that fold of the
    units outside the test fold (nested cross-validation), not a fraction of them.
    Returns the codes and the resolved fold counts (``folds``, ``inner_folds``).
    """
    order = _ranked(units, rng, share)
    split_of_unit = np.zeros(len(units), np.int8)
    spread = share is not None
    counts: dict[str, int] = {}
    if folds is not None and fold_role == "test":
        test, counts["folds"] = _one_fold(order, folds, fold, rng, spread, what, "")
        split_of_unit[test] = 2
        rest = order[~np.isin(order, test)]
        if inner is None:
            n_val, _ = cut(len(rest), f_val / (f_train + f_val), 0.0)
            split_of_unit[_take(rest, n_val, rng, spread)] = 1
        else:
            chosen, counts["inner_folds"] = _one_fold(rest, *inner, rng, spread, what,
                                                      " outside the test fold")
            split_of_unit[chosen] = 1
    else:
        # with folds, validation is a fold of the rest, not a fraction of it
        n_val, n_test = cut(len(units), 0.0 if folds is not None else f_val, f_test)
        test = _take(order, n_test, rng, spread)
        split_of_unit[test] = 2
        rest = order[~np.isin(order, test)]
        if folds is None:
            split_of_unit[_take(rest, n_val, rng, spread)] = 1
        else:
            chosen, counts["folds"] = _one_fold(rest, folds, fold, rng, spread, what,
                                                " outside the test split")
            split_of_unit[chosen] = 1
    return split_of_unit, counts


def _one_fold(order: np.ndarray, folds: int | str, fold: int | None, rng: np.random.Generator,
              spread: bool, what: str, where: str) -> tuple[np.ndarray, int]:
    """The units of fold ``fold`` when ``order`` is dealt into ``folds`` folds, and the count."""
    n_folds = len(order) if folds == "groups" else int(folds)
    _enough(len(order), n_folds, fold, what, where)
    return order[_fold_labels(len(order), n_folds, rng, spread) == (fold or 0)], n_folds


def _enough(n: int, folds: int, fold: int | None, what: str, where: str) -> None:
    if n < max(folds, 2):
        raise SceneSpecError(
            f"{n} {what}{where} cannot make {folds} folds", key="folds",
            hint="use fewer folds" + (" or a smaller test fraction" if where else ""))
    if fold is not None and fold >= folds:
        raise SceneSpecError(f"fold must be an integer in [0, {folds}), got {fold!r}",
                             key="fold", hint=f"there are {folds} folds: fold = 0 ... "
                             f"{folds - 1}")


def assign_general(
    tiles: list[tuple[Tile, tuple[int, int, int]]], units: list[Unit], *, by_region: bool,
    groups: Sequence[str] | None, lists: Mapping[str, set[int]],
    test_groups: Sequence[str] | None, grouped_val: bool, rng: np.random.Generator,
    share: Callable[[Tile], float] | None, fractions: tuple[float, float, float],
    folds: int | str | None, fold: int | None, fold_role: str, what: str,
    inner: tuple[int | str, int] | None = None,
) -> tuple[list[tuple[tuple[Tile, tuple[int, int, int]], int, int]], dict[str, int]]:
    """Split lists, test groups, or validation finer than the test's units.

    Works on *fine* units (a patch, or a tile of a blocked scene) inside the test's
    *coarse* units (a group, or a block). Returns (pair, split, split of its coarse unit
    for the block rule) in tile order, and the resolved fold counts (``folds``, and
    ``inner_folds`` with ``inner``, as in :func:`assign_units`).
    """
    fine, coarse_of = _fine_units(units, by_region)
    region = [f.tiles[0][1][0] for f in fine]
    code = np.full(len(fine), FREE, np.int8)
    for name, split in (("test", 2), ("val", 1), ("train", 0)):
        for f, k in enumerate(region):
            if k in lists.get(name, ()):
                code[f] = split
    free = code == FREE
    if "test" in lists and "train" in lists:
        code[free] = EXCLUDED  # a patch in no list is left out
    elif "train" in lists:
        code[free] = 2  # the train (and val) lists name everything that is not test
    counts: dict[str, int] = {}
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
        cands = sorted({coarse_of[f] for f in range(len(fine)) if code[f] == FREE})
        order = np.array(cands, int)[_ranked([units[c] for c in cands], rng, share)] \
            if cands else np.array([], int)
        if folds is not None and fold_role == "test":
            chosen_units, counts["folds"] = _one_fold(order, folds, fold, rng,
                                                      share is not None, what, "")
        else:
            chosen_units = _take(order, cut(len(cands), 0.0, fractions[2])[1], rng,
                                 share is not None)
        in_test = np.isin(coarse_of, chosen_units) & (code == FREE)
        code[in_test] = 2
    # validation: whole coarse units (grouped) or fine units, from the training pool
    pool = [f for f in range(len(fine))
            if code[f] == FREE or (code[f] == 0 and "val" not in lists)]
    for f in pool:
        code[f] = 0
    if "val" not in lists and pool:
        val_folds = (folds, fold) if fold_role == "validation" and folds is not None else inner
        dealt = _deal_validation(
            code, pool, fine, coarse_of, grouped_val=grouped_val, rng=rng, share=share,
            fractions=fractions, folds=val_folds,
            unit_word="groups" if grouped_val else "patches" if by_region else "tiles")
        if dealt is not None:
            counts["folds" if val_folds is not inner else "inner_folds"] = dealt
    # the block rule sees a blocked scene's non-test blocks as one pool
    block = [int(code[f]) if by_region else (2 if code[f] == 2 else 0) for f in range(len(fine))]
    where = {pair[0]: (int(code[f]), block[f]) for f in range(len(fine)) for pair in fine[f].tiles}
    return [(pair, *where[pair[0]]) for pair in tiles], counts


def _fine_units(units: Sequence[Unit], by_region: bool) -> tuple[list[Unit], list[int]]:
    """The fine units (patches, or tiles of a blocked scene) and their coarse unit's index."""
    fine: list[Unit] = []
    coarse_of: list[int] = []
    for c, unit in enumerate(units):
        subs = region_units(unit.tiles, None) if by_region else [Unit([p]) for p in unit.tiles]
        fine += subs
        coarse_of += [c] * len(subs)
    return fine, coarse_of


def _deal_validation(
    code: np.ndarray, pool: Sequence[int], fine: Sequence[Unit], coarse_of: Sequence[int], *,
    grouped_val: bool, rng: np.random.Generator, share: Callable[[Tile], float] | None,
    fractions: tuple[float, float, float], folds: tuple[int | str, int | None] | None,
    unit_word: str,
) -> int | None:
    """Mark validation (code 1) in the training pool: whole coarse units or fine ones.

    With ``folds`` (count, fold) one fold validates; returns the fold count then.
    """
    f_train, f_val, _ = fractions
    spread = share is not None
    members: dict[int, list[int]] = {}
    for f in pool:
        members.setdefault(coarse_of[f] if grouped_val else f, []).append(f)
    keys = list(members)
    val_units = [Unit([p for f in members[key] for p in fine[f].tiles]) for key in keys]
    order = _ranked(val_units, rng, share)
    n_folds = None
    if folds is not None:
        chosen_units, n_folds = _one_fold(order, *folds, rng, spread, unit_word,
                                          " outside the test split")
    else:
        chosen_units = _take(order, cut(len(keys), f_val / (f_train + f_val), 0.0)[0], rng,
                             spread)
    for u in chosen_units:
        for f in members[keys[int(u)]]:
            code[f] = 1
    return n_folds


def keep_apart(pairs: Sequence[tuple[tuple[Tile, tuple[int, int, int]], int, int]],
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
