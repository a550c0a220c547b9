"""Is the training long enough? Stages whose best trial was still improving at its end.

Read from the storage alone (``hpo tune``'s summary, ``hpo status``, ``hpo report``):
each stage's best trial's learning curve (its per-epoch validation metric) is checked by
:func:`hpo.engine.curves.still_improving`.
"""

from __future__ import annotations

from dataclasses import dataclass

from hpo.engine import SearchResult
from hpo.engine.curves import Trend, still_improving
from hpo.engine.ledger import COPIED_ATTR

HINT = ("train longer: raise optim.epochs in [model.fixed], or widen its range where a "
        "stage tunes it")


@dataclass(frozen=True)
class ShortTraining:
    """A stage whose best trial was still improving when its training stopped.

    Args:
        stage: The stage's label.
        trial: The trial's number in its stage study.
        trend: What its last third of training added.
    """

    stage: str
    trial: int
    trend: Trend


def short_training(result: SearchResult) -> list[ShortTraining]:
    """Every stage whose best trial (not a copied incumbent) was cut short."""
    maximize = result.direction == "maximize"
    found = []
    for s in result.stages:
        best = s.best_trial
        if best is None or COPIED_ATTR in best.user_attrs:
            continue  # a copied incumbent trained in an earlier stage, checked there
        noise = s.ledger.noise if s.ledger is not None else None
        trend = still_improving(best, maximize, (noise or {}).get("sd"))
        if trend is not None:
            found.append(ShortTraining(s.name, best.number, trend))
    return found


def short_training_lines(result: SearchResult, metric: str) -> list[str]:
    """:func:`short_training` as one ``warning:`` line and the hint; none when all is well.

    The line names every flagged stage and details the first: with ``[tuning] repeats``
    a stage re-measures a configuration the previous stage chose, so one configuration
    cut short can show up in more than one stage.
    """
    found = short_training(result)
    if not found:
        return []
    first, trend = found[0], found[0].trend
    stages = ", ".join(f.stage for f in found)
    return [
        f"warning: the best trial of {'stage' if len(found) == 1 else 'stages'} {stages} "
        f"was still improving when its training stopped ({first.stage} #{first.trial}: "
        f"{metric} {trend.early:.4g} at best in its first {trend.early_steps} of "
        f"{trend.steps} epochs, {trend.last:.4g} at the last); such a value measures the "
        "training length as much as the parameters",
        f"  {HINT}",
    ]


__all__ = ["HINT", "ShortTraining", "short_training", "short_training_lines"]
