"""Per-pixel gradient boosting (model ``hgb``): the classical floor of landslide mapping.

Landslide studies compare their networks against boosted trees on per-pixel features;
this module puts that floor inside the toolkit, trained and evaluated like any network.
Every pixel becomes one feature vector: the ``S * T`` input channels plus their mean and
standard deviation over ``k x k`` windows (``boost.windows``). scikit-learn's
``HistGradientBoostingClassifier`` is fitted on a class-stratified sample of the valid
training pixels; the fitted trees are then copied into plain node arrays, held as buffers
of a :class:`BoostingModel`, which predicts by its own vectorised traversal. A checkpoint
of it therefore holds tensors only and loads with ``torch.load(weights_only=True)``:
nothing is ever unpickled.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from networks.base import CubeModel
from networks.config import BoostConfig
from networks.errors import TrainingError

_TRAVERSAL_CELLS = 1 << 21
"""Pixel x tree node indices held at once by the traversal (16 MiB of int64)."""

_TREE_ARRAYS = ("feature", "threshold", "left", "right", "leaf", "missing_left", "value")
"""Per-node arrays of the forest, stored as buffers ``tree_<name>``."""


def n_features(n_channels: int, windows: Sequence[int]) -> int:
    """Length of a pixel's feature vector.

    Args:
        n_channels: Input channels ``S * T``.
        windows: Window sides (``boost.windows``); sides of 1 add nothing.

    Returns:
        ``n_channels * (1 + 2 * number of windows larger than 1)``.
    """
    return n_channels * (1 + 2 * sum(1 for k in windows if k > 1))


def pixel_features(x: np.ndarray, windows: Sequence[int]) -> np.ndarray:
    """Per-pixel features of one tile.

    The layout is the ``S * T`` channels (source-major), then for every window side ``k``
    (in the given order, sides of 1 skipped) the ``k x k`` means of all channels and then
    their standard deviations. Windows reflect at the tile's edges.

    Args:
        x: ``(S, T, H, W)`` inputs.
        windows: Window sides, odd.

    Returns:
        ``(H, W, F)`` float32 features, ``F = n_features(S * T, windows)``.
    """
    # scipy.ndimage takes most of a second to import; only the boosting floor needs it
    from scipy.ndimage import uniform_filter

    s, t, h, w = x.shape
    # float64: the variance as E[x^2] - E[x]^2 cancels digits that float32 lacks.
    channels = np.asarray(x, dtype=np.float64).reshape(s * t, h, w)
    parts = [channels]
    for k in windows:
        if k <= 1:
            continue
        mean = uniform_filter(channels, size=(1, k, k), mode="reflect")
        square = uniform_filter(channels * channels, size=(1, k, k), mode="reflect")
        parts += [mean, np.sqrt(np.maximum(square - mean * mean, 0.0))]
    return np.moveaxis(np.concatenate(parts).astype(np.float32), 0, -1)


class _Reservoir:
    """The ``capacity`` rows with the smallest random keys seen so far, in bounded memory.

    Candidates above the current cut-off (the largest key of a full reservoir) can never
    be among the smallest and are dropped at once, so after the first ``capacity`` rows
    fewer and fewer rows are even copied.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.seen = 0
        self._keys: list[np.ndarray] = []
        self._rows: list[np.ndarray] = []
        self._size = 0
        self._cutoff = np.inf

    def add(self, keys: np.ndarray, rows: np.ndarray) -> None:
        self.seen += keys.size
        take = keys < self._cutoff
        if take.any():
            self._keys.append(keys[take])
            self._rows.append(rows[take])
            self._size += int(take.sum())
        if self._size > 2 * self.capacity:
            self._compact()

    def _compact(self) -> None:
        keys, rows = np.concatenate(self._keys), np.concatenate(self._rows)
        if keys.size > self.capacity:
            kept = np.argpartition(keys, self.capacity - 1)[: self.capacity]
            keys, rows = keys[kept], rows[kept]
            self._cutoff = float(keys.max())
        self._keys, self._rows, self._size = [keys], [rows], keys.size

    def smallest(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``n`` rows with the smallest keys (``n <= capacity``), and their keys.

        Call it only after :meth:`add` gave rows.
        """
        self._compact()
        order = np.argsort(self._keys[0], kind="stable")[:n]
        return self._keys[0][order], self._rows[0][order]


def sample_pixels(
    items: Iterable[tuple[Any, Any, Any]], windows: Sequence[int], max_pixels: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Features and labels of at most ``max_pixels`` valid pixels, class-stratified.

    Each class keeps its share of the valid pixels (rounded; a class that is present keeps
    at least one pixel), and within a class every pixel is equally likely to be drawn.
    One pass over the tiles; memory stays within a few times ``max_pixels`` feature rows.

    Args:
        items: ``(x (S, T, h, w), y (h, w), valid (h, w))`` tiles, tensors or arrays.
        windows: Window sides of :func:`pixel_features`.
        max_pixels: Pixels to keep at most.
        seed: Seed of the draw.

    Returns:
        ``(features (n, F) float32, labels (n,) bool)`` in random order.

    Raises:
        TrainingError: No valid pixel, or the valid pixels hold one class only.
    """
    rng = np.random.default_rng(seed)
    pools = {label: _Reservoir(max_pixels) for label in (False, True)}
    for x, y, valid in items:
        feats = pixel_features(_numpy(x), windows)
        keep = _numpy(valid).astype(bool)
        rows, labels = feats[keep], _numpy(y)[keep] > 0
        keys = rng.random(labels.size)
        for label, pool in pools.items():
            mine = labels == label
            pool.add(keys[mine], rows[mine])
    n_neg, n_pos = pools[False].seen, pools[True].seen
    if n_neg == 0 or n_pos == 0:
        raise TrainingError(
            f"the training split's valid pixels hold one class only ({n_pos} landslide, "
            f"{n_neg} background)",
            hint="gradient boosting needs both classes; use a split with landslides",
        )
    total = n_neg + n_pos
    take_pos = n_pos if total <= max_pixels else max(1, round(max_pixels * n_pos / total))
    take_pos = min(take_pos, n_pos, max_pixels - 1)
    take_neg = min(n_neg, max_pixels - take_pos)
    neg_keys, neg_rows = pools[False].smallest(take_neg)
    pos_keys, pos_rows = pools[True].smallest(take_pos)
    order = np.argsort(np.concatenate((neg_keys, pos_keys)), kind="stable")
    features = np.concatenate((neg_rows, pos_rows))[order]
    labels = np.concatenate((np.zeros(take_neg, bool), np.ones(take_pos, bool)))[order]
    return features, labels


@functools.cache
def _classifier_type() -> type:
    """``HistGradientBoostingClassifier``, with bin edges from the unweighted pixels.

    Recent scikit-learn (seen in 1.9) weighs the quantiles that place the bin edges by
    the sample weights, one Python-level weighted percentile per edge and feature: 7 s for
    3,000 pixels of 75 features here, minutes for 1e5, against 0.1 s unweighted. Edges
    only bound the split candidates, so unweighted ones serve as well; the weights still
    weigh every gradient and hessian.
    """
    # scikit-learn's ensembles take seconds to import: only the boosting floor uses them
    from sklearn.ensemble import HistGradientBoostingClassifier

    base = HistGradientBoostingClassifier
    if "sample_weight" not in inspect.signature(base._bin_data).parameters:
        return base  # older releases never weighted the bin edges

    class UnweightedBinning(base):  # type: ignore[misc, valid-type]
        def _bin_data(self, X: Any, sample_weight: Any, is_training_data: bool) -> Any:  # noqa: N803
            return super()._bin_data(X, None, is_training_data)

    return UnweightedBinning


def _numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


class BoostingModel(CubeModel):
    """Boosted trees on per-pixel features, as a model of this package (``hgb``).

    Built unfitted (no trees: probability 0.5 everywhere); :meth:`fit` grows the trees
    with scikit-learn and copies them into the buffers ``tree_*`` (one entry per node of
    all trees, children as global node indices, a leaf pointing to itself),
    ``tree_roots`` and ``baseline``. Those buffers are its whole state, so
    ``state_dict``/``load_state_dict`` and :mod:`networks.checkpoint` carry it like any
    network's weights. The forward pass computes :func:`pixel_features` on the CPU and
    returns logits ``(0, raw score)``, whose softmax is the boosted probability.

    Args:
        n_sources: Sources ``S`` the model takes.
        n_times: Dates ``T`` the model takes.
        config: Its hyperparameters (default: the defaults).
    """

    def __init__(self, n_sources: int, n_times: int, config: BoostConfig | None = None) -> None:
        super().__init__(n_sources, n_times)
        self.config = config if config is not None else BoostConfig()
        self.n_features = n_features(n_sources * n_times, self.config.windows)
        dtypes = {"threshold": torch.float64, "value": torch.float64, "leaf": torch.bool,
                  "missing_left": torch.bool}  # fmt: skip
        for name in _TREE_ARRAYS:
            dtype = dtypes.get(name, torch.int64)
            self.register_buffer(f"tree_{name}", torch.zeros(0, dtype=dtype))
        self.register_buffer("tree_roots", torch.zeros(0, dtype=torch.int64))
        self.register_buffer("baseline", torch.zeros((), dtype=torch.float64))

    @property
    def n_trees(self) -> int:
        """Trees of the fitted forest (0 before :meth:`fit`)."""
        return self.tree_roots.numel()

    def fit(
        self, items: Iterable[tuple[Any, Any, Any]], *, seed: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Grow the trees on a class-stratified sample of valid training pixels.

        Landslide pixels weigh ``config.pos_weight``. scikit-learn runs at most as many
        threads as torch (``torch.get_num_threads()``), so a trial keeps to the CPUs it
        was given.

        Args:
            items: The training tiles ``(x, y, valid)``.
            seed: Seed of the pixel draw and of the trees' binning.

        Returns:
            ``(raw scores, labels)`` of the sampled training pixels, to measure a
            training loss on.

        Raises:
            TrainingError: No valid pixel, a single class, or a scikit-learn whose fitted
                trees this module cannot read.
        """
        config = self.config
        features, labels = sample_pixels(items, config.windows, config.max_pixels, seed)
        estimator = _classifier_type()(
            learning_rate=config.learning_rate,
            max_iter=config.max_iter,
            max_leaf_nodes=config.max_leaf_nodes,
            min_samples_leaf=config.min_samples_leaf,
            l2_regularization=config.l2_regularization,
            # Validation belongs to the caller's split, not to a slice of the sample.
            early_stopping=False,
            random_state=seed,
        )
        weights = np.where(labels, config.pos_weight, 1.0)
        with threadpool_limits(limits=torch.get_num_threads(), user_api="openmp"):
            estimator.fit(features, labels.astype(np.int8), sample_weight=weights)
        self.load_estimator(estimator)
        return self.raw_score(features), labels

    def load_estimator(self, estimator: Any) -> None:
        """Copy the trees of a fitted binary ``HistGradientBoostingClassifier``.

        Args:
            estimator: Fitted on :func:`pixel_features` of this model's layout.

        Raises:
            TrainingError: The estimator is not a fitted binary classifier with numeric
                splits, or scikit-learn keeps its trees in a layout not known here.
        """
        predictors = getattr(estimator, "_predictors", None)
        baseline = getattr(estimator, "_baseline_prediction", None)
        if predictors is None or baseline is None:
            raise TrainingError(
                f"cannot read the trees of this {type(estimator).__name__}",
                hint="fit a HistGradientBoostingClassifier first; scikit-learn 1.2 to 1.9 "
                "keep the layout read here",
            )
        if getattr(estimator, "n_trees_per_iteration_", 1) != 1:
            raise TrainingError("expected a binary classifier", hint="labels must be 0 and 1")
        nodes = [iteration[0].nodes for iteration in predictors]
        if any(n["is_categorical"].any() for n in nodes):
            raise TrainingError("categorical splits are not supported", hint="fit numeric features")
        sizes = np.array([len(n) for n in nodes], np.int64)
        roots = np.concatenate(([0], np.cumsum(sizes)[:-1])).astype(np.int64)
        flat = np.concatenate(nodes)
        index = np.arange(flat.size, dtype=np.int64)
        offset = np.repeat(roots, sizes)
        leaf = flat["is_leaf"].astype(bool)
        arrays = {
            "feature": flat["feature_idx"].astype(np.int64),
            "threshold": flat["num_threshold"].astype(np.float64),
            # A leaf points to itself, so the traversal needs no special case for it.
            "left": np.where(leaf, index, flat["left"].astype(np.int64) + offset),
            "right": np.where(leaf, index, flat["right"].astype(np.int64) + offset),
            "leaf": leaf,
            "missing_left": flat["missing_go_to_left"].astype(bool),
            "value": flat["value"].astype(np.float64),
        }
        device = self.baseline.device
        for name, array in arrays.items():
            setattr(self, f"tree_{name}", torch.from_numpy(array).to(device))
        self.tree_roots = torch.from_numpy(roots).to(device)
        self.baseline = torch.tensor(float(np.ravel(baseline)[0]), dtype=torch.float64,
                                     device=device)  # fmt: skip
        self._check_trees()

    def _arrays(self) -> dict[str, np.ndarray]:
        arrays = {name: getattr(self, f"tree_{name}") for name in (*_TREE_ARRAYS, "roots")}
        return {name: value.detach().cpu().numpy() for name, value in arrays.items()}

    def _check_trees(self) -> None:
        """Raise ValueError unless the buffers form a forest the traversal ends on.

        Children must come after their parent (scikit-learn numbers nodes depth-first),
        so every path strictly increases the node index and ends at a leaf; a damaged or
        crafted file cannot send the traversal into a loop or out of bounds.
        """
        a = self._arrays()
        n = a["leaf"].size
        if any(a[name].shape != (n,) for name in _TREE_ARRAYS):
            raise ValueError("the tree_* arrays differ in length")
        roots = a["roots"]
        if ((roots < 0) | (roots >= n)).any() or (n > 0 and roots.size == 0):
            raise ValueError("a tree root lies outside the node arrays")
        index = np.arange(n)
        inner = ~a["leaf"]
        for side in ("left", "right"):
            child = a[side]
            linked = np.where(inner, (child > index) & (child < n), child == index)
            if not linked.all():
                raise ValueError(f"tree_{side} links a node before itself or out of range")
        split_on = a["feature"][inner]
        if ((split_on < 0) | (split_on >= self.n_features)).any():
            raise ValueError(
                f"a split reads a feature beyond the {self.n_features} of this model's layout "
                f"({self.n_sources} sources x {self.n_times} dates, windows {self.config.windows})"
            )

    def raw_score(self, features: np.ndarray) -> np.ndarray:
        """Log-odds of landslide: baseline plus every tree's leaf value.

        Args:
            features: ``(n, F)`` rows of :func:`pixel_features`.

        Returns:
            ``(n,)`` float64 raw scores.

        Raises:
            ValueError: When ``F`` is not this model's feature count.
        """
        if features.ndim != 2 or features.shape[1] != self.n_features:
            raise ValueError(
                f"expected (n, {self.n_features}) features, got {tuple(features.shape)}"
            )
        a = self._arrays()
        n_rows, n_trees = features.shape[0], a["roots"].size
        out = np.full(n_rows, float(self.baseline))
        if n_trees == 0:
            return out
        step = max(1, _TRAVERSAL_CELLS // n_trees)
        for start in range(0, n_rows, step):
            block = features[start : start + step]
            rows = np.arange(block.shape[0])[:, None]
            node = np.tile(a["roots"], (block.shape[0], 1))
            while not a["leaf"][node].all():
                seen = block[rows, a["feature"][node]]
                # NaN compares False, so it takes the side scikit-learn learnt for it.
                go_left = np.where(np.isnan(seen), a["missing_left"][node],
                                   seen <= a["threshold"][node])  # fmt: skip
                node = np.where(go_left, a["left"][node], a["right"][node])
            out[start : start + block.shape[0]] += a["value"][node].sum(axis=1)
        return out

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """Landslide probabilities of feature rows (as scikit-learn's ``predict_proba[:, 1]``).

        Args:
            features: ``(n, F)`` rows of :func:`pixel_features`.

        Returns:
            ``(n,)`` float64 probabilities.
        """
        # scipy.special is slow to import and only a fitted floor predicts with it
        from scipy.special import expit

        return expit(self.raw_score(features))

    def segment(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(0, raw score)`` of every pixel, tile by tile on the CPU.

        Args:
            x: ``(B, S, T, H, W)`` float input.

        Returns:
            ``(B, 2, H, W)`` float32 logits on ``x``'s device.
        """
        cubes = x.detach().float().cpu().numpy()
        b, _, _, h, w = cubes.shape
        raw = np.zeros((b, h, w))
        for i, cube in enumerate(cubes):
            rows = pixel_features(cube, self.config.windows).reshape(h * w, -1)
            raw[i] = self.raw_score(rows).reshape(h, w)
        score = torch.from_numpy(raw).to(device=x.device, dtype=torch.float32)
        return torch.stack((torch.zeros_like(score), score), dim=1)

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        # A forest's node count is known only once fitted: take each array's size from
        # the incoming state (torch copies into buffers of the current shape otherwise).
        for name, buffer in self._buffers.items():
            incoming = state_dict.get(prefix + name)
            if buffer is not None and isinstance(incoming, torch.Tensor):
                self._buffers[name] = torch.empty(
                    incoming.shape, dtype=buffer.dtype, device=buffer.device
                )
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        try:
            self._check_trees()
        except ValueError as exc:
            error_msgs.append(f"{prefix or 'hgb '}trees: {exc}")


__all__ = ["BoostingModel", "n_features", "pixel_features", "sample_pixels"]
