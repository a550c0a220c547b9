"""A search's run order: each stage once per pass, then refine; what each is tuned with.

A *slot* is one run of a stage, one stage study: the stage with its pass's budget and the
pass's number. From the finished slots' ledger entries alone the schedule says how a slot
is tuned: the stage as it starts (a later pass from its latest tuned values), the values
of every other stage (:meth:`Schedule.fixed`), the slot whose value its incumbent copies,
and the merged best configuration. It opens no storage: the refine stage, narrowed around
the best trials, gets their trials from the caller.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from optuna.trial import FrozenTrial

from hpo.engine.ledger import Ledger
from hpo.engine.space import narrow
from hpo.engine.stage import REFINE, Refine, Stage


@dataclass(frozen=True)
class Slot:
    """One run of a stage: the stage with this pass's budget, and the pass's number."""

    stage: Stage
    cycle: int

    @property
    def label(self) -> str:
        """``<stage>`` in the first pass, ``<stage>.c<k>`` in pass ``k``."""
        return self.stage.name if self.cycle == 1 else f"{self.stage.name}.c{self.cycle}"


class Schedule:
    """The slots of a search in run order, the refine stage (if any) after the last pass.

    Args:
        stages: The stages, in tuning order.
        refine: The refine stage's settings, or ``None``.
        cycles: Passes over the stages.
        cycle_budget: ``(n_random, n_bayes)`` of every stage in passes after the first;
            ``None`` repeats each stage's own budget.
    """

    def __init__(
        self,
        stages: Sequence[Stage],
        *,
        refine: Refine | None,
        cycles: int,
        cycle_budget: tuple[int, int] | None,
    ) -> None:
        self.stages = list(stages)
        self.refine = refine
        self.cycles = cycles
        self.slots = [
            Slot(stage if cycle == 1 or cycle_budget is None
                 else replace(stage, n_random=cycle_budget[0], n_bayes=cycle_budget[1]), cycle)
            for cycle in range(1, cycles + 1)
            for stage in self.stages
        ]

    @property
    def labels(self) -> list[str]:
        """Slot labels in run order (``<stage>.c<k>`` in pass ``k > 1``), ``refine`` last."""
        return [s.label for s in self.slots] + ([REFINE] if self.refine else [])

    def is_refine(self, index: int) -> bool:
        """Whether ``index`` is the refine stage (after every slot)."""
        return index >= len(self.slots)

    def name_at(self, index: int) -> str:
        """The stage name (the ledger's key) at ``index``."""
        return REFINE if self.is_refine(index) else self.slots[index].stage.name

    def cycle_at(self, index: int) -> int:
        """The pass at ``index`` (the refine stage counts as the last)."""
        return self.cycles if self.is_refine(index) else self.slots[index].cycle

    def budget_at(self, index: int) -> int:
        """COMPLETE trials the stage at ``index`` needs."""
        if self.is_refine(index):
            assert self.refine is not None  # only indices of existing stages
            return self.refine.n_random + self.refine.n_bayes
        return self.slots[index].stage.budget

    def stage_at(self, index: int, ledgers: Mapping[str, Ledger]) -> Stage:
        """The slot's stage as tuned; a later pass starts from its ledger values."""
        slot = self.slots[index]
        if slot.cycle == 1:
            return slot.stage
        # The incumbent (trial 0) of a later pass is the stage's latest tuned values.
        return replace(slot.stage, defaults=dict(ledgers[slot.stage.name].params))

    def order(self) -> list[str]:
        """Every parameter name, in stage order."""
        return [name for stage in self.stages for name in stage.space]

    def fixed(self, index: int, ledgers: Mapping[str, Ledger]) -> dict[str, Any]:
        """Values of every parameter outside the stage at ``index``: ledger or default."""
        if self.is_refine(index):
            return {}  # refine tunes all parameters
        fixed: dict[str, Any] = {}
        for other in self.stages:
            if other.name == self.name_at(index):
                continue
            entry = ledgers.get(other.name)
            fixed.update(entry.params if entry else other.defaults)
        return fixed

    def merged(self, ledgers: Mapping[str, Ledger]) -> dict[str, Any]:
        """All parameters: tuned stages at their ledger values, the others at defaults."""
        merged: dict[str, Any] = {}
        for stage in self.stages:
            entry = ledgers.get(stage.name)
            merged.update(entry.params if entry else stage.defaults)
        if REFINE in ledgers:
            merged.update(ledgers[REFINE].params)
        return merged

    def incumbent_source(self, index: int, ledgers: Mapping[str, Ledger]) -> Ledger | None:
        """The entry whose value the incumbent at ``index`` copies (``None``: the first)."""
        if index == 0:
            return None  # the first stage measures its defaults
        # The slot just before is the last one tuned: its value is the incumbent's.
        return ledgers[self.name_at(index - 1)]

    def refine_stage(
        self,
        ledgers: Mapping[str, Ledger],
        complete_trials: Callable[[int], Sequence[FrozenTrial]],
        *,
        maximize: bool,
    ) -> Stage:
        """The refine stage: all parameters, narrowed around the incumbent and the best trials.

        Args:
            ledgers: Every stage's latest entry.
            complete_trials: The COMPLETE trials of the slot at an index.
            maximize: Whether higher values are better.
        """
        refine = self.refine
        assert refine is not None  # only reached when the search has a refine stage
        incumbent = self.merged(ledgers)
        sign = -1 if maximize else 1
        space = {}
        for stage in self.stages:
            # Every pass of the stage: its best trials may come from any of them.
            trials = [
                t
                for index, slot in enumerate(self.slots)
                if slot.stage.name == stage.name
                for t in complete_trials(index)
            ]
            top = sorted(trials, key=lambda t: (sign * t.value, t.number))[: refine.top_k]
            for name, dist in stage.space.items():
                seen = [t.params[name] for t in top if name in t.params]
                space[name] = narrow(
                    dist,
                    incumbent[name],
                    width=refine.width,
                    min_int_steps=refine.min_int_steps,
                    seen=seen,
                )
        return Stage(
            name=REFINE,
            space=space,
            defaults=incumbent,
            n_random=refine.n_random,
            n_bayes=refine.n_bayes,
            sampler=refine.sampler,
            max_fail=refine.max_fail,
        )


__all__ = ["Schedule", "Slot"]
