"""A layer-wise search as stored: every stage's state, ledger and counts, and the best.

What :meth:`hpo.LayerwiseSearch.status` returns; read from the storage alone, so it
needs no objective (``hpo status``, ``hpo report``, exports).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpo.engine.ledger import Ledger, read_ledger
from hpo.engine.record import SEARCH_ATTR
from hpo.engine.replicates import CONFIRMS_ATTR, estimate_best, gain_text, search_gain
from hpo.engine.replicates import summary as replicate_summary


@dataclass
class StageResult:
    """One stage study (one pass of a stage) as stored.

    Args:
        name: The slot's label: the stage name in the first pass, ``<stage>.c<k>`` in
            pass ``k`` (what ``from_stage`` takes), ``refine`` for the refine stage.
        index: Position in run order (0-based; the refine stage comes last).
        study_name: The stage study's name.
        study: The stage study (``None`` while the stage has not started).
        state: ``finished`` (ledger written), ``open`` (started) or ``pending``.
        ledger: The ledger entry of a finished stage.
        best_trial: The ledger's trial, or the best trial so far of an open stage.
        budget: COMPLETE trials the stage needs.
        n_complete: COMPLETE trials (the copied incumbent included).
        n_running: RUNNING trials.
        n_fail: FAIL trials (objective failures and dead drivers).
        n_pruned: PRUNED trials.
        cycle: The pass (1 for the first; the refine stage counts as the last pass).
        stage: The stage's own name (``name`` without the pass suffix).
    """

    name: str
    index: int
    study_name: str
    study: optuna.Study | None
    state: str
    ledger: Ledger | None
    best_trial: FrozenTrial | None
    budget: int
    n_complete: int = 0
    n_running: int = 0
    n_fail: int = 0
    n_pruned: int = 0
    cycle: int = 1
    stage: str = ""

    def __post_init__(self) -> None:
        self.stage = self.stage or self.name


@dataclass
class SearchResult:
    """A layer-wise search as stored: its stages and its merged best configuration.

    Args:
        study_name: The search's name.
        storage: The storage, password masked.
        direction: ``maximize`` or ``minimize``.
        stages: Every stage, the refine stage last when there is one.
        best_params: All parameters: finished stages at their ledger values, the others
            at their defaults.
        best_value: The value of the last finished stage's ledger entry.
        spec: The search's definition, as stored in ``hpo:search``.
    """

    study_name: str
    storage: str
    direction: str
    stages: list[StageResult]
    best_params: dict[str, Any]
    best_value: float | None
    spec: dict[str, Any] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        """Whether every stage has its ledger entry."""
        return all(s.state == "finished" for s in self.stages)

    def summary(self) -> str:
        """A plain-text table of the stages, for ``hpo status``."""
        metric = self.spec.get("metric") or "value"
        lines = [f"search {self.study_name} in {self.storage} ({self.direction} {metric})"]
        for s in self.stages:
            value = _ledger_text(s.ledger) if s.ledger else (
                f"best so far {s.best_trial.value:.6g} (#{s.best_trial.number})"
                if s.best_trial is not None and s.best_trial.value is not None
                else "-"
            )
            lines.append(
                f"  {s.index + 1:02d} {s.name:<16} {s.state:<8} "
                f"{s.n_complete}/{s.budget} complete, {s.n_running} running, "
                f"{s.n_fail} failed, {s.n_pruned} pruned  {value}"
            )
        best = f"{self.best_value:.6g}" if self.best_value is not None else "-"
        lines.append(f"best {metric} {best}; best params {self.best_params}")
        gain = search_gain(self)
        if gain is not None:
            lines.append(gain.text(metric))
        return "\n".join(lines)


def _ledger_text(ledger: Ledger) -> str:
    """``0.612 ± 0.021 (n=3, #4), +0.030 ± 0.012 over its incumbent``: a ledger entry."""
    text = f"{replicate_summary(ledger.value, ledger.replicates)} (#{ledger.trial_number})"
    if ledger.gain:
        text += f", {gain_text(ledger.gain)} over its incumbent"
    return text


def stage_result(
    name: str,
    index: int,
    study_name: str,
    study: optuna.Study | None,
    budget: int,
    *,
    stage: str,
    cycle: int,
) -> StageResult:
    """A stage as stored: ``pending`` without a study, ``finished`` with a ledger, else ``open``.

    Args:
        name: The slot's label.
        index: Its position in run order.
        study_name: The stage study's name.
        study: The stage study, ``None`` when it does not exist yet.
        budget: COMPLETE trials the stage needs (confirmation runs it holds are added).
        stage: The stage's own name.
        cycle: The pass.
    """
    if study is None:
        return StageResult(
            name, index, study_name, None, "pending", None, None, budget,
            cycle=cycle, stage=stage,
        )
    trials = study.get_trials(deepcopy=False)
    ledger = read_ledger(study)
    if ledger is not None:
        best = next((t for t in trials if t.number == ledger.trial_number), None)
    else:
        repeats = int(((study.user_attrs.get(SEARCH_ATTR) or {}).get("replication") or {})
                      .get("repeats", 1))
        best = estimate_best(trials, repeats=repeats,
                             maximize=study.direction == optuna.study.StudyDirection.MAXIMIZE)
    states = [t.state for t in trials]
    # confirmation runs the barrier queued raise the budget, as the runner counts it
    budget += sum(CONFIRMS_ATTR in t.user_attrs for t in trials)
    return StageResult(
        name=name,
        index=index,
        study_name=study_name,
        study=study,
        state="finished" if ledger else "open",
        ledger=ledger,
        best_trial=best,
        budget=budget,
        n_complete=states.count(TrialState.COMPLETE),
        n_running=states.count(TrialState.RUNNING),
        n_fail=states.count(TrialState.FAIL),
        n_pruned=states.count(TrialState.PRUNED),
        cycle=cycle,
        stage=stage,
    )


__all__ = ["SearchResult", "StageResult", "stage_result"]
