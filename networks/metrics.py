"""Segmentation metrics over a whole split: MIoU, landslide F1, exact ROC AUC, thresholds.

Scores are ranked as log-odds (landslide logit minus background logit), never as rounded
probabilities; scikit-learn is the test oracle of every metric here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

ArrayLike = np.ndarray | torch.Tensor
"""Inputs the metrics accept: numpy arrays or torch tensors (any device), any shape."""

ROC_POINTS = 200
"""Points :func:`roc_points` keeps of a ROC curve by default."""


def _as_numpy(value: Any, name: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach()
        if value.dtype in (torch.float16, torch.bfloat16):
            value = value.float()
        return value.cpu().numpy()
    try:
        return np.asarray(value)
    except Exception as exc:  # numpy raises several types for unconvertible input
        raise TypeError(f"{name} must be a numpy array or a torch tensor") from exc


def tie_ends(ranked: np.ndarray) -> np.ndarray:
    """The last index of every run of equal values in a sorted array (infinities tie).

    Args:
        ranked: 1-D sorted scores.

    Returns:
        Ascending indices; the last is ``ranked.size - 1``.
    """
    return np.append(np.flatnonzero(ranked[1:] != ranked[:-1]), ranked.size - 1)


def roc_auc(prob: npt.ArrayLike, target: npt.ArrayLike) -> float | None:
    """Exact area under the ROC curve, ties counted as half, as scikit-learn computes it.

    Equivalent to the Mann-Whitney statistic with average ranks: one sort, no binning.

    Args:
        prob: 1-D scores (probabilities or log-odds; infinities allowed).
        target: 1-D labels in {0, 1} (bool or numbers).

    Returns:
        The AUC, or ``None`` when only one class is present.
    """
    prob = np.asarray(prob).ravel()
    positive = np.asarray(target).ravel().astype(bool)
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(prob, kind="stable")
    sorted_prob = prob[order]
    sorted_pos = positive[order].astype(np.int64)
    starts = np.concatenate(([0], tie_ends(sorted_prob)[:-1] + 1))
    pos_per_value = np.add.reduceat(sorted_pos, starts)
    neg_per_value = np.diff(np.append(starts, prob.size)) - pos_per_value
    neg_below = np.cumsum(neg_per_value) - neg_per_value
    wins = np.dot(pos_per_value, neg_below) + 0.5 * np.dot(pos_per_value, neg_per_value)
    return float(wins / (n_pos * n_neg))


def log_odds(prob: npt.ArrayLike) -> np.ndarray:
    """``log(p / (1 - p))`` in float64: -inf at 0, inf at 1.

    Args:
        prob: Probabilities in [0, 1], any shape (a scalar too).

    Returns:
        The log-odds, float64, of ``prob``'s shape.
    """
    p = np.asarray(prob, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return np.log(p) - np.log1p(-p)


def _probability(log_odds: float) -> float:
    """The probability of a log-odds cut, kept strictly inside (0, 1).

    Beyond about ±36.7 the logistic function rounds to exactly 0 or 1 in float64, which
    no probability could exceed or stay under; the nearest representable probability
    stands in, so a cut among saturated scores becomes the cut at the saturation.
    """
    prob = 0.5 * (1.0 + math.tanh(0.5 * log_odds)) if math.isfinite(log_odds) else (
        1.0 if log_odds > 0 else 0.0
    )
    return min(max(prob, float(np.nextafter(0.0, 1.0))), float(np.nextafter(1.0, 0.0)))


def best_f1_threshold(log_odds: npt.ArrayLike, target: npt.ArrayLike) -> tuple[float, float]:
    """The decision threshold that maximizes the landslide F1, and that F1.

    Every distinct log-odds value is tried as a cut (equal values are all in or all out;
    ties of F1 go to the higher cut). The threshold lies halfway, in log-odds, between the
    last pixel called a landslide and the next lower one, and is returned as a
    probability, so that ``prob > threshold`` reproduces the best F1 on these pixels (up
    to the saturation :func:`_probability` describes).

    Args:
        log_odds: 1-D landslide log-odds (:func:`log_odds` of probabilities, or the
            difference of the two logits).
        target: 1-D labels in {0, 1} (bool or numbers).

    Returns:
        ``(f1, threshold)``; ``(0.0, 0.5)`` when there is no landslide pixel.
    """
    values = np.asarray(log_odds, dtype=np.float64).ravel()
    positive = np.asarray(target).ravel().astype(bool)
    n_pos = int(positive.sum())
    if n_pos == 0 or values.size == 0:
        return 0.0, 0.5
    order = np.argsort(-values, kind="stable")
    ranked = values[order]
    tp = np.cumsum(positive[order])
    ends = tie_ends(ranked)
    f1 = 2 * tp[ends] / (ends + 1 + n_pos)
    best = int(np.argmax(f1))  # first maximum: the fewest pixels called, the highest cut
    cut = ends[best]
    below = ranked[cut + 1] if cut + 1 < values.size else ranked[cut] - 1.0
    # +inf above -inf has no midpoint; any cut between them works, so take the neutral 0.5
    middle = 0.0 if np.isposinf(ranked[cut]) and np.isneginf(below) else 0.5 * (ranked[cut] + below)
    return float(f1[best]), _probability(middle)


class SegmentationMeter:
    """Accumulates predictions batch by batch and computes metrics over the whole split.

    ``miou`` is the mean IoU of background and landslide at threshold 0.5 (a pixel is a
    landslide when its probability is above 0.5, as the arg-max of two logits decides),
    averaged over the classes present in the labels or predictions (as scikit-learn's
    ``jaccard_score(average="macro")``); ``f1`` is the landslide class's F1 (0 when
    there are neither true nor predicted landslides); ``auc`` is the exact ROC AUC, or
    ``None`` when the valid labels hold one class only; ``f1_best`` is the highest F1 over
    all decision thresholds and ``threshold`` the one that reaches it (see
    :func:`best_f1_threshold`, on the log-odds; choose it on a validation split, then
    apply it elsewhere with :meth:`at`). Invalid pixels are ignored.

    Confusion counts are integers updated per batch; for the exact AUC the meter keeps
    every valid pixel's log-odds (``prob_dtype``, 4 bytes by default) and label (1 byte).
    The AUC and the best threshold rank the log-odds, not the probabilities: a confident
    model (boosted trees reach log-odds of thousands) has float32 probabilities of exactly
    0 or 1 on most pixels, whose ties would hide its ranking. Feed the log-odds
    (:meth:`update_log_odds`, e.g. the difference of the two logits) where there are
    some; probabilities (:meth:`update`) rank as they are, ties included.

    Args:
        prob_dtype: Storage type of the log-odds kept for the AUC.
    """

    def __init__(self, *, prob_dtype: npt.DTypeLike = np.float32) -> None:
        self.prob_dtype = np.dtype(prob_dtype)
        self.reset()

    def reset(self) -> None:
        """Forget everything accumulated so far."""
        self._scores: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []
        self._tp = self._fp = self._fn = self._tn = 0

    @property
    def n_pixels(self) -> int:
        """Valid pixels accumulated so far."""
        return self._tp + self._fp + self._fn + self._tn

    def update(self, prob: ArrayLike, target: ArrayLike, valid: ArrayLike | None = None) -> None:
        """Add one batch of probabilities.

        Args:
            prob: Landslide probabilities in [0, 1], any shape.
            target: Labels in {0, 1}, the same shape.
            valid: Bool mask, the same shape; ``None`` means all valid.

        Raises:
            ValueError: On mismatched shapes, labels outside {0, 1} or non-finite
                probabilities.
        """
        p, t = self._valid(prob, target, valid)
        if not np.isfinite(p).all():
            raise ValueError("prob holds NaN or infinite values at valid pixels")
        self._add(log_odds(p), t)

    def update_log_odds(
        self, log_odds: ArrayLike, target: ArrayLike, valid: ArrayLike | None = None
    ) -> None:
        """Add one batch of log-odds (landslide logit minus background logit).

        Args:
            log_odds: ``log(p / (1 - p))`` per pixel, any shape.
            target: Labels in {0, 1}, the same shape.
            valid: Bool mask, the same shape; ``None`` means all valid.

        Raises:
            ValueError: On mismatched shapes, labels outside {0, 1} or NaN log-odds.
        """
        s, t = self._valid(log_odds, target, valid)
        if np.isnan(s).any():
            raise ValueError("log_odds holds NaN values at valid pixels")
        self._add(s, t)

    @staticmethod
    def _valid(
        values: ArrayLike, target: ArrayLike, valid: ArrayLike | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The valid pixels' values and bool labels, flattened and checked."""
        x = _as_numpy(values, "prob")
        t = _as_numpy(target, "target")
        if x.shape != t.shape:
            raise ValueError(f"prob {x.shape} and target {t.shape} differ in shape")
        if valid is not None:
            v = _as_numpy(valid, "valid").astype(bool)
            if v.shape != x.shape:
                raise ValueError(f"valid {v.shape} and prob {x.shape} differ in shape")
            x, t = x[v], t[v]
        x, t = x.ravel(), t.ravel()
        if t.dtype != bool:
            if ((t != 0) & (t != 1)).any():
                raise ValueError("target must hold only 0 and 1 at valid pixels")
            t = t != 0
        return x, t

    def _add(self, scores: np.ndarray, t: np.ndarray) -> None:
        predicted = scores > 0  # probability above 0.5: the arg-max of two logits
        tp = int(np.count_nonzero(predicted & t))
        fp = int(np.count_nonzero(predicted)) - tp
        fn = int(np.count_nonzero(t)) - tp
        self._tp += tp
        self._fp += fp
        self._fn += fn
        self._tn += t.size - tp - fp - fn
        self._scores.append(scores.astype(self.prob_dtype, copy=False))
        self._labels.append(t)

    def compute(self) -> dict[str, float | None]:
        """Metrics over everything accumulated.

        Returns:
            ``{"miou": float, "f1": float, "auc": float | None, "f1_best": float,
            "threshold": float}``; ``miou`` and ``f1`` at threshold 0.5.

        Raises:
            ValueError: When no valid pixel was seen.
        """
        if self.n_pixels == 0:
            raise ValueError("no valid pixels to compute metrics on; check the valid masks")
        scores, labels = np.concatenate(self._scores), np.concatenate(self._labels)
        f1_best, threshold = best_f1_threshold(scores, labels)
        return {
            **_scores(self._tp, self._fp, self._fn, self._tn),
            "auc": roc_auc(scores, labels),
            "f1_best": f1_best,
            "threshold": threshold,
        }

    def at(self, threshold: float) -> dict[str, float]:
        """``miou`` and ``f1`` with pixels above ``threshold`` called landslides.

        Args:
            threshold: The decision threshold, e.g. one chosen on the validation split.

        Returns:
            ``{"miou": float, "f1": float}``.

        Raises:
            ValueError: When no valid pixel was seen.
        """
        if self.n_pixels == 0:
            raise ValueError("no valid pixels to compute metrics on; check the valid masks")
        counts = confusion(np.concatenate(self._scores), np.concatenate(self._labels), threshold)
        return _scores(**counts)


def confusion(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, int]:
    """Confusion counts of log-odds with pixels above a probability ``threshold`` called.

    Args:
        scores: 1-D landslide log-odds.
        labels: 1-D bool labels, aligned with ``scores``.
        threshold: The decision threshold, a probability.

    Returns:
        ``{"tp", "fp", "fn", "tn"}``.
    """
    called = scores > log_odds(threshold)
    tp = int(np.count_nonzero(called & labels))
    fp = int(np.count_nonzero(called)) - tp
    fn = int(np.count_nonzero(labels)) - tp
    return {"tp": tp, "fp": fp, "fn": fn, "tn": int(scores.size) - tp - fp - fn}


def _scores(tp: int, fp: int, fn: int, tn: int) -> dict[str, float]:
    """MIoU (over the classes present) and landslide F1 from confusion counts."""
    ious = [
        hits / union
        for hits, union in ((tp, tp + fp + fn), (tn, tn + fp + fn))
        if union > 0
    ]
    f1_denominator = 2 * tp + fp + fn
    return {
        "miou": float(np.mean(ious)),
        "f1": 2 * tp / f1_denominator if f1_denominator else 0.0,
    }


def segmentation_metrics(
    prob: ArrayLike, target: ArrayLike, valid: ArrayLike | None = None
) -> dict[str, float | None]:
    """One-shot :class:`SegmentationMeter`: ``miou``, ``f1``, ``auc``, ``f1_best``, ``threshold``.

    Probabilities keep float64 precision here, so ties are exactly the input's ties.

    Args:
        prob: Landslide probabilities in [0, 1], any shape.
        target: Labels in {0, 1}, the same shape.
        valid: Bool mask, the same shape; ``None`` means all valid.

    Returns:
        ``{"miou": float, "f1": float, "auc": float | None, "f1_best": float,
        "threshold": float}``.
    """
    meter = SegmentationMeter(prob_dtype=np.float64)
    meter.update(prob, target, valid)
    return meter.compute()


THRESHOLD_GRID: tuple[float, ...] = tuple(
    float(1.0 / (1.0 + math.exp(-z))) for z in np.linspace(-4.6, 4.6, 47)
)
"""Decision thresholds (probabilities 0.01-0.99, even in log-odds, 0.5 in the middle) at
which :func:`f1_curve` scores a model, so thresholds can be compared across runs."""


def f1_curve(meter: SegmentationMeter, grid: tuple[float, ...] = THRESHOLD_GRID) -> list[float]:
    """F1 of a filled meter at every threshold of ``grid``."""
    return [meter.at(t)["f1"] for t in grid]


def pooled_threshold(
    curves: list[list[float]], grid: tuple[float, ...] = THRESHOLD_GRID, *, margin: float = 0.0
) -> dict[str, Any]:
    """A decision threshold chosen on several runs' F1 curves, kept only when it holds.

    The threshold maximizes the mean F1 over the runs (replicates, folds). It is kept
    only when it also beats 0.5 out of sample: for each run, the threshold chosen on the
    *other* runs is scored on it against 0.5 (leave one out), and the mean of those
    differences must exceed ``margin`` plus its standard error. Otherwise 0.5: a
    threshold tuned on one validation split is fitted to its noise (on Landslide4Sense
    the validation-chosen threshold scored test F1 0.635 against 0.656 at 0.5).

    Args:
        curves: One F1 curve per run, each over ``grid`` (see :func:`f1_curve`).
        grid: The thresholds of the curves; must hold 0.5.
        margin: Extra F1 the threshold must win by.

    Returns:
        ``{"threshold", "kept", "gain", "se", "runs"}``: the threshold used (0.5 when not
        kept), whether the chosen one was kept, and the mean leave-one-out F1 gain over
        0.5 with its standard error (``None`` with fewer than two runs: nothing is then
        kept).
    """
    f1 = np.asarray(curves, dtype=float)
    half = grid.index(0.5)
    if f1.ndim != 2 or f1.shape[1] != len(grid) or f1.shape[0] == 0:
        raise ValueError(f"curves must be runs x {len(grid)} F1 values, got shape {f1.shape}")
    chosen = int(np.nanargmax(np.nanmean(f1, axis=0)))
    runs = f1.shape[0]
    if runs < 2:
        return {"threshold": 0.5, "kept": False, "chosen": grid[chosen], "gain": None,
                "se": None, "runs": runs}
    diffs = []
    for r in range(runs):
        others = np.delete(f1, r, axis=0)
        pick = int(np.nanargmax(np.nanmean(others, axis=0)))
        diffs.append(f1[r, pick] - f1[r, half])
    gain = float(np.mean(diffs))
    se = float(np.std(diffs, ddof=1) / math.sqrt(runs))
    kept = gain > margin + se
    return {"threshold": grid[chosen] if kept else 0.5, "kept": bool(kept),
            "chosen": grid[chosen], "gain": gain, "se": se, "runs": runs}


def threshold_of(log_odds: np.ndarray, label: np.ndarray) -> float | None:
    """The F1-best threshold, a probability, of validation log-odds.

    Args:
        log_odds: 1-D validation log-odds (e.g. a seed ensemble's).
        label: 1-D bool labels, aligned with ``log_odds``.

    Returns:
        The threshold, or ``None`` without landslide pixels.
    """
    return best_f1_threshold(log_odds, label)[1] if label.any() else None


def validation_threshold(history: Any) -> float | None:
    """The decision threshold a training run chose on its validation split, if any.

    Args:
        history: A :class:`networks.History` (or anything with ``threshold`` and
            ``epochs``, as older records have).

    Returns:
        The threshold, strictly inside (0, 1), or ``None``.
    """
    value = getattr(history, "threshold", None)
    if value is None and history.epochs:
        value = history.epochs[-1].get("threshold")
    return float(value) if isinstance(value, int | float) and 0 < value < 1 else None


def mean_probability_log_odds(log_odds: Sequence[np.ndarray]) -> np.ndarray:
    """Log-odds of the mean probability of several models, without rounding to 0 or 1.

    Args:
        log_odds: Each model's log-odds of the same pixels.

    Returns:
        ``log(mean p / mean (1 - p))``, float64, computed in log space.
    """
    stack = np.stack([np.asarray(s, np.float64) for s in log_odds])
    # log p = -log(1 + e^-s); the 1/n of the two means cancels.
    return (np.logaddexp.reduce(-np.logaddexp(0.0, -stack), axis=0)
            - np.logaddexp.reduce(-np.logaddexp(0.0, stack), axis=0))


def score_log_odds(
    log_odds: np.ndarray, label: np.ndarray, threshold: float | None
) -> dict[str, Any]:
    """Test metrics of log-odds: at probability 0.5 and at a validation-chosen threshold.

    Args:
        log_odds: 1-D landslide log-odds of valid pixels.
        label: 1-D bool labels, aligned with ``log_odds``.
        threshold: The validation-chosen threshold (a probability), or ``None``.

    Returns:
        ``{"pixels", "landslide_pixels", "at_0.5": {...}, "at_threshold": {...} | None,
        "roc": {"fpr", "tpr"}}``; each metrics dict has ``miou``, ``f1``, ``auc`` and the
        confusion counts.
    """
    meter = SegmentationMeter(prob_dtype=np.float64)
    meter.update_log_odds(log_odds, label)
    scores = meter.compute()
    out: dict[str, Any] = {
        "pixels": int(log_odds.size),
        "landslide_pixels": int(label.sum()),
        "at_0.5": {
            "miou": scores["miou"],
            "f1": scores["f1"],
            "auc": scores["auc"],
            "confusion": confusion(log_odds, label, 0.5),
        },
        "at_threshold": None,
    }
    if threshold is not None:
        at = meter.at(threshold)
        out["at_threshold"] = {
            "threshold": threshold,
            "miou": at["miou"],
            "f1": at["f1"],
            "auc": scores["auc"],
            "confusion": confusion(log_odds, label, threshold),
        }
    out["roc"] = roc_points(log_odds, label)
    return out


def roc_points(prob: np.ndarray, label: np.ndarray, n: int = ROC_POINTS) -> dict | None:
    """At most ``n`` points of the ROC curve, one per distinct threshold before thinning.

    Args:
        prob: 1-D scores.
        label: 1-D bool labels.
        n: Points kept (evenly spaced along the curve, both ends included).

    Returns:
        ``{"fpr": [...], "tpr": [...]}`` from (0, 0) to (1, 1), or ``None`` when only one
        class is present.
    """
    n_pos = int(label.sum())
    n_neg = label.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(-prob, kind="stable")
    ends = tie_ends(prob[order])
    tp = np.cumsum(label[order])[ends]
    fpr = np.concatenate(([0.0], (ends + 1 - tp) / n_neg))
    tpr = np.concatenate(([0.0], tp / n_pos))
    keep = np.unique(np.linspace(0, fpr.size - 1, min(fpr.size, n)).astype(int))
    return {"fpr": fpr[keep].tolist(), "tpr": tpr[keep].tolist()}
