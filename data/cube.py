"""The cube: (source, time, H, W) values, valid mask, labels, names, grid; tiles and splits."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window

from data.errors import EmptyLabelError, SceneSpecError
from data.normalize import ROBUST_CLIP, norm_stats
from data.splits import SplitResult, Splits, split_tiles, validation_plan
from data.store import META_FILE, load_arrays
from data.tiles import Region, Tile, make_tiles

__all__ = ["Cube", "CubeValues", "TARGETS"]

TARGETS = ("last", "new")
_SPLIT_DEFAULTS: dict[str, Any] = {
    "patch_size": 64, "overlap": 0, "split": "random", "fractions": (0.6, 0.1, 0.3),
    "block_size": 4, "seed": 0, "folds": None, "fold": None,
    "fold_role": "validation", "stratify": False, "validation": "auto", "buffer": 0,
}
WindowLike = Tile | Window | tuple[slice, slice]


class CubeValues:
    """Read-only ``(S, T, H, W)`` view of a cube's values; static sources are broadcast over T.

    Indexing reads only the requested part, e.g. ``cube.values[:, -1, 0:64, 0:64]``;
    ``np.asarray(cube.values)`` materializes everything.
    """

    def __init__(self, cube: Cube) -> None:
        self._cube = cube

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """(S, T, H, W)."""
        return self._cube.shape

    @property
    def dtype(self) -> np.dtype[Any]:
        """float32."""
        return np.dtype(np.float32)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        key = key + (slice(None),) * (4 - len(key))
        s_key, t_key, r_key, c_key = key
        idx = list(range(self.shape[0]))[s_key]
        rows = r_key if isinstance(r_key, slice) else slice(r_key, r_key + 1)
        cols = c_key if isinstance(c_key, slice) else slice(c_key, c_key + 1)
        names = [self._cube.source_names[i] for i in np.atleast_1d(idx)]
        out = self._cube.read((rows, cols), sources=names)[:, t_key]
        if not isinstance(c_key, slice):
            out = out[..., 0]
        if not isinstance(r_key, slice):
            out = out[..., 0, :] if isinstance(c_key, slice) else out[..., 0]
        return out[0] if isinstance(idx, int) else out

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[:, :, :, :]
        return out if dtype is None else out.astype(dtype)


class Cube:
    """An aligned multi-source, multi-date cube.

    A gridded scene is one (H, W) region with a CRS and transform; a patch collection
    (e.g. Landslide4Sense) stacks its patches vertically into one (N*h, w) array with
    ``patch_shape = (h, w)`` and no grid, so tiles, splits and datasets work the same way
    (tiles never cross a patch, and splits keep each patch whole).

    Args:
        arrays: ``dynamic`` (S_dyn, T, H, W), ``static`` (S_static, 1, H, W),
            ``valid`` (H, W) bool, ``labels`` (T_labels, H, W) uint8.
        meta: Description (see ``Cube.meta``).
        target: ``last`` (every landslide visible at the last labelled date), ``new``
            (only those new since the previous labelled date) or a label date name.
        options: Split defaults from the study file (patch_size, split, ...).
        path: Directory the arrays are memory-mapped from, None when in memory.
    """

    def __init__(self, arrays: dict[str, Any], meta: dict[str, Any], *, target: str = "last",
                 options: dict[str, Any] | None = None, path: Path | None = None) -> None:
        self._dynamic = arrays["dynamic"]
        self._static = arrays["static"]
        self._label_stack = arrays["labels"]
        self.valid: np.ndarray = arrays["valid"]
        self.meta = meta
        self.path = path
        self.options = dict(options or {})
        self.source_names: list[str] = [s["name"] for s in meta["sources"]]
        self.source_kinds: list[str] = [s["kind"] for s in meta["sources"]]
        self.source_types: list[str] = [s["type"] for s in meta["sources"]]
        self._slots: list[tuple[str, int]] = [(s["store"], s["index"]) for s in meta["sources"]]
        self.dates: list[str] = list(meta["dates"])
        self.label_dates: list[str] = list(meta["label_dates"])
        self.hash: str = meta.get("hash", "")
        grid = meta.get("grid")
        self.crs: CRS | None = CRS.from_wkt(grid["crs"]) if grid else None
        self.transform: Affine | None = Affine.from_gdal(*grid["transform"]) if grid else None
        ps = meta.get("patch_shape")
        self.patch_shape: tuple[int, int] | None = tuple(ps) if ps else None
        self.target = target
        self.labels: np.ndarray | None = self._target_labels(target)

    # ----------------------------------------------------------------- construction
    @classmethod
    def load(cls, directory: str | Path, *, target: str = "last",
             options: dict[str, Any] | None = None) -> Cube:
        """Open a cube stored by a build, memory-mapped read-only.

        Args:
            directory: The cube's directory (holds meta.json and .npy files).
            target: See ``Cube``.
            options: See ``Cube``.

        Returns:
            The cube.
        """
        directory = Path(directory)
        meta = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
        return cls(load_arrays(directory), meta, target=target, options=options, path=directory)

    def __reduce__(self) -> tuple[Any, ...]:
        # A cached cube travels to worker processes as its path, not as copies of its arrays.
        if self.path is not None:
            return (Cube.load, (self.path,), {"target": self.target, "options": self.options})
        return object.__reduce__(self)

    def __setstate__(self, state: dict[str, Any]) -> None:
        if set(state) == {"target", "options"}:
            self.options = state["options"]
            if state["target"] != self.target:
                self.target = state["target"]
                self.labels = self._target_labels(self.target)
        else:
            self.__dict__.update(state)

    def with_target(self, target: str) -> Cube:
        """The same data with another target (labels are recomputed, values shared)."""
        arrays = {"dynamic": self._dynamic, "static": self._static,
                  "labels": self._label_stack, "valid": self.valid}
        return Cube(arrays, self.meta, target=target, options=self.options, path=self.path)

    def _target_labels(self, target: str) -> np.ndarray | None:
        stack = self._label_stack
        if stack.shape[0] == 0:
            return None
        if target == "last":
            return np.asarray(stack[-1])
        if target == "new":
            if stack.shape[0] < 2:
                raise SceneSpecError(
                    "target 'new' needs labels at two or more dates", file=self.label_origin,
                    key="target", hint="use target = \"last\" or add an earlier label date")
            return (np.asarray(stack[-1]) > np.asarray(stack[-2])).astype(np.uint8)
        if target in self.label_dates:
            return np.asarray(stack[self.label_dates.index(target)])
        raise SceneSpecError(f"target {target!r} is unknown", key="target",
                             hint=f"use one of {list(TARGETS)} or a label date {self.label_dates}")

    # ----------------------------------------------------------------- description
    @property
    def shape(self) -> tuple[int, int, int, int]:
        """(S, T, H, W)."""
        return (len(self.source_names), len(self.dates), *self.valid.shape)

    @property
    def values(self) -> CubeValues:
        """The (S, T, H, W) float32 values as a lazily read view (NaN = nodata)."""
        return CubeValues(self)

    @property
    def label_stack(self) -> np.ndarray:
        """Per-date cumulative label masks (T_labels, H, W) uint8, dates ``label_dates``."""
        return self._label_stack

    @property
    def label_origin(self) -> str | None:
        """The label file(s) the masks came from, for messages."""
        return self.meta.get("label_origin")

    @property
    def regions(self) -> list[Region]:
        """Rectangles tiles never cross: the grid, or each patch of a collection, in order.

        A packed collection (``meta["layout"] == "packed"``) keeps each patch at its own
        size somewhere on the canvas; an older one stacks equal slots of ``patch_shape``.
        """
        h, w = self.valid.shape
        if self.patch_shape is None:
            return [Region(0, 0, h, w)]
        if self.meta.get("layout") == "packed":
            return [Region(p["row"], p["col"], *p["shape"]) for p in self.meta["patches"]]
        ph, pw = self.patch_shape
        return [Region(r, 0, ph, pw) for r in range(0, h, ph)]

    def patch_index(self, tile: Tile) -> int:
        """The index of the patch (in ``regions`` and ``meta["patch_ids"]``) holding ``tile``.

        Raises:
            ValueError: The cube is not a patch collection, or no patch holds the tile.
        """
        if self.patch_shape is None:
            raise ValueError("a gridded scene has no patches")
        if self.meta.get("layout") != "packed":
            return tile.row // self.patch_shape[0]
        if getattr(self, "_bounds", None) is None:
            self._bounds = np.array([tuple(r) for r in self.regions], np.int64).reshape(-1, 4)
        r, c, h, w = self._bounds.T
        hit = np.flatnonzero((r <= tile.row) & (tile.row < r + h)
                             & (c <= tile.col) & (tile.col < c + w))
        if not hit.size:
            raise ValueError(f"no patch holds {tile}")
        return int(hit[0])

    def units_of(self, tiles: Sequence[Tile], info: Mapping[str, Any]) -> list[int]:
        """Which unit of a split each tile belongs to: what the split's test holds out whole.

        Tiles of one group, patch or block share their landslides, so a resampling of a
        split's scores (a bootstrap) draws these units, not the tiles.

        Args:
            tiles: Tiles of one split.
            info: That split's ``Splits.info`` (its ``test_by`` and resolved settings).

        Returns:
            One unit number per tile, from 0 in order of first appearance: its group,
            patch or block, else the tile itself.
        """
        by = info.get("test_by")
        if by == "blocks":
            step = (info["patch_size"] - info["overlap"]) * info["block_size"]
            keys: list[Any] = [(t.row // step, t.col // step) for t in tiles]
        elif by in ("groups", "patches"):
            keys = [self.patch_index(t) for t in tiles]
            groups = self._patch_splits()[0] if by == "groups" else None
            if groups is not None:
                keys = [groups[k] for k in keys]
        else:
            keys = list(range(len(tiles)))
        numbers = {key: n for n, key in enumerate(dict.fromkeys(keys))}
        return [numbers[key] for key in keys]

    def region_of(self, tile: Tile) -> Region:
        """The region (the grid, or a collection's patch) that holds ``tile``."""
        if self.patch_shape is None:
            return self.regions[0]
        if self.meta.get("layout") == "packed":
            return self.regions[self.patch_index(tile)]
        ph, pw = self.patch_shape
        return Region(tile.row // ph * ph, 0, ph, pw)

    def source_index(self, sources: Sequence[str] | str | None = None) -> list[int]:
        """Indices of a source selection.

        Args:
            sources: Names, or ``"optical"`` / ``"factor"`` / ``"all"``; None = the study
                file's ``select`` option, else all.

        Returns:
            Indices into ``source_names``, in the requested order.

        Raises:
            SceneSpecError: A name is unknown or the selection is empty.
        """
        if sources is None:
            sources = self.options.get("select", "all")
        if isinstance(sources, str):
            if sources == "all":
                return list(range(len(self.source_names)))
            if sources in ("optical", "factor"):
                idx = [i for i, k in enumerate(self.source_kinds) if k == sources]
                if not idx:
                    raise SceneSpecError(f"the cube has no {sources} source", key="select",
                                         hint=f"sources: {self.source_names}")
                return idx
            sources = [sources]
        unknown = [s for s in sources if s not in self.source_names]
        if unknown or not sources:
            raise SceneSpecError(f"unknown source(s) {unknown or '(none given)'}", key="select",
                                 hint=f"choose from {self.source_names}, 'optical' or 'factor'")
        return [self.source_names.index(s) for s in sources]

    # ----------------------------------------------------------------- reading
    def read(self, window: WindowLike, *, sources: Sequence[str] | str | None = None
             ) -> np.ndarray:
        """Read a window of values, static sources broadcast over the dates.

        Args:
            window: A ``Tile``, a rasterio ``Window`` or (row slice, col slice).
            sources: Selection as in ``source_index`` (default all).

        Returns:
            float32 (S, T, h, w), NaN where the input was nodata.
        """
        rows, cols = _slices(window)
        idx = self.source_index("all" if sources is None else sources)
        n_rows = len(range(*rows.indices(self.valid.shape[0])))
        n_cols = len(range(*cols.indices(self.valid.shape[1])))
        out = np.empty((len(idx), len(self.dates), n_rows, n_cols), np.float32)
        for k, i in enumerate(idx):
            store, j = self._slots[i]
            if store == "dynamic":
                out[k] = self._dynamic[j, :, rows, cols]
            else:
                out[k] = self._static[j, 0, rows, cols][None]
        return out

    # ----------------------------------------------------------------- tiles & splits
    def tiles(self, patch_size: int | None = None, overlap: int | None = None) -> list[Tile]:
        """Every tile that holds at least one valid pixel.

        Args:
            patch_size: Tile side (default: study option, else 64).
            overlap: Pixels shared by neighbours (default: study option, else 0).

        Returns:
            The tiles, row by row.
        """
        patch_size = self._option("patch_size", patch_size)
        overlap = self._option("overlap", overlap)
        return [t for t, _ in self._valid_tiles(patch_size, overlap)]

    def _valid_tiles(self, patch_size: int, overlap: int) -> list[tuple[Tile, Any]]:
        return [(t, pos) for t, pos in make_tiles(self.regions, patch_size, overlap)
                if self.valid[t.slices].any()]

    def _landslide_share(self, tile: Tile) -> float:
        assert self.labels is not None
        valid = self.valid[tile.slices]
        return float((self.labels[tile.slices] > 0)[valid].mean()) if valid.any() else 0.0

    def _option(self, name: str, value: Any) -> Any:
        if value is not None:
            return value
        return self.options.get(name, _SPLIT_DEFAULTS[name])

    def splits(
        self,
        patch_size: int | None = None,
        overlap: int | None = None,
        method: str | None = None,
        fractions: Sequence[float] | None = None,
        block_size: int | None = None,
        seed: int | None = None,
        folds: int | str | None = None,
        fold: int | None = None,
        fold_role: str | None = None,
        stratify: bool | None = None,
        validation: str | None = None,
        buffer: int | None = None,
        inner_folds: int | str | None = None,
        inner_fold: int | None = None,
    ) -> Splits:
        """Tile the cube and split the tiles into train / val / test.

        Every argument left None takes the study file's option (``patch_size``,
        ``overlap``, ``split``, ``fractions``, ``block_size``, ``seed``, ``folds``,
        ``fold``, ``fold_role``, ``stratify``, ``validation``, ``buffer``), else the
        default (64, 0, ``random``, (0.6, 0.1, 0.3), 4, 0, no folds, not stratified,
        ``auto``, the ``context``). A patch collection's groups, split lists and
        ``test_groups`` come from the study file (see :mod:`data.groups`).

        Args:
            patch_size: Tile side in pixels (a patch collection's tiles stay inside a patch).
            overlap: Pixels shared by neighbouring tiles.
            method: ``random`` (the paper's), ``blocked`` (spatial blocks; no pixel in two
                splits) or ``paper`` (7:3 train/test, val carved out of train).
            fractions: (train, val, test).
            block_size: Tiles per block side for ``blocked``.
            seed: Shuffling seed.
            folds: k-fold cross-validation: the validation units (groups, blocks, patches
                or tiles) outside the test split are dealt into ``folds`` folds;
                ``"groups"`` is one fold per group (see ``data.splits.split_tiles``).
            fold: The held-out fold (default 0).
            fold_role: ``validation`` (the held-out fold validates; test is fixed) or
                ``test`` (the held-out fold is the test split: outer cross-validation).
            stratify: Spread the units (patches, blocks, tiles) of every split and fold
                evenly over the range of landslide shares.
            validation: ``auto`` (hold out what the test holds out: groups, blocks),
                ``random``, ``grouped`` or ``blocked``.
            buffer: Pixels between the blocks of different splits of a blocked scene; at
                least the ``context``.
            inner_folds: With an outer test fold (``fold_role = "test"``), validation is
                inner fold ``inner_fold`` of this many, dealt over the units outside the
                test fold (nested cross-validation; not a study-file option).
            inner_fold: The validating inner fold (default 0).

        Returns:
            The splits; pass ``splits.for_tuning()`` to tuning code. ``info`` says which
            validation was used (``validation``, ``test_by``, a ``warning`` when random
            validation faces a shifted test), the ``buffer`` and the resolved ``folds``
            (and ``inner_folds``).

        Raises:
            EmptyLabelError: The cube is labelled but no training tile holds a landslide.
        """
        patch_size = self._option("patch_size", patch_size)
        overlap = self._option("overlap", overlap)
        method = self._option("split", method)
        fractions = tuple(self._option("fractions", fractions))
        block_size = self._option("block_size", block_size)
        seed = self._option("seed", seed)
        folds = self._option("folds", folds)
        fold = self._option("fold", fold)
        fold_role = self._option("fold_role", fold_role)
        stratify = self._option("stratify", stratify)
        validation = self._option("validation", validation)
        buffer = self._split_buffer(stratify, self._option("buffer", buffer))
        groups, lists, test_groups = self._patch_splits()
        result = split_tiles(
            self._valid_tiles(patch_size, overlap), method=method, fractions=fractions,
            block_size=block_size, seed=seed, by_region=self.patch_shape is not None,
            stride=patch_size - overlap, folds=folds, fold=fold, fold_role=fold_role,
            share=self._landslide_share if stratify else None, groups=groups, lists=lists,
            test_groups=test_groups, validation=validation, buffer=buffer,
            inner_folds=inner_folds, inner_fold=inner_fold,
        )
        info = self._split_info(
            result, groups, lists, method=method, patch_size=patch_size, overlap=overlap,
            fractions=list(fractions), block_size=block_size, seed=seed, folds=folds, fold=fold,
            fold_role=fold_role, stratify=stratify)
        return Splits(*self._kept(result), info)

    def _split_info(
        self, result: SplitResult, groups: list[str] | None, lists: dict[str, set[int]] | None,
        *, folds: int | str | None, fold: int | None, fold_role: str, stratify: bool,
        **settings: Any,
    ) -> dict[str, Any]:
        """A split's provenance (``settings`` in the order given).

        The settings and the cube, the folds and stratification asked for, what
        :func:`split_tiles` resolved, and where the groups and split lists came from.
        """
        info = {**settings, "cube": self.hash}
        if folds is not None:
            info |= {"folds": folds, "fold": fold or 0, "fold_role": fold_role}
        if stratify:
            info["stratify"] = True
        info |= result.info
        if groups is not None:
            info["group_from"] = self.options.get("group_from")
        if lists:
            info["lists_from"] = self.options.get("lists_from")
        return info

    def _split_buffer(self, stratify: Any, buffer: Any) -> int:
        """The buffer to split with (at least the context), once both options are valid."""
        if not isinstance(stratify, bool):
            raise SceneSpecError(f"stratify must be true or false, got {stratify!r}",
                                 key="stratify", hint="stratify = true")
        if stratify and self.labels is None:
            raise SceneSpecError("stratify needs labels, and this cube has none",
                                 key="stratify", hint="drop stratify, or give the labels")
        if isinstance(buffer, bool) or not isinstance(buffer, int) or buffer < 0:
            raise SceneSpecError(f"buffer must be a whole number of pixels >= 0, got "
                                 f"{buffer!r}", key="buffer",
                                 hint="e.g. buffer = 32 (default: the context)")
        # the context read around an evaluated tile must not reach training pixels
        return max(buffer, self.context)

    def _kept(self, result: SplitResult) -> tuple[list[Tile], list[Tile], list[Tile]]:
        """The split's tiles that hold valid pixels; training must hold a landslide."""
        train, val, test = result.train, result.val, result.test
        if result.info.get("buffer_clipped"):
            # a tile cut back by the buffer may have kept no valid pixel
            train, val, test = ([t for t in part if self.valid[t.slices].any()]
                                for part in (train, val, test))
        if self.labels is not None and not any(
            ((self.labels[t.slices] > 0) & self.valid[t.slices]).any() for t in train
        ):
            raise EmptyLabelError(
                f"no landslide pixel in the {len(train)} training tiles (target "
                f"{self.target!r})", file=self.label_origin, key="labels",
                hint="check the label layer and its dates, or try another seed, smaller "
                "blocks or a larger scene",
            )
        return train, val, test

    def fold_splits(self, folds: int | str | None = None, **kwargs: Any) -> list[Splits]:
        """The splits of every validation fold: fold ``i`` validates, the others train.

        The folds share one test split; with groups they deal groups (no group on both
        sides of a fold), in a blocked scene blocks, so they are the natural replicates of
        a noisy objective. Fold ``i`` alone is ``cube.splits(folds=k, fold=i)``. When the
        study file's own folds rotate the test (``fold_role = "test"``, one study per outer
        fold) and ``folds`` is given, the folds are nested: dealt over the units outside
        that study's test fold, which they never reach.

        Args:
            folds: Number of folds, ``"groups"`` (one per group), or None for the study
                file's ``folds``.
            **kwargs: Other ``splits`` arguments (``seed``, ``patch_size``, ...).

        Returns:
            One ``Splits`` per fold, in fold order.

        Raises:
            SceneSpecError: No folds are set, or the data cannot make them.
        """
        if folds is not None and self._option("folds", None) is not None \
                and self._option("fold_role", kwargs.get("fold_role")) == "test":
            count, fold = "inner_folds", "inner_fold"
            kwargs |= {"inner_folds": folds}
        else:
            count, fold = "folds", "fold"
            kwargs |= {"folds": self._option("folds", folds), "fold_role": "validation"}
            if kwargs["folds"] is None:
                raise SceneSpecError("no folds to deal", key="folds",
                                     hint='set folds = 5 (or "groups") in [data], or pass folds')
        first = self.splits(**kwargs, **{fold: 0})
        return [first] + [self.splits(**kwargs, **{fold: i}) for i in range(1, first.info[count])]

    def validation_plan(self, method: str | None = None, validation: str | None = None
                        ) -> dict[str, Any]:
        """Which validation the study's splits use, without making them.

        Returns:
            See ``data.splits.validation_plan``; with the ``buffer`` of a blocked scene.
        """
        method = self._option("split", method)
        groups, lists, test_groups = self._patch_splits()
        lists = lists or {}
        plan = validation_plan(
            method=method, by_region=self.patch_shape is not None, grouped=groups is not None,
            test_from="file" if "test" in lists or "train" in lists
            else "groups" if test_groups else None,
            validation=self._option("validation", validation))
        if self.patch_shape is None and method == "blocked":
            plan["buffer"] = max(self._option("buffer", None), self.context)
        return plan

    def _patch_splits(self) -> tuple[list[str] | None, dict[str, set[int]] | None,
                                     list[str] | None]:
        """The group of each patch, the split lists as patch indices, and the test groups."""
        table = self.options.get("groups")
        named = self.options.get("lists")
        if self.patch_shape is None or not (table or named):
            return None, None, None
        ids = [str(i) for i in self.meta.get("patch_ids", [])]
        index = {pid: k for k, pid in enumerate(ids)}
        groups = [table[pid] for pid in ids] if table else None
        lists = {name: {index[pid] for pid in members}
                 for name, members in (named or {}).items()}
        return groups, lists or None, self.options.get("test_groups")

    # ----------------------------------------------------------------- training data
    def norm_stats(self, tiles: Sequence[Tile], *,
                   sources: Sequence[str] | str | None = None,
                   method: str | None = None) -> dict[str, Any]:
        """Per-source normalization statistics of ``tiles`` (see ``data.normalize.norm_stats``).

        Pass training tiles only, so nothing of val / test leaks into the normalization.
        Categorical sources are left as they are.

        Args:
            tiles: The tiles to measure.
            sources: Selection as in ``source_index``.
            method: ``robust`` (winsorized z-score, the default) or ``mean_std``; None = the
                study file's ``normalization`` option, else ``robust``.

        Returns:
            ``{"method": ..., "sources": {name: {...}}}``, JSON-able.

        Raises:
            SceneSpecError: The study file's ``clip`` is not a number > 0.
        """
        method = method or self.options.get("normalization", "robust")
        clip = self.options.get("clip", ROBUST_CLIP)
        if isinstance(clip, bool) or not isinstance(clip, int | float) or not clip > 0:
            raise SceneSpecError(f"clip must be a number of robust scales > 0, got {clip!r}",
                                 key="clip", hint=f"e.g. clip = 3 (default {ROBUST_CLIP:g})")
        return norm_stats(self, tiles, self.source_index(sources), method=method, clip=clip)

    def dataset(self, tiles: Sequence[Tile], *, norm: dict[str, Any] | None = None,
                sources: Sequence[str] | str | None = None, context: int = 0) -> Any:
        """A torch ``Dataset`` of ``(x (S,T,h,w) float32, y (h,w) int64, valid (h,w) bool)``.

        Args:
            tiles: The tiles, e.g. ``splits.train``.
            norm: From ``norm_stats`` (None = raw values).
            sources: Selection as in ``source_index`` (optical-only, factors-only, ...).
            context: Pixels of surrounding input around each tile, which is scored alone
                (e.g. ``cube.context`` for the tiles a model is evaluated on).

        Returns:
            A ``data.CubeDataset``.
        """
        # torch is imported with the first data set: building and caching cubes never need it
        from data.dataset import CubeDataset

        return CubeDataset(self, tiles, norm=norm, sources=self.source_index(sources),
                           context=context)

    @property
    def context(self) -> int:
        """The study file's ``context``: pixels of input read around each evaluated tile.

        Raises:
            SceneSpecError: Not a whole number >= 0.
        """
        value = self.options.get("context", 0)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise SceneSpecError(f"context must be a whole number of pixels >= 0, got "
                                 f"{value!r}", key="context",
                                 hint="e.g. context = 32 (0: score tiles cut from the map)")
        return value

    def __repr__(self) -> str:
        s, t, h, w = self.shape
        where = f"patches {self.patch_shape}" if self.patch_shape else (
            self.crs.to_string() if self.crs else "no grid")
        return (f"Cube(S={s}, T={t}, H={h}, W={w}, {where}, target={self.target!r}, "
                f"hash={self.hash[:12]!r})")


def _slices(window: WindowLike) -> tuple[slice, slice]:
    if isinstance(window, Tile):
        return window.slices
    if isinstance(window, Window):
        return window.toslices()
    rows, cols = window
    return rows, cols
