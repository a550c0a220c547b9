"""The network objective: merged parameters -> a ``networks`` training run -> a metric."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hpo.engine.context import TrialContext
from hpo.engine.errors import HPOError, SpecError
from hpo.engine.replicates import Scored
from hpo.study.schema import METRICS

_MAXIMIZED = METRICS  # every metric a study may name is better when higher
_MINIMIZED = ("val_loss", "train_loss")
CURVE_ATTR = "hpo:f1_curve"
"""Trial user attribute: validation F1 over ``networks.metrics.THRESHOLD_GRID`` (a list of
curves, one per replicate, for a replicated trial)."""


class NetworkObjective:
    """Trains the model with a trial's parameters and returns its validation metric.

    The merged parameters (``"optim.lr"`` style keys, or bare field names that belong to
    one config group) update ``base_config``; every epoch's metrics are reported through
    the trial context, and training stops when the pruner says so (the trial is then
    PRUNED with the epochs it reached).

    Args:
        train_set: Training data set of ``(x (S, T, h, w), y (h, w), valid (h, w))``.
        val_set: Validation data set of the same kind.
        model: A model name of ``networks`` (``fusion``, a baseline network, or ``hgb``,
            the per-pixel gradient-boosting floor, which reports one epoch).
        metric: The validation metric to optimize: ``f1``, ``miou`` (at 0.5), ``auc``,
            ``f1_best``, ``miou_best`` (at the threshold chosen on validation, the one the
            final model keeps) (maximize) or ``val_loss`` (minimize).
        base_config: The ``networks.ModelConfig`` the parameters update (default: the
            defaults).
        device: Where to train (default: CUDA when available).
        seed: Seed of every training run (the same for all trials, so they differ only
            by their parameters) when trials are not replicated.
        folds: ``(train_set, val_set)`` of each cross-validation fold. A replicated trial
            (the engine's :class:`~hpo.Replication`) trains replicate ``r`` on fold
            ``r % len(folds)`` with the replicate's own seed; without folds every
            replicate uses ``train_set`` / ``val_set`` with its own seed.

    Raises:
        SpecError: Unknown metric.
    """

    def __init__(
        self,
        train_set: Any,
        val_set: Any,
        *,
        model: str = "fusion",
        metric: str = "f1",
        base_config: Any = None,
        device: str | None = None,
        seed: int = 0,
        folds: Sequence[tuple[Any, Any]] = (),
    ) -> None:
        if metric not in _MAXIMIZED + _MINIMIZED:
            raise SpecError(
                f"unknown metric {metric!r}",
                key="metric",
                hint=f"use one of {', '.join(_MAXIMIZED + _MINIMIZED)}",
            )
        self.train_set = train_set
        self.val_set = val_set
        self.model = model
        self.metric = metric
        self.base_config = base_config
        self.device = device
        self.seed = seed
        self.folds = list(folds)

    @property
    def direction(self) -> str:
        """``maximize`` for f1 / miou / auc, ``minimize`` for losses."""
        return "maximize" if self.metric in _MAXIMIZED else "minimize"

    def config(self, params: dict[str, Any]) -> Any:
        """The ``networks.ModelConfig`` of merged parameters.

        A trial holds a choice of sizes as ``"32,16"`` (Optuna's choices are plain
        values); the config reads it as ``(32, 16)`` (``networks.config.parse_sizes``).
        """
        from networks.config import ModelConfig  # here: networks imports torch (seconds)

        return ModelConfig.from_params(params, self.base_config)

    def __call__(self, params: dict[str, Any], trial: TrialContext) -> Scored:
        """Train once and return the last epoch's validation metric.

        The trial also keeps the trained model's validation F1 at every threshold of
        ``networks.metrics.THRESHOLD_GRID`` (``hpo:f1_curve``; one curve per replicate),
        so the exported threshold is chosen on pooled replicates, not on one run.

        Raises:
            HPOError: The metric is undefined (e.g. AUC of a single-class validation
                set); the trial is then FAIL with this reason.
        """
        from networks import evaluate, train  # here: networks imports torch (seconds)

        def report(epochs_done: int, metrics: dict[str, Any]) -> bool:
            trial.report(epochs_done, **metrics)
            return trial.should_stop()

        train_set, val_set, seed = self._replicate(trial)
        history = train(
            self.config(params),
            train_set,
            val_set,
            seed=seed,
            model=self.model,
            device=self.device,
            callbacks=[report],
        )
        value = history.epochs[-1].get(self.metric) if history.epochs else None
        if value is None:
            raise HPOError(
                f"validation {self.metric} is undefined (hint: AUC needs both classes in the "
                f"validation split; choose metric='f1' or 'miou', or a larger split)"
            )
        if getattr(trial, "stopped", False):  # pruned: a half-trained model's curve
            return Scored(float(value))
        curve = evaluate(history.model, val_set, device=self.device, curve=True)["f1_curve"]
        return Scored(float(value), {CURVE_ATTR: curve})

    def _replicate(self, trial: Any) -> tuple[Any, Any, int]:
        """The data sets and seed of this call: the replicate's, or the plain ones."""
        replicate = getattr(trial, "replicate", None)
        if replicate is None:
            return self.train_set, self.val_set, self.seed
        train_set, val_set = (self.folds[replicate % len(self.folds)] if self.folds
                              else (self.train_set, self.val_set))
        return train_set, val_set, int(trial.replicate_seed)


__all__ = ["CURVE_ATTR", "NetworkObjective"]
