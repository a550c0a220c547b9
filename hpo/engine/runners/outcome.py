"""What an objective is, and how what it returns or raises becomes a trial's state.

Every runner classifies a trial the same way: a finite number is COMPLETE, anything else
(``None``, NaN, a non-number, an exception) FAIL with its reason, ``optuna.TrialPruned``
or a trial told to stop PRUNED. The FAIL *kind* says whose fault it was: only the
objective's failures (and its process's: timed out, killed) count towards ``max_fail``.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState

from hpo.engine.context import TrialContext
from hpo.engine.errors import TrialFaultError
from hpo.engine.replicates import Scored

OBJECTIVE_FAILED = "objective"
INTERRUPTED = "interrupted"
DUPLICATE = "duplicate"
"""``hpo:fail_kind`` of a trial not run: another driver had just proposed the same point."""

Objective = Callable[..., Any]
"""``objective(params)`` or ``objective(params, trial: TrialContext)`` -> a float."""


def as_two_argument(objective: Objective) -> Callable[[dict[str, Any], TrialContext], Any]:
    """Wrap a one-argument objective so every objective takes ``(params, trial)``."""
    try:
        positional = [
            p
            for p in inspect.signature(objective).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
        ]
    except (TypeError, ValueError):  # some builtins have no signature: assume (params)
        positional = []
    if len(positional) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in positional):
        return objective
    return _OneArgument(objective)


class _OneArgument:
    """A one-argument objective taking ``(params, trial)``.

    A class rather than a lambda: it pickles whenever the objective does (isolated
    trials, Ray workers).
    """

    def __init__(self, objective: Objective) -> None:
        self.objective = objective
        self.__wrapped__ = objective

    def __call__(self, params: dict[str, Any], trial: Any) -> Any:
        return self.objective(params)


@dataclass(frozen=True)
class Outcome:
    """How a trial ended.

    Args:
        state: COMPLETE, FAIL or PRUNED.
        value: The objective value (COMPLETE only).
        reason: Why it failed or was pruned.
        epochs: Epochs it reached, when it reported any.
        kind: For FAIL, whose fault: ``objective`` failures, ``timeout`` and ``killed``
            (an isolated trial's process, see :mod:`hpo.engine.runners.isolated`) count towards
            ``max_fail``; ``interrupted`` (Ctrl-C) and ``duplicate`` (another driver's
            trial had the same point) ones do not.
        attrs: User attributes to store on the trial (e.g. its replicate values).
    """

    state: TrialState
    value: float | None = None
    reason: str | None = None
    epochs: int | None = None
    kind: str = "objective"
    attrs: Mapping[str, Any] = field(default_factory=dict)


def outcome_of(result: Any, context: TrialContext | None = None) -> Outcome:
    """Classify an objective's return value: a finite float is COMPLETE, else FAIL.

    A trial whose context was told to stop (pruner, scheduler) is PRUNED whatever it
    returned, so an early value never competes with full-budget results. A
    :class:`~hpo.engine.replicates.Scored` result brings user attributes for the trial.

    Args:
        result: What the objective returned.
        context: The trial's context.

    Returns:
        The outcome.
    """
    epochs = context.epochs if context is not None and context.history else None
    if context is not None and context.stopped:
        return Outcome(TrialState.PRUNED, reason="stopped early by the pruner", epochs=epochs)
    if result is None:
        return Outcome(TrialState.FAIL, reason="objective returned None", epochs=epochs)
    attrs = dict(result.attrs) if isinstance(result, Scored) else {}
    try:
        value = float(result)
    except (TypeError, ValueError):
        return Outcome(
            TrialState.FAIL,
            reason=f"objective returned {type(result).__name__}, not a number",
            epochs=epochs,
        )
    if not math.isfinite(value):
        return Outcome(TrialState.FAIL, reason=f"objective returned {value}", epochs=epochs)
    return Outcome(TrialState.COMPLETE, value=value, epochs=epochs, attrs=attrs)


def outcome_of_exception(exc: BaseException, context: TrialContext | None = None) -> Outcome:
    """Classify an exception raised by an objective (``optuna.TrialPruned`` is PRUNED)."""
    epochs = context.epochs if context is not None and context.history else None
    if isinstance(exc, optuna.TrialPruned):
        return Outcome(TrialState.PRUNED, reason="pruned", epochs=epochs)
    if isinstance(exc, TrialFaultError):  # the reason already says what happened
        return Outcome(TrialState.FAIL, reason=exc.reason, epochs=epochs, kind=exc.kind)
    return Outcome(TrialState.FAIL, reason=f"{type(exc).__name__}: {exc}", epochs=epochs)


__all__ = [
    "DUPLICATE",
    "INTERRUPTED",
    "OBJECTIVE_FAILED",
    "Objective",
    "Outcome",
    "as_two_argument",
    "outcome_of",
    "outcome_of_exception",
]
