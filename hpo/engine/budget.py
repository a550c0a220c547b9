"""Splitting a total number of objective evaluations over the stages of a search.

Comparisons (``hpo compare``, the layer-wise benchmark) must give every method the same
number of evaluations. A stage after the first starts with the previous stage's best
copied in as a COMPLETE trial that costs nothing, so its ``Stage`` budget is its
evaluations + 1; the refine stage likewise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

RANDOM_SHARE = 1 / 3
"""Share of each stage's budget spent on random search (the incumbent or defaults first)."""
REFINE_SHARE = 0.2
"""Share of the total given to the refine stage, when there is one."""


@dataclass(frozen=True)
class StageBudget:
    """One stage's share of a total.

    Attributes:
        evaluations: Objective evaluations it spends.
        n_random: Random-search trials (incumbent included) of its ``Stage`` budget.
        n_bayes: Bayesian trials after them.
    """

    evaluations: int
    n_random: int
    n_bayes: int

    @property
    def budget(self) -> int:
        """COMPLETE trials of the stage, the free copied incumbent included."""
        return self.n_random + self.n_bayes


def n_random(budget: int, share: float = RANDOM_SHARE) -> int:
    """Random-search trials (the defaults or incumbent included) of a stage budget."""
    return max(1, round(budget * share))


def split_evaluations(
    total: int, dims: Sequence[int], refine: bool = False
) -> tuple[list[int], int]:
    """Evaluations per stage and for refine (0: none), summing to ``total``.

    Stages get the non-refine part in proportion to their number of parameters (largest
    remainder, ties to the earlier stage), and at least 2 each (the incumbent and one
    more); when raising small stages to 2 would overshoot, each gets 2 and the rest is
    shared in proportion.

    Args:
        total: Objective evaluations of the whole search.
        dims: Number of parameters of each stage, in order.
        refine: Whether a refine stage takes ``REFINE_SHARE`` of the total.

    Returns:
        Per-stage evaluations and the refine stage's.

    Raises:
        ValueError: ``total`` cannot give every stage 2 evaluations.
    """
    if not dims or min(dims) < 1:
        raise ValueError(f"every stage needs a parameter, got dimensions {list(dims)}")
    refine_evals = round(total * REFINE_SHARE) if refine else 0
    rest = total - refine_evals
    if rest < 2 * len(dims):
        raise ValueError(
            f"{total} evaluations are too few for {len(dims)} stages "
            f"(each needs 2{', plus refine' if refine else ''})"
        )
    exact = [rest * d / sum(dims) for d in dims]
    evals = [max(2, math.floor(x)) for x in exact]
    if sum(evals) > rest:
        # Raising small stages to 2 overshot: give 2 to each, the rest in proportion.
        exact = [(rest - 2 * len(dims)) * d / sum(dims) for d in dims]
        evals = [2 + math.floor(x) for x in exact]
    by_remainder = sorted(range(len(dims)), key=lambda i: (-(exact[i] % 1), i))
    for i in by_remainder[: rest - sum(evals)]:
        evals[i] += 1
    return evals, refine_evals


def plan_stages(
    total: int, dims: Sequence[int], refine: bool = False
) -> tuple[list[StageBudget], StageBudget | None]:
    """Stage budgets for ``total`` evaluations, the copied incumbents accounted for.

    Args:
        total: Objective evaluations of the whole search.
        dims: Number of parameters of each stage, in order.
        refine: Whether a refine stage gets a share.

    Returns:
        One :class:`StageBudget` per stage, and the refine stage's (``None``: no refine).
    """
    evals, refine_evals = split_evaluations(total, dims, refine)
    stages = []
    for i, e in enumerate(evals):
        budget = e + (1 if i else 0)  # stages after the first get the incumbent for free
        stages.append(StageBudget(e, n_random(budget), budget - n_random(budget)))
    refined = None
    if refine_evals:
        budget = refine_evals + 1
        refined = StageBudget(refine_evals, n_random(budget), budget - n_random(budget))
    return stages, refined


__all__ = [
    "RANDOM_SHARE",
    "REFINE_SHARE",
    "StageBudget",
    "n_random",
    "plan_stages",
    "split_evaluations",
]
