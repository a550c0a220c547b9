"""Learning curves: was a trial still improving when its training stopped?

A trial that gains most of its value in its last epochs was cut short. Its value then
mostly measures the training length, and it moves a lot with the seed: on the
quickstart scene, 8 epochs gave validation F1 0.54 with an sd of 0.10 over training
seeds, and 32 epochs 0.68 with 0.05. A search over other parameters at such a length
ranks noise. The check reads the intermediate values a trial reported (one per epoch),
so it needs nothing but the storage.
"""

from __future__ import annotations

from dataclasses import dataclass

from optuna.trial import FrozenTrial

STILL_IMPROVING_ATTR = "hpo:still_improving"
"""Stage user attribute: the ledger's trial was still improving when it stopped (a
:class:`Trend` as a dict, with the trial's number), for the dashboard."""

# Below this many reported steps a curve has no "last third" worth the name.
MIN_STEPS = 4
# ... and the last third must beat the first two thirds by this share of the final value.
RELATIVE = 0.05


@dataclass(frozen=True)
class Trend:
    """How much a trial's last third of training added.

    Args:
        steps: Steps (epochs) the trial reported.
        early_steps: The first two thirds of them.
        early: The best value of those.
        last: Its last value.
        gain: ``last - early`` in the better direction (positive: still improving).
    """

    steps: int
    early_steps: int
    early: float
    last: float
    gain: float


def trend(trial: FrozenTrial, maximize: bool = True) -> Trend | None:
    """The last third's gain over the best of the first two thirds, or ``None``.

    Args:
        trial: A trial with intermediate values (``None`` below :data:`MIN_STEPS` steps).
        maximize: Whether higher values are better.
    """
    values = [trial.intermediate_values[k] for k in sorted(trial.intermediate_values)]
    if len(values) < MIN_STEPS:
        return None
    cut = (2 * len(values)) // 3
    early = max(values[:cut]) if maximize else min(values[:cut])
    last = values[-1]
    return Trend(len(values), cut, early, last, last - early if maximize else early - last)


def still_improving(
    trial: FrozenTrial, maximize: bool = True, noise_sd: float | None = None
) -> Trend | None:
    """The trial's :class:`Trend` when its last third of training still added value.

    "Added value" means beating the best of the first two thirds by more than
    :data:`RELATIVE` of the final value and by more than one run's noise (``noise_sd``,
    where the stage measured it): a curve that only wobbles at its top is not flagged.

    Args:
        trial: The trial to check.
        maximize: Whether higher values are better.
        noise_sd: The standard deviation of one run's value, if known.
    """
    found = trend(trial, maximize)
    if found is None:
        return None
    bar = max(RELATIVE * abs(found.last), noise_sd or 0.0)
    return found if found.gain > bar else None


__all__ = ["MIN_STEPS", "RELATIVE", "STILL_IMPROVING_ATTR", "Trend", "still_improving", "trend"]
