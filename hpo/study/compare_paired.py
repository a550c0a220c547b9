"""Two variants of a comparison, paired on the same test tiles and training seeds.

A comparison's test split is one sample of places: on the synthetic scene's blocked split
it holds 14 landslides, so which slides happen to fall there moves every variant's F1
as much as the training seed does. The mean ± std over seeds shows only the second. Here
the difference of two variants' F1 gets a bootstrap interval over both: test tiles drawn
again with replacement (whole blocks or patches where the split holds those out; within
each fold, where the comparison has outer folds) and seed pairs drawn again, the two
variants always scored on the same draw.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hpo.study.compare import CompareSettings, split_label
from hpo.study.compare_steps import probs_path
from hpo.study.prepare import prepare_final_data
from hpo.study.scene import data_section
from hpo.study.schema import StudySpec
from networks.metrics import log_odds as logit

ROUNDS = 4000
"""Bootstrap draws: the interval's ends then move by about 0.002 F1 between seeds."""


def tile_confusion(scores: np.ndarray, labels: np.ndarray, tile_pixels: Sequence[int],
                   threshold: float | None) -> np.ndarray:
    """Per test tile: true positives, false positives and false negatives.

    Args:
        scores: 1-D log-odds of the split's valid pixels, in tile order
            (``networks.split_log_odds``).
        labels: 1-D bool labels aligned with ``scores``.
        tile_pixels: Valid pixels of each tile, in the same order.
        threshold: The run's decision threshold, a probability (``None``: 0.5).

    Returns:
        ``(tiles, 3)`` int64 counts.

    Raises:
        ValueError: The tiles' pixels do not add up to the scores'.
    """
    sizes = np.asarray(tile_pixels, dtype=np.int64)
    if sizes.sum() != scores.size:
        raise ValueError(f"{scores.size} scored pixels, but the tiles hold {sizes.sum()}: "
                         "the split changed since the runs were scored")
    tile = np.repeat(np.arange(sizes.size), sizes)
    called = scores > logit(0.5 if threshold is None else threshold)
    labels = labels.astype(bool)

    def per_tile(mask: np.ndarray) -> np.ndarray:
        return np.bincount(tile[mask], minlength=sizes.size)

    tp = per_tile(called & labels)
    return np.stack([tp, per_tile(called) - tp, per_tile(labels) - tp], axis=1)


def _f1(counts: np.ndarray) -> np.ndarray:
    tp, fp, fn = counts[..., 0], counts[..., 1], counts[..., 2]
    denominator = 2 * tp + fp + fn
    return np.divide(2 * tp, denominator, out=np.zeros(denominator.shape, float),
                     where=denominator > 0)


def paired_f1_difference(
    reference: Mapping[Any, Sequence[np.ndarray]],
    other: Mapping[Any, Sequence[np.ndarray]],
    *,
    rounds: int = ROUNDS,
    seed: int = 0,
) -> dict[str, float]:
    """Mean F1 of ``other`` minus ``reference``, with its 95 % bootstrap interval.

    Args:
        reference: Per fold (any key; one key without outer folds), the per-tile counts
            of :func:`tile_confusion` of each seed's run, in seed order.
        other: The same for the other variant: same folds, seeds and tiles.
        rounds: Bootstrap draws.
        seed: Seed of the draws.

    Returns:
        ``{"mean", "low", "high", "runs", "tiles"}``: the difference of the mean F1 over
        every (fold, seed) run, and the 2.5 and 97.5 percentiles of its draws.

    Raises:
        ValueError: The two variants do not share folds, seeds or tiles.
    """
    if set(reference) != set(other):
        raise ValueError(f"folds differ: {sorted(reference)} and {sorted(other)}")
    rng = np.random.default_rng(seed)
    point, draws, runs, tiles = [], [], 0, 0
    for fold in reference:
        a, b = np.asarray(reference[fold]), np.asarray(other[fold])
        if a.shape != b.shape:
            raise ValueError(f"fold {fold}: runs x tiles {a.shape[:2]} against {b.shape[:2]}")
        n_seeds, n_tiles = a.shape[:2]
        point.append(_f1(b.sum(axis=1)) - _f1(a.sum(axis=1)))
        weights = rng.multinomial(n_tiles, np.full(n_tiles, 1 / n_tiles), size=rounds)
        pick = rng.integers(0, n_seeds, size=(rounds, n_seeds))
        # (rounds, seeds, 3): each drawn seed's counts over the drawn tiles
        diff = (_f1(np.einsum("rt,stk->rsk", weights, b))
                - _f1(np.einsum("rt,stk->rsk", weights, a)))
        draws.append(np.take_along_axis(diff, pick, axis=1))
        runs, tiles = runs + n_seeds, tiles + n_tiles
    total = np.concatenate(draws, axis=1).mean(axis=1)
    low, high = np.percentile(total, [2.5, 97.5])
    return {"mean": float(np.concatenate(point).mean()), "low": float(low),
            "high": float(high), "runs": runs, "tiles": tiles}


def split_test_units(spec: StudySpec, data: Mapping[str, Any]) -> tuple[list[int], list[int]]:
    """Each test tile's valid pixels (in the order runs scored them) and sampling unit.

    The unit is what the split holds out whole (``data.Cube.units_of``): its group,
    patch or block, else the tile itself.

    Args:
        spec: The compared study.
        data: The split's ``[data]`` overrides (and outer fold).

    Returns:
        ``(pixels, unit)``, one entry per test tile; units numbered from 0.
    """
    split = dataclasses.replace(spec, data={**spec.data, **data})
    final = prepare_final_data(data_section(split), spec.base_dir, seed=spec.seed)
    cube, tiles = final.cube, final.test_set.tiles
    return ([int(np.count_nonzero(cube.valid[t.slices])) for t in tiles],
            cube.units_of(tiles, final.splits.info))


def _by_unit(counts: np.ndarray, unit: Sequence[int]) -> np.ndarray:
    """Per-tile counts summed over each unit's tiles: the bootstrap draws whole units."""
    out = np.zeros((max(unit) + 1, counts.shape[1]), counts.dtype)
    np.add.at(out, np.asarray(unit), counts)
    return out


def paired_against(
    spec: StudySpec,
    settings: CompareSettings,
    rows: Sequence[Mapping[str, Any]],
    reference: str,
    folder_of: Callable[[str, str], Path],
) -> list[dict[str, Any]]:
    """Every variant's test F1 against ``reference``'s, paired by tile and seed.

    Args:
        spec: The compared study.
        settings: The comparison's settings (its splits and outer folds).
        rows: Its runs (``compare.json``'s ``rows``: split, fold, variant, seed, threshold).
        reference: The variant the others are measured against.
        folder_of: ``(split label, variant) ->`` the folder whose ``probs`` hold the
            variant's runs (one comparison's: always its own folder).

    Returns:
        Per split and variant: :func:`paired_f1_difference`'s figures (its ``tiles``
        are the units drawn: blocks, patches or tiles, see :func:`split_test_units`),
        with ``split``, ``variant`` and ``reference``. Variants whose runs kept no
        probabilities are left out.
    """
    out = []
    for override in settings.splits:
        label = split_label(override)
        folds = list(range(settings.folds)) if settings.folds else [None]
        runs = [r for r in rows if r["split"] == label]
        variants = sorted({r["variant"] for r in runs} - {reference})
        counts: dict[str, dict[Any, list[np.ndarray]]] = {}
        for fold in folds:
            data = dict(override) | ({"folds": settings.folds, "fold": fold,
                                      "fold_role": "test"} if fold is not None else {})
            pixels, unit = split_test_units(spec, data)
            for variant in [reference, *variants]:
                mine = sorted((r for r in runs if r["variant"] == variant and r["fold"] == fold),
                              key=lambda r: r["seed"])
                paths = [probs_path(folder_of(label, variant), label, fold, variant, r["seed"])
                         for r in mine]
                if not mine or not all(p.is_file() for p in paths):
                    continue
                loaded = [np.load(p) for p in paths]
                counts.setdefault(variant, {})[fold] = [
                    _by_unit(tile_confusion(f["test_log_odds"], f["test_label"], pixels,
                                            r["threshold"]), unit)
                    for f, r in zip(loaded, mine, strict=True)]
        if reference not in counts:
            continue
        for variant in variants:
            theirs = counts.get(variant, {})
            if set(theirs) == set(counts[reference]):
                out.append({"split": label, "variant": variant, "reference": reference,
                            **paired_f1_difference(counts[reference], theirs)})
    return out


__all__ = ["ROUNDS", "paired_against", "paired_f1_difference", "split_test_units",
           "tile_confusion"]
