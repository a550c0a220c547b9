"""A study's scene to data: the cube, its splits and the data sets tuning and training read.

The test split is never read while tuning: :func:`prepare_data` holds train and
validation only; :func:`prepare_final_data` is for ``hpo train``. The study file and its
scene are :mod:`hpo.study.scene`'s.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import data
from hpo.engine.errors import SpecError
from hpo.study.scene import SYNTHETIC_KEY, data_section
from hpo.study.schema import StudySpec

THIN_VALIDATION = 20
"""Landslides in the validation split below which a single-run study gets a note: at 20,
one landslide found or missed is about 5 % of its recall."""


@dataclass
class TuningData:
    """The data a search trains on: prepared once, train and validation only.

    Attributes:
        cube: The prepared (cached, memory-mapped) cube.
        splits: The splits, as ``for_tuning()`` hands them out (test withheld).
        norm: Normalization statistics of the training tiles only.
        train_set: Training data set.
        val_set: Validation data set.
        folds: With ``[tuning] folds``: ``(train_set, val_set)`` of every fold, each
            normalized on its own training tiles (empty otherwise).
    """

    cube: Any
    splits: Any
    norm: dict[str, Any]
    train_set: Any
    val_set: Any
    folds: list[tuple[Any, Any]] = field(default_factory=list)

    def describe(self) -> str:
        """One line: cube shape, split sizes and the landslides validation scores on."""
        s, t, h, w = self.cube.shape
        info = self.splits.info
        pixels, regions = self.validation_landslides
        held = (f"{len(self.folds)} validation folds hold" if self.folds
                else "validation holds")
        return (
            f"cube {s} sources x {t} dates x {h} x {w} px; {info.get('patch_size')} px "
            f"tiles, split {info.get('method')}: {len(self.splits.train)} train, "
            f"{len(self.splits.val)} val (test withheld); {held} {regions} landslides "
            f"({pixels} px)"
        )

    @functools.cached_property
    def validation_landslides(self) -> tuple[int, int]:
        """Landslide pixels and landslides that tuning validates on (over every fold).

        Counted once: the data line and the thin-validation note both read them.
        """
        sets = [val for _, val in self.folds] or [self.val_set]
        counts = [v.landslides() for v in sets]
        return sum(p for p, _ in counts), sum(r for _, r in counts)

    def thin_validation(self, repeats: int) -> str | None:
        """A note when one trial's score rests on few landslides and nothing replicates it.

        Args:
            repeats: Replicates per trial (``[tuning] repeats``).

        Returns:
            The note, or None when validation holds enough landslides or trials replicate.
        """
        pixels, regions = self.validation_landslides
        if repeats > 1 or not pixels or regions >= THIN_VALIDATION:
            return None
        return (f"validation holds {regions} landslides ({pixels} px): one found or missed "
                f"moves a trial's score by several points, so single runs rank "
                f"configurations partly by luck; [tuning] folds = 3 (or repeats = 3) "
                f"measures each trial more than once")


def prepare_data(spec: StudySpec) -> TuningData:
    """Prepare the study's data once: cube (cached), splits, training-only normalization.

    Splits come from the ``[data]`` section (``patch_size``, ``split``, ``fractions``,
    ``seed``; the study's seed when the section has none). The test split is never read.

    Args:
        spec: The study.

    Returns:
        The tuning data.

    Raises:
        data.DataError: The data cannot be read or hold no usable training tile.
    """
    cube, splits = _cube_and_splits(spec.data, spec.base_dir, spec.seed)
    splits = splits.for_tuning()
    norm = cube.norm_stats(splits.train)
    return TuningData(
        cube=cube,
        splits=splits,
        norm=norm,
        train_set=cube.dataset(splits.train, norm=norm),
        val_set=cube.dataset(splits.val, norm=norm, context=cube.context),
        folds=fold_sets(cube, spec),
    )


def fold_sets(cube: Any, spec: StudySpec) -> list[tuple[Any, Any]]:
    """Training and validation sets of every tuning fold (the test split stays out).

    ``Cube.fold_splits`` deals the split's own units (patches, groups, spatial blocks) and
    holds the fold out as validation whatever the study's ``fold_role``, so every fold
    keeps the plain split's test split.

    Args:
        cube: The study's prepared cube.
        spec: The study; its ``[tuning] folds`` says how many.

    Returns:
        ``(train_set, val_set)`` per fold, each normalized on its own training tiles;
        empty without ``[tuning] folds``.
    """
    if not spec.tuning.folds:
        return []
    seed = None if "seed" in spec.data else spec.seed
    sets = []
    for splits in cube.fold_splits(spec.tuning.folds, seed=seed):
        splits = splits.for_tuning()
        norm = cube.norm_stats(splits.train)
        sets.append((cube.dataset(splits.train, norm=norm),
                     cube.dataset(splits.val, norm=norm, context=cube.context)))
    return sets


def _cube_and_splits(section: Mapping[str, Any], base_dir: Path, seed: int) -> tuple[Any, Any]:
    """The cached cube and its full splits; ``seed`` when the section names none.

    Tuning and final training both come through here, so ``hpo train`` tests on exactly
    the tiles tuning never saw.
    """
    section = {k: v for k, v in section.items() if k != SYNTHETIC_KEY}
    cube = data.prepare(section, Path(base_dir))
    splits = cube.splits(seed=None if "seed" in section else seed)
    if not splits.train or not splits.val:
        raise data.DataError(
            f"the split leaves {len(splits.train)} training and {len(splits.val)} validation tiles",
            key="data.fractions",
            hint="use a larger scene, smaller patch_size or other fractions",
        )
    return cube, splits


TRAIN_ON = ("train", "train+val")
"""What ``hpo train`` may fit on: the training split, or training and validation."""


@dataclass
class FinalData:
    """The data of a final training run: train (or train + val), val and the test split.

    Attributes:
        cube: The prepared (cached, memory-mapped) cube.
        splits: The full splits (the same tiles tuning used, test included).
        train_on: ``"train"`` or ``"train+val"``.
        norm: Normalization statistics of the tiles trained on.
        train_set: The data set trained on.
        val_set: Validation data set (per-epoch metrics, threshold choice).
        test_set: Test data set, read only for the final evaluation.
    """

    cube: Any
    splits: Any
    train_on: str
    norm: dict[str, Any]
    train_set: Any
    val_set: Any
    test_set: Any

    @property
    def source_names(self) -> list[str]:
        """The input sources, in the order the data sets hand them to the model."""
        return list(self.train_set.names)

    def describe(self) -> str:
        """One line: cube shape and the tiles of each split."""
        s, t, h, w = self.cube.shape
        return (
            f"cube {s} sources x {t} dates x {h} x {w} px; {self.splits.info.get('patch_size')} "
            f"px tiles: {len(self.train_set)} trained on ({self.train_on}), "
            f"{len(self.val_set)} val, {len(self.test_set)} test"
        )


def prepare_final_data(
    section: Mapping[str, Any], base_dir: str | Path, *, seed: int, train_on: str = "train"
) -> FinalData:
    """Prepare the data of a final training run from a ``[data]`` section (e.g. an export's).

    The cube and splits are the ones tuning used (same section, same ``seed``); the
    normalization is measured on the tiles trained on only, so nothing of the test split
    leaks into it.

    Args:
        section: The ``[data]`` section (a ``synthetic`` table is ignored).
        base_dir: The folder its relative paths refer to.
        seed: The study's seed (the split's when the section has no ``seed``).
        train_on: ``"train"`` or ``"train+val"``.

    Returns:
        The final data.

    Raises:
        SpecError: Unknown ``train_on``.
        data.DataError: The data cannot be read or the split leaves no test tile.
    """
    if train_on not in TRAIN_ON:
        raise SpecError(f"train_on {train_on!r}", hint=f"use one of {', '.join(TRAIN_ON)}")
    cube, splits = _cube_and_splits(section, Path(base_dir), seed)
    if not splits.test:
        raise data.DataError(
            "the split leaves no test tile",
            key="data.fractions",
            hint="give the test split a fraction > 0 (e.g. [0.6, 0.1, 0.3])",
        )
    tiles = list(splits.train) + (list(splits.val) if train_on == "train+val" else [])
    norm = cube.norm_stats(tiles)
    return FinalData(
        cube=cube,
        splits=splits,
        train_on=train_on,
        norm=norm,
        train_set=cube.dataset(tiles, norm=norm),
        val_set=cube.dataset(splits.val, norm=norm, context=cube.context),
        test_set=cube.dataset(splits.test, norm=norm, context=cube.context),
    )


def validation_of(spec: StudySpec) -> dict[str, Any]:
    """Which validation the study's tuning uses (``data.validation_summary``).

    Validation follows the test split's kind unless the study asks otherwise: grouped when
    the test holds out groups, blocked (with a buffer) when it holds out blocks; a
    ``warning`` says when random validation faces such a shifted test.
    """
    return data.validation_summary(data_section(spec), spec.base_dir)


def validation_lines(validation: Mapping[str, Any]) -> list[str]:
    """``validation_of``'s answer as lines for ``hpo tune --dry-run`` and ``hpo status``.

    Returns:
        One line, and a second starting ``warning:`` when validation cannot see the shift.
    """
    unit = "tiles" if validation["test"] in ("tiles", "blocks") else "patches"
    how = {"grouped": "whole groups held out", "blocked": "spatial blocks held out",
           "random": f"{unit} drawn at random"}[validation["validation"]]
    why = "asked for" if validation["explicit"] else "the default"
    test = validation["test"]
    held = "is a split list" if test == "split file" else f"holds out {test}"
    line = f"validation: {validation['validation']} ({how}; {why}); the test split {held}"
    if "buffer" in validation:
        line += f"; buffer {validation['buffer']} px between splits"
    lines = [line]
    if validation.get("warning"):
        lines.append(f"warning: {validation['warning']}")
    return lines


__all__ = [
    "THIN_VALIDATION",
    "FinalData",
    "TRAIN_ON",
    "TuningData",
    "fold_sets",
    "prepare_data",
    "prepare_final_data",
    "validation_lines",
    "validation_of",
]
