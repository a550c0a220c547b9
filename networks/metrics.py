"""Segmentation metrics over a whole split: MIoU, landslide F1 and exact ROC AUC."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import torch

ArrayLike = np.ndarray | torch.Tensor
"""Inputs the metrics accept: numpy arrays or torch tensors (any device), any shape."""


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


def roc_auc(prob: npt.ArrayLike, target: npt.ArrayLike) -> float | None:
    """Exact area under the ROC curve, ties counted as half, as scikit-learn computes it.

    Equivalent to the Mann-Whitney statistic with average ranks: one sort, no binning.

    Args:
        prob: 1-D scores.
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
    starts = np.concatenate(([0], np.flatnonzero(np.diff(sorted_prob)) + 1))
    pos_per_value = np.add.reduceat(sorted_pos, starts)
    neg_per_value = np.diff(np.append(starts, prob.size)) - pos_per_value
    neg_below = np.cumsum(neg_per_value) - neg_per_value
    wins = np.dot(pos_per_value, neg_below) + 0.5 * np.dot(pos_per_value, neg_per_value)
    return float(wins / (n_pos * n_neg))


def best_f1_threshold(prob: npt.ArrayLike, target: npt.ArrayLike) -> tuple[float, float]:
    """The decision threshold that maximizes the landslide F1, and that F1.

    Every distinct probability is tried as a cut; the returned threshold lies halfway
    between the last probability called a landslide and the next lower one, so that
    ``prob > threshold`` reproduces the best F1 on these pixels and new pixels falling
    between the two are split evenly. Ties of F1 go to the higher threshold.

    Args:
        prob: 1-D scores in [0, 1].
        target: 1-D labels in {0, 1} (bool or numbers).

    Returns:
        ``(f1, threshold)``; ``(0.0, 0.5)`` when there is no landslide pixel.
    """
    prob = np.asarray(prob, dtype=np.float64).ravel()
    positive = np.asarray(target).ravel().astype(bool)
    n_pos = int(positive.sum())
    if n_pos == 0 or prob.size == 0:
        return 0.0, 0.5
    order = np.argsort(-prob, kind="stable")
    sorted_prob = prob[order]
    tp = np.cumsum(positive[order])
    # Cut only after the last of equal probabilities: ties are all in or all out.
    ends = np.append(np.flatnonzero(np.diff(sorted_prob)), prob.size - 1)
    called = ends + 1
    f1 = 2 * tp[ends] / (called + n_pos)
    best = int(np.argmax(f1))  # first maximum: the fewest pixels called, the highest cut
    cut = ends[best]
    below = sorted_prob[cut + 1] if cut + 1 < prob.size else 0.0
    threshold = 0.5 * (sorted_prob[cut] + below)
    if not threshold < sorted_prob[cut]:  # adjacent floats: keep the cut pixel above
        threshold = float(np.nextafter(sorted_prob[cut], -np.inf))
    return float(f1[best]), float(threshold)


class SegmentationMeter:
    """Accumulates predictions batch by batch and computes metrics over the whole split.

    ``miou`` is the mean IoU of background and landslide at threshold 0.5 (a pixel is a
    landslide when its probability is above 0.5, as the arg-max of two logits decides),
    averaged over the classes present in the labels or predictions (as scikit-learn's
    ``jaccard_score(average="macro")``); ``f1`` is the landslide class's F1 (0 when
    there are neither true nor predicted landslides); ``auc`` is the exact ROC AUC, or
    ``None`` when the valid labels hold one class only; ``f1_best`` is the highest F1 over
    all decision thresholds and ``threshold`` the one that reaches it (see
    :func:`best_f1_threshold`; choose it on a validation split, then apply it elsewhere
    with :meth:`at`). Invalid pixels are ignored.

    Confusion counts are integers updated per batch; for the exact AUC the meter keeps
    every valid pixel's probability (``prob_dtype``, 4 bytes by default) and label
    (1 byte). Probabilities closer than ``prob_dtype``'s resolution count as ties.

    Args:
        prob_dtype: Storage type of the probabilities kept for the AUC.
    """

    def __init__(self, *, prob_dtype: npt.DTypeLike = np.float32) -> None:
        self.prob_dtype = np.dtype(prob_dtype)
        self.reset()

    def reset(self) -> None:
        """Forget everything accumulated so far."""
        self._probs: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []
        self._tp = self._fp = self._fn = self._tn = 0

    @property
    def n_pixels(self) -> int:
        """Valid pixels accumulated so far."""
        return self._tp + self._fp + self._fn + self._tn

    def update(self, prob: ArrayLike, target: ArrayLike, valid: ArrayLike | None = None) -> None:
        """Add one batch.

        Args:
            prob: Landslide probabilities in [0, 1], any shape.
            target: Labels in {0, 1}, the same shape.
            valid: Bool mask, the same shape; ``None`` means all valid.

        Raises:
            ValueError: On mismatched shapes, labels outside {0, 1} or non-finite
                probabilities.
        """
        p = _as_numpy(prob, "prob")
        t = _as_numpy(target, "target")
        if p.shape != t.shape:
            raise ValueError(f"prob {p.shape} and target {t.shape} differ in shape")
        if valid is not None:
            v = _as_numpy(valid, "valid").astype(bool)
            if v.shape != p.shape:
                raise ValueError(f"valid {v.shape} and prob {p.shape} differ in shape")
            p, t = p[v], t[v]
        p, t = p.ravel(), t.ravel()
        if not np.isfinite(p).all():
            raise ValueError("prob holds NaN or infinite values at valid pixels")
        if t.dtype != bool:
            if ((t != 0) & (t != 1)).any():
                raise ValueError("target must hold only 0 and 1 at valid pixels")
            t = t != 0
        predicted = p > 0.5
        tp = int(np.count_nonzero(predicted & t))
        fp = int(np.count_nonzero(predicted)) - tp
        fn = int(np.count_nonzero(t)) - tp
        self._tp += tp
        self._fp += fp
        self._fn += fn
        self._tn += t.size - tp - fp - fn
        self._probs.append(p.astype(self.prob_dtype, copy=False))
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
        prob, labels = np.concatenate(self._probs), np.concatenate(self._labels)
        f1_best, threshold = best_f1_threshold(prob, labels)
        return {
            **_scores(self._tp, self._fp, self._fn, self._tn),
            "auc": roc_auc(prob, labels),
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
        prob, labels = np.concatenate(self._probs), np.concatenate(self._labels)
        predicted = prob > threshold
        tp = int(np.count_nonzero(predicted & labels))
        fp = int(np.count_nonzero(predicted)) - tp
        fn = int(np.count_nonzero(labels)) - tp
        return _scores(tp, fp, fn, labels.size - tp - fp - fn)


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
