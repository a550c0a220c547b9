"""The runner interface: how a stage's trials are executed, and the job a runner is given.

A :class:`StageJob` holds everything about one stage that does not depend on where a
trial runs: asking the stage study for a trial (the incumbent copy included), turning an
objective's result into COMPLETE / FAIL / PRUNED (:mod:`hpo.engine.runners.outcome`),
telling the study, keeping RUNNING
trials alive, the budget and ``max_fail``. A :class:`Runner` only decides where and how
many trials run at once. The local runner runs them one by one in this process; a
parallel runner asks several trials, evaluates them elsewhere and tells each outcome.
"""

from __future__ import annotations

import copy
import logging
import math
import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.study._tell import _tell_with_warning
from optuna.trial import FrozenTrial, TrialState

from hpo.engine.context import EPOCHS_ATTR, HISTORY_ATTR, TrialContext
from hpo.engine.errors import StageFailedError
from hpo.engine.leases import (
    DRIVER_GONE,
    FAIL_KIND_ATTR,
    FAIL_REASON_ATTR,
    Keepalive,
    liveness_mode,
    reap_stale,
)
from hpo.engine.ledger import COPIED_ATTR, Ledger, best_trial
from hpo.engine.progress import format_duration
from hpo.engine.replicates import (
    CONFIRMS_ATTR,
    REPLICATES_ATTR,
    Replication,
    confirmation_bar,
    continued,
    incumbent_bar,
    race_bar,
    stage_incumbent,
)
from hpo.engine.runners.outcome import (
    DUPLICATE,
    INTERRUPTED,
    Objective,
    Outcome,
    as_two_argument,
    outcome_of,
    outcome_of_exception,
)
from hpo.engine.samplers.phased import (
    BAYES,
    CONFIRM,
    INCUMBENT,
    PHASE_ATTR,
    StageSampler,
    phase_of,
)
from hpo.engine.space import derive_seed
from hpo.engine.stage import Stage

_log = logging.getLogger("hpo")

_MAX_DUPLICATES = 3  # then a repeated point is run: the sampler insists (a tiny space)


@dataclass
class PendingTrial:
    """A trial asked from the stage study and not yet told.

    Args:
        trial: The Optuna trial.
        params: Every stage's parameters merged.
        context: The objective's trial context.
        phase: ``incumbent``, ``random``, ``bayes`` or ``confirm``.
    """

    trial: optuna.Trial
    params: dict[str, Any]
    context: TrialContext
    phase: str

    @property
    def number(self) -> int:
        """The trial's number in the stage study."""
        return self.trial.number


@dataclass
class Counts:
    """A stage's trials by state (``fail`` counts only the objective's failures)."""

    complete: int = 0
    running: int = 0
    waiting: int = 0
    fail: int = 0
    pruned: int = 0
    total: int = 0
    reasons: list[str] = field(default_factory=list)
    measured: set[tuple] = field(default_factory=set)
    """The points of the COMPLETE trials (``_point_key`` form)."""
    confirmations: int = 0
    """Confirmation runs the barrier queued (in any state): each adds one to the budget."""


@dataclass
class StageJob:
    """One stage, ready to be run by a runner.

    Args:
        study: The stage study (its sampler does incumbent / random / Bayesian phases).
        stage: The stage being tuned.
        fixed: The other stages' parameters (ledger values or defaults).
        objective: The objective, taking ``(params, trial)``.
        keepalive: Renews heartbeats or leases of this driver's trials.
        order: Parameter names in stage order, for the merged dict.
        copy_from: The previous stage's ledger entry; trial 0 is then a copy of it
            instead of a measurement (with its replicates, where it has several).
        metric: The metric reported as intermediate value.
        artifact_store: The search's artifact store.
        ledgers: Finished stages' entries (for artifacts).
        lease_seconds: How long a driver's lease lasts.
        callbacks: ``callback(study, frozen_trial)`` after every told trial.
        replication: How trials are replicated; with racing, each new trial's context
            carries the bar it races against (``context.race``).
    """

    study: optuna.Study
    stage: Stage
    fixed: Mapping[str, Any]
    objective: Callable[[dict[str, Any], TrialContext], Any]
    keepalive: Keepalive
    order: Sequence[str] = ()
    copy_from: Ledger | None = None
    metric: str | None = None
    artifact_store: Any = None
    ledgers: Mapping[str, Ledger] = field(default_factory=dict)
    lease_seconds: float = 60.0
    callbacks: Sequence[Callable[[optuna.Study, FrozenTrial], None]] = ()
    replication: Replication = field(default_factory=Replication)
    _started: float = field(default_factory=time.monotonic, init=False)
    _told: int = field(default=0, init=False)
    _last_reap: float = field(default=-math.inf, init=False)
    _last_counts: Counts = field(default_factory=Counts, init=False)
    _asking: int | None = field(default=None, init=False)
    _duplicates: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if isinstance(self.study.sampler, StageSampler):
            # Keep a trial alive from its creation, not from the end of its sampling: a
            # Bayesian sampler may take longer than a lease, and another driver would
            # fail the trial as orphaned meanwhile.
            self.study.sampler.on_trial = self._asked

    @property
    def budget(self) -> int:
        """COMPLETE trials the stage needs."""
        return self.stage.budget

    @property
    def max_fail(self) -> int:
        """Failed trials after which the stage stops (the stage's, or max(5, budget))."""
        return self.stage.max_fail or max(5, self.budget)

    def counts(self) -> Counts:
        """Count the stage's trials as stored now; reasons of the objective's failures."""
        counts = Counts()
        trials = self.study.get_trials(deepcopy=False)
        counts.total = len(trials)
        for t in trials:
            counts.confirmations += CONFIRMS_ATTR in t.user_attrs
            if t.state == TrialState.COMPLETE:
                counts.complete += 1
                counts.measured.add(_point_key(t.params))
            elif t.state == TrialState.RUNNING:
                counts.running += 1
            elif t.state == TrialState.WAITING:
                counts.waiting += 1
            elif t.state == TrialState.PRUNED:
                counts.pruned += 1
            elif t.state == TrialState.FAIL and t.user_attrs.get(FAIL_KIND_ATTR) not in (
                DRIVER_GONE, INTERRUPTED, DUPLICATE
            ):
                counts.fail += 1
                counts.reasons.append(t.user_attrs.get(FAIL_REASON_ATTR, "no reason recorded"))
        return counts

    def poll(self) -> Counts:
        """Fail trials of dead drivers, then count the stage's trials.

        Raises:
            StageFailedError: ``max_fail`` trials have failed.
        """
        counts = self.counts()
        # Reaping costs queries; it only matters when it can free a slot now, or at the
        # keepalive's pace (other drivers' trials cannot go stale faster than that).
        now = time.monotonic()
        if self.open_slots(counts) == 0 or now - self._last_reap >= self.keepalive.interval:
            self._last_reap = now
            if self._reap():
                counts = self.counts()
        if counts.fail >= self.max_fail:
            raise StageFailedError(self.stage.name, counts.fail, counts.reasons)
        self._last_counts = counts
        return counts

    def _reap(self) -> bool:
        reaped = reap_stale(self.study, lease_seconds=self.lease_seconds)
        for orphan in reaped:
            if orphan.user_attrs.get(PHASE_ATTR, INCUMBENT) == INCUMBENT and (
                orphan.number == 0 or PHASE_ATTR in orphan.user_attrs
            ):
                self._requeue_incumbent(orphan.number, "lost with its driver")
        return bool(reaped)

    def _requeue_incumbent(self, number: int, why: str) -> None:
        # Every stage starts from a measured point, so a lost incumbent is measured again.
        # Only the driver that failed it gets here (failing is atomic), so it is queued
        # once; the next ask of any driver pops it.
        _log.warning(
            "%s: the incumbent (trial %d) was %s; queued again",
            self.study.study_name, number, why,
        )
        self.study.enqueue_trial(
            {k: v for k, v in self.stage.defaults.items() if k in self.stage.space},
            user_attrs={PHASE_ATTR: INCUMBENT},
            skip_if_exists=False,
        )

    def is_done(self, counts: Counts) -> bool:
        """Whether the stage has its full budget COMPLETE (confirmation runs included)."""
        return counts.complete >= self.budget + counts.confirmations

    def open_slots(self, counts: Counts) -> int:
        """How many more trials may start without going over the budget.

        RUNNING trials (of any driver) count as if they will complete; when they fail,
        their slots open again.
        """
        return max(0, self.budget + counts.confirmations - counts.complete - counts.running)

    def ask(self) -> PendingTrial | None:
        """Start a trial; ``None`` when there is nothing to run (ask again).

        Trial 0 is the incumbent: the previous stage's best, told at once with its stored
        value (marked ``hpo:copied_from``) unless it is to be measured. ``None`` also
        when another driver failed the new trial as orphaned while it was being asked.
        """
        self._asking = None
        try:
            with warnings.catch_warnings():
                # Optuna warns that its heartbeat expects study.optimize; we renew it.
                warnings.filterwarnings("ignore", message="Heartbeat of storage")
                trial = self.study.ask(fixed_distributions=dict(self.stage.space))
        except UpdateFinishedTrialError:
            # The driver stalled past the grace period while it sampled (a machine far
            # too busy): another driver failed the new trial meanwhile.
            if self._asking is not None:
                self.keepalive.discard(self._asking)
            _log.warning("%s: a new trial was failed by another driver while it was asked; "
                         "asking again", self.study.study_name)
            return None
        self.keepalive.add(trial._trial_id)
        try:
            pending = self._start(trial)
            if pending is not None and self._proposed_twice(trial, pending.phase):
                return None
            return pending
        except UpdateFinishedTrialError:
            self.keepalive.discard(trial._trial_id)
            _log.warning("%s trial %d was failed by another driver while it was asked; "
                         "asking again", self.study.study_name, trial.number)
            return None

    def _asked(self, trial_id: int) -> None:
        """The stage sampler's hook: a trial was created and is about to be sampled."""
        self._asking = trial_id
        self.keepalive.add(trial_id)

    def _proposed_twice(self, trial: optuna.Trial, phase: str) -> bool:
        """Fail ``trial`` when an earlier trial in flight with it has its very point.

        Drivers leave a stage's barrier together and ask at once; a trial's point is
        stored only when its sampling ends, so samplers that see the same stage reach
        the same optimum (GP on a narrow space: the same corner, four times). Once its
        own point is stored, a trial waits (briefly) for the points of the earlier
        trials still being sampled; if one of the earlier trials that were in flight
        when it was created (RUNNING, or finished since) has the same point, it yields:
        FAIL of kind ``duplicate`` (not counted by ``max_fail``), and the sampler, now
        seeing that point, is asked again. The earliest trial of a group always runs.

        A point already COMPLETE in the stage (a Bayesian sampler sure of its optimum, GP
        on a narrow stage, proposes it again) would teach nothing: the trial is failed as
        ``duplicate`` too, and a random point of the stage space not yet measured is
        queued for the next ask. Only where every point of a small discrete space is
        measured does the repeat run.
        """
        if phase != BAYES:
            return False  # random points differ by trial number
        return self._measured_already(trial) or self._twin_in_flight(trial)

    def _measured_already(self, trial: optuna.Trial) -> bool:
        """Fail ``trial`` when its point is COMPLETE in the stage; queue an unmeasured one."""
        # The points of the last poll: every runner polls before it asks, so they are the
        # points the sampler saw (a read of the stage per trial cost as much as the rest
        # of the engine's bookkeeping). One finished by another driver since is caught by
        # the twin check below or, at worst, measured twice.
        measured = self._last_counts.measured
        if _point_key(trial.params) not in measured:
            return False
        # Seeded by stage and trial number: every driver and every resume draws alike.
        draw = optuna.samplers.RandomSampler(
            seed=derive_seed(0, self.study.study_name, "redraw", trial.number)
        )
        for _ in range(64):
            point = {
                name: draw.sample_independent(self.study, trial, name, dist)
                for name, dist in self.stage.space.items()
            }
            if _point_key(point) not in measured:
                self._tell(trial, Outcome(
                    TrialState.FAIL,
                    reason="not run: its point is already complete in this stage; a "
                    "random point was queued instead",
                    kind=DUPLICATE,
                ))
                self.study.enqueue_trial(
                    point, user_attrs={PHASE_ATTR: BAYES}, skip_if_exists=False
                )
                return True
        return False  # no unmeasured point found (a small discrete space): it may repeat

    def _twin_in_flight(self, trial: optuna.Trial) -> bool:
        """Fail ``trial`` when an earlier trial proposed at the same moment has its point."""
        if liveness_mode(self.study._storage) == "none":
            return False  # in memory: one driver, nothing proposed at the same moment
        last = self._last_counts
        if last.running == 0 and last.waiting == 0 and trial.number == last.total:
            # Nothing was in flight at the last poll and no trial was created since (this
            # is the next number): the sampler saw every earlier point. One driver alone
            # always takes this path, so it pays no extra read per trial.
            return False
        earlier = self._earlier_in_flight(trial)
        twins = [t.number for t in earlier if t.params == trial.params]
        if not twins or self._duplicates >= _MAX_DUPLICATES:
            self._duplicates = 0
            return False
        self._duplicates += 1
        self._tell(trial, Outcome(
            TrialState.FAIL,
            reason=f"not run: trial {twins[0]} has the same point (proposed at the same "
            f"moment by another driver)",
            kind=DUPLICATE,
        ))
        return True

    def _earlier_in_flight(self, trial: optuna.Trial) -> list[FrozenTrial]:
        """The earlier trials in flight when ``trial`` was created, once they have points.

        Waits (briefly) for those still being sampled to store their points.
        """
        deadline = time.monotonic() + min(10.0, self.lease_seconds / 2)
        while True:
            earlier = [
                t
                for t in self.study.get_trials(deepcopy=False)
                if t.number < trial.number
                and (
                    t.state == TrialState.RUNNING
                    or (
                        t.state == TrialState.COMPLETE
                        and t.datetime_complete is not None
                        and t.datetime_complete >= trial.datetime_start
                    )
                )
            ]
            sampling = [t for t in earlier if t.state == TrialState.RUNNING
                        and set(t.params) != set(self.stage.space)]
            if not sampling or time.monotonic() > deadline:
                return earlier
            time.sleep(0.05)

    def _start(self, trial: optuna.Trial) -> PendingTrial | None:
        # A re-queued incumbent carries its phase; only look when something was queued
        # (a read per trial otherwise). Other trials' phase follows from their number and
        # is written only for the incumbent, to keep a trial's commits few.
        phase = trial.user_attrs.get(PHASE_ATTR) if self._last_counts.waiting else None
        if phase is None:
            phase = phase_of(trial.number, self.stage.n_random)
            if phase == INCUMBENT:
                trial.set_user_attr(PHASE_ATTR, phase)
        if phase == INCUMBENT and self.copy_from is not None:
            source = self.copy_from
            trial.set_user_attr(
                COPIED_ATTR,
                {
                    "study": source.study_name,
                    "trial": source.trial_number,
                    "artifacts": source.artifacts,
                    **({"seeds": source.seeds} if source.seeds else {}),
                },
            )
            replicates = ({REPLICATES_ATTR: list(source.replicates)}
                          if len(source.replicates) > 1 else {})
            self._tell(trial, Outcome(TrialState.COMPLETE, value=source.value,
                                      attrs=replicates))
            return None
        params = {**self.fixed, **trial.params}
        if self.order:
            params = {name: params[name] for name in self.order if name in params}
        context = TrialContext(
            trial,
            params=params,
            stage=self.stage.name,
            metric=self.metric,
            artifact_store=self.artifact_store,
            ledgers=self.ledgers,
        )
        # with the incumbent's replicates taken over, its seeds: replicate i pairs with its
        context.seed_stage = self.copy_from.seeds if self.copy_from is not None else None
        # The incumbent gets every replicate (it measures the noise, and intensification
        # pairs with it); a plain search reads nothing more per trial.
        replication = self.replication
        if replication.replicated and (replication.racing or replication.intensifies):
            maximize = self.study.direction == optuna.study.StudyDirection.MAXIMIZE
            trials = [] if phase == INCUMBENT else self.study.get_trials(deepcopy=False)
            # only a queued trial can be a confirmation run
            confirmed = continued(trial, trials) if self._last_counts.waiting else None
            if phase == INCUMBENT:
                bar = incumbent_bar(replication, maximize=maximize)
            elif confirmed is not None:
                bar = confirmation_bar(trials, confirmed, replication, maximize=maximize,
                                       exclude=(HISTORY_ATTR,))
            else:
                bar = race_bar(trials, replication, maximize=maximize,
                               incumbent=stage_incumbent(trials))
            context.race = bar.to_dict() if bar is not None else None
            if confirmed is not None:
                # its point is COMPLETE in the stage by design: not a duplicate to redraw
                phase = CONFIRM
        return PendingTrial(trial, params, context, phase)

    def evaluate(self, pending: PendingTrial) -> Outcome:
        """Run the objective in this process and classify what happened.

        ``KeyboardInterrupt`` marks the trial FAIL and propagates.
        """
        try:
            result = self.objective(pending.params, pending.context)
        except KeyboardInterrupt:
            self.tell(pending, Outcome(TrialState.FAIL, reason="interrupted", kind=INTERRUPTED))
            raise
        except Exception as exc:  # noqa: BLE001 - any error of the objective fails the trial
            _log.warning(
                "%s trial %d failed: %s: %s",
                self.study.study_name, pending.number, type(exc).__name__, exc,
                exc_info=_log.isEnabledFor(logging.DEBUG),
            )
            return outcome_of_exception(exc, pending.context)
        return outcome_of(result, pending.context)

    def tell(self, pending: PendingTrial, outcome: Outcome) -> bool:
        """Record a trial's outcome in the stage study.

        Returns:
            Whether it was recorded: ``False`` when another driver had already failed the
            trial (its lease expired while it ran).
        """
        told = self._tell(pending.trial, outcome)
        if told and outcome.kind == INTERRUPTED and pending.phase == INCUMBENT:
            self._requeue_incumbent(pending.number, "interrupted")
        return told

    def _tell(self, trial: optuna.Trial, outcome: Outcome) -> bool:
        try:
            if outcome.reason is not None:
                trial.set_user_attr(FAIL_REASON_ATTR, outcome.reason)
            if outcome.state == TrialState.FAIL:
                trial.set_user_attr(FAIL_KIND_ATTR, outcome.kind)
            if outcome.epochs is not None:
                trial.set_user_attr(EPOCHS_ATTR, outcome.epochs)
            for key, value in outcome.attrs.items():
                trial.set_user_attr(key, value)
            values = outcome.value if outcome.state == TrialState.COMPLETE else None
            try:
                # As study.optimize tells: Study.tell reads the finished trial back
                # (a query per trial) to return it, which only the callbacks need.
                _tell_with_warning(self.study, trial, values, state=outcome.state)
            except ValueError:
                # Optuna refuses to tell a trial that is finished already ("Cannot tell a
                # FAIL trial"): the same case as the error below, caught one step earlier.
                if not self.study._storage.get_trial(trial._trial_id).state.is_finished():
                    raise
                raise UpdateFinishedTrialError(f"trial {trial.number} is finished") from None
        except UpdateFinishedTrialError:
            _log.warning(
                "%s trial %d was failed by another driver (its lease expired); result dropped",
                self.study.study_name, trial.number,
            )
            return False
        finally:
            self.keepalive.discard(trial._trial_id)
        self._told += 1
        self._log_progress(trial.number, outcome)
        if self.callbacks:
            frozen = self.study._storage.get_trial(trial._trial_id)
            for callback in self.callbacks:
                callback(self.study, copy.deepcopy(frozen))
        return True

    def _log_progress(self, number: int, outcome: Outcome) -> None:
        if not _log.isEnabledFor(logging.INFO):
            return
        trials = self.study.get_trials(deepcopy=False)
        done = sum(t.state == TrialState.COMPLETE for t in trials)
        best = best_trial(trials, self.study.direction)
        per_trial = (time.monotonic() - self._started) / max(1, self._told)
        eta = max(0, self.budget - done) * per_trial
        what = f"{outcome.value:.6g}" if outcome.value is not None else outcome.reason
        best_text = f"best {best.value:.6g} (#{best.number})" if best else "no best yet"
        _log.info(
            "%s trial %d %s %s | %d/%d complete, %s, ETA %s",
            self.study.study_name, number, outcome.state.name, what, done,
            self.budget, best_text, format_duration(eta),
        )


def _point_key(point: Mapping[str, Any]) -> tuple:
    return tuple(sorted(point.items()))


class Runner(ABC):
    """Executes a stage's trials until the stage has its budget COMPLETE.

    A runner must: :meth:`StageJob.poll` the stage and ask trials only while
    :meth:`StageJob.open_slots` is positive (other drivers' RUNNING trials count);
    evaluate each trial's merged parameters with the objective, reporting through the
    trial's :class:`~hpo.TrialContext` (or the equivalent); tell every outcome with
    :meth:`StageJob.tell` (PRUNED for trials stopped early, with ``hpo:epochs``); and
    return once :meth:`StageJob.is_done`. When no slot is open and the stage is not
    done, it waits (other drivers' trials may complete or fail), polling with a backoff.
    """

    name: str = "runner"

    @abstractmethod
    def run_stage(self, job: StageJob) -> None:
        """Run the stage's trials until its budget is COMPLETE.

        Args:
            job: The stage.

        Raises:
            StageFailedError: ``max_fail`` trials failed.
        """

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release what the runner holds (workers, clusters); called once per search."""


__all__ = [
    "Counts",
    "DUPLICATE",
    "INTERRUPTED",
    "Objective",
    "Outcome",
    "PHASE_ATTR",
    "PendingTrial",
    "Runner",
    "StageJob",
    "as_two_argument",
    "outcome_of",
    "outcome_of_exception",
]
