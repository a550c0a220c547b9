"""What one training run leaves behind: per-epoch metrics and the trained model."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

from torch import nn

METRIC_NAMES: tuple[str, ...] = (
    "train_loss",
    "val_loss",
    "miou",
    "f1",
    "auc",
    "f1_best",
    "miou_best",
    "threshold",
)
"""Keys of the metrics dict every epoch reports (``auc`` may be ``None``).

``miou`` and ``f1`` are at the decision threshold 0.5; ``f1_best`` and ``miou_best`` are
the validation F1 and MIoU at ``threshold``, the decision threshold that maximizes F1 on
the validation split."""


@dataclass
class History:
    """The record of a :func:`networks.train` run.

    Attributes:
        epochs: One dict per finished epoch: ``epoch`` (1-based) and :data:`METRIC_NAMES`.
        model: The trained model, in eval mode, on the device it was trained on.
        stopped_early: True when a callback asked to stop (even on the last epoch).
        pretrain_errors: Per RBM of the DBN, the reconstruction error after every CD
            epoch; empty when the DBN was not pretrained.
        threshold: The decision threshold chosen on the validation split after the last
            epoch (the one that maximizes validation F1 for the returned model); 0.5
            before any epoch. Export and checkpoints carry it, ``hpo predict`` applies it.
    """

    epochs: list[dict[str, Any]] = field(default_factory=list)
    model: nn.Module | None = None
    stopped_early: bool = False
    pretrain_errors: list[list[float]] = field(default_factory=list)
    threshold: float = 0.5

    def _values(self, metric: str) -> list[Any]:
        if metric not in METRIC_NAMES and metric != "epoch":
            near = difflib.get_close_matches(metric.lower(), METRIC_NAMES, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise KeyError(f"unknown metric {metric!r}{hint} (known: {', '.join(METRIC_NAMES)})")
        return [e[metric] for e in self.epochs if e.get(metric) is not None]

    def last(self, metric: str) -> Any:
        """The metric's value after the last epoch that has one.

        Args:
            metric: One of :data:`METRIC_NAMES`.

        Returns:
            The value, or ``None`` when no epoch has one.

        Raises:
            KeyError: On an unknown metric name.
        """
        values = self._values(metric)
        return values[-1] if values else None

    def best(self, metric: str) -> Any:
        """The metric's best value over all epochs: lowest for losses, highest otherwise.

        Args:
            metric: One of :data:`METRIC_NAMES`.

        Returns:
            The value, or ``None`` when no epoch has one.

        Raises:
            KeyError: On an unknown metric name.
        """
        values = self._values(metric)
        if not values:
            return None
        if metric == "threshold":
            raise KeyError("a threshold is not better when higher; use last('threshold')")
        return min(values) if metric.endswith("loss") else max(values)
