"""Noisy objectives: a configuration scored as the mean over replicates, raced.

One training run of a network is one draw of a noisy objective: on the quickstart the
seed-to-seed spread of one configuration's validation F1 (sd 0.05-0.11) is as large as
the differences a stage ranks, so the maximum over single-seed trials is mostly luck (a
winner's curse). With :class:`Replication` a trial is scored as the mean over ``repeats``
replicates (training seeds, or folds: the objective reads :attr:`ReplicateView.replicate`
and picks its own), and the ledger hands on the best *mean* among trials with every
replicate (:func:`estimate_best`), never a single lucky run.

Racing keeps it affordable: after each replicate a configuration is compared, replicate
by replicate (the same seeds / folds: a paired comparison), with the best fully
replicated configuration of the stage; once it trails by more than ``z`` standard errors
of the stage's noise, it gets no more replicates. Such a trial stays COMPLETE with the
mean of the replicates it had (``hpo:raced_out``), counts towards the budget, and can
never become the stage's best.

Intensification (``max_repeats``) gives a close contender more replicates, paired with
the incumbent's. A contender that starts while the incumbent is still being measured has
nothing to pair with; once the stage's budget is spent, the barrier gives the stage's best,
if it is such an undecided contender, a *confirmation run* (:func:`to_confirm`): a trial of
the same point that goes on from its replicates (``hpo:confirms``) and supersedes it.

Everything here is generic: it knows nothing of networks or data.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from optuna.trial import FrozenTrial, TrialState
from scipy.special import ndtr, stdtrit

from hpo.engine.errors import HPOError, SpecError
from hpo.engine.samplers.phased import INCUMBENT, PHASE_ATTR
from hpo.engine.space import derive_seed

REPLICATES_ATTR = "hpo:replicates"
"""Trial user attribute: the value of every replicate the trial ran, in order."""
RACED_ATTR = "hpo:raced_out"
"""Trial user attribute: ``True`` when racing stopped the trial's replicates early."""
NOISE_ATTR = "hpo:noise"
"""Stage study user attribute: the objective's noise as measured in the stage."""
CONFIRMS_ATTR = "hpo:confirms"
"""Trial user attribute of a confirmation run: the number of the trial it continues."""
MAX_CONFIRMATIONS = 2
"""Confirmation runs a stage may add to its budget: the best, and one runner-up should
the best fall back once confirmed."""


@dataclass(frozen=True)
class Replication:
    """How a search scores one configuration when its objective is noisy.

    Args:
        repeats: Replicates per configuration (1: the plain single-run behaviour).
        racing: Stop replicating a configuration once it cannot beat the stage's best.
        z: How many standard errors a configuration must trail the best by before
            racing drops it (larger: fewer configurations dropped, more compute).
        switch_z: How sure (a normal quantile, read through Student's t with the
            replicates' degrees of freedom, see :func:`switch_bar`) the stage's best must
            be of its paired gain over the stage's incumbent to replace it in the ledger.
            The best of several noisy means is biased up (on the quickstart each stage's
            best beat its incumbent by 0.07-0.12 F1 at 1.4-2.7 se, and lost it again with
            fresh seeds); below the bar the incumbent is handed on.
        max_repeats: Intensification: up to this many replicates (``None``: ``repeats``).
            The stage's incumbent runs all of them, and a configuration that beats it
            after ``repeats`` replicates, but not yet by ``switch_z``, runs more, paired
            replicate by replicate with the incumbent's, until it wins or stops winning.
            Three replicates ask a gain for 4.5 standard errors; a real gain of 2 se then
            mostly goes unseen, and a few more replicates of the two that matter settle it.
            A stage's best that could not be paired then gets a confirmation run
            (:func:`to_confirm`).

    Raises:
        SpecError: ``repeats`` below 1, ``z`` / ``switch_z`` not positive, or
            ``max_repeats`` below ``repeats``.
    """

    repeats: int = 1
    racing: bool = True
    z: float = 1.0
    switch_z: float = 2.0
    max_repeats: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.repeats, bool) or not isinstance(self.repeats, int) \
                or self.repeats < 1:
            raise SpecError(f"repeats = {self.repeats!r}", key="tuning.repeats",
                            hint="an integer >= 1 (1: one training run per trial)")
        for name in ("z", "switch_z"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise SpecError(f"{name} = {value!r}", key=f"tuning.{name}",
                                hint="a positive number of standard errors, e.g. 1.0")
        most = self.max_repeats
        if most is not None and (isinstance(most, bool) or not isinstance(most, int)
                                 or most < self.repeats):
            raise SpecError(f"max_repeats = {most!r}", key="tuning.max_repeats",
                            hint=f"an integer >= repeats ({self.repeats}), e.g. "
                                 f"{2 * self.repeats}")

    @property
    def replicated(self) -> bool:
        """Whether a trial runs more than one replicate."""
        return self.repeats > 1

    @property
    def most(self) -> int:
        """The most replicates a configuration may run."""
        return self.max_repeats if self.max_repeats is not None else self.repeats

    @property
    def intensifies(self) -> bool:
        """Whether close contenders earn replicates beyond ``repeats``."""
        return self.replicated and self.most > self.repeats

    def to_dict(self) -> dict[str, Any]:
        """The JSON-able form (in ``hpo:search`` and the stage keys).

        ``max_repeats`` only where it intensifies: earlier searches keep their keys.
        """
        return {"repeats": self.repeats, "racing": self.racing, "z": self.z,
                "switch_z": self.switch_z} | (
                    {"max_repeats": self.most} if self.most > self.repeats else {})

    @classmethod
    def coerce(cls, value: Replication | int | Mapping[str, Any] | None) -> Replication:
        """A :class:`Replication` from itself, a repeat count, a dict or ``None``."""
        if value is None:
            return cls()
        if isinstance(value, Replication):
            return value
        if isinstance(value, Mapping):
            return cls(**value)
        return cls(repeats=value)


@dataclass(frozen=True)
class RaceBar:
    """What a new trial races against: the stage's best fully replicated trial.

    Args:
        values: That trial's replicate values, by replicate index.
        sd: The stage's noise (pooled sd of one replicate), ``None`` while unmeasured.
        maximize: Whether higher is better.
        z: Standard errors a configuration may trail by and still go on.
        incumbent: The stage incumbent's replicate values, when intensifying.
        is_incumbent: The trial *is* the incumbent: it runs every replicate allowed.
        resume: A confirmation run: the replicate values of the trial it continues (it
            goes on at replicate ``len(resume)``).
        resume_attrs: That trial's per-replicate attributes (e.g. F1 curves), one list
            entry per replicate, continued the same way.
    """

    values: tuple[float, ...]
    sd: float | None
    maximize: bool
    z: float
    incumbent: tuple[float, ...] | None = None
    is_incumbent: bool = False
    resume: tuple[float, ...] = ()
    resume_attrs: Mapping[str, list[Any]] | None = field(default=None, hash=False)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-able form (it travels to worker processes and Ray trials)."""
        return {"values": list(self.values), "sd": self.sd, "maximize": self.maximize,
                "z": self.z, "is_incumbent": self.is_incumbent,
                "incumbent": list(self.incumbent) if self.incumbent is not None else None
                } | ({"resume": list(self.resume), "resume_attrs": dict(self.resume_attrs or {})}
                     if self.resume else {})

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> RaceBar | None:
        """Rebuild a bar from :meth:`to_dict` (``None`` stays ``None``)."""
        if not data:
            return None
        incumbent = data.get("incumbent")
        return cls(tuple(float(v) for v in data["values"]), data.get("sd"),
                   bool(data["maximize"]), float(data["z"]),
                   tuple(float(v) for v in incumbent) if incumbent is not None else None,
                   bool(data.get("is_incumbent", False)),
                   tuple(float(v) for v in data.get("resume", ())),
                   data.get("resume_attrs"))

    def undecided(self, values: Sequence[float], switch_z: float) -> bool:
        """Whether a configuration deserves another replicate (intensification).

        It does while it beats the incumbent, but not yet by ``switch_z``
        (:func:`switch_bar`), and the incumbent has a replicate to pair the next one with.
        """
        if self.incumbent is None or len(self.incumbent) <= len(values):
            return False
        gain = paired_gain(values, self.incumbent)
        if gain is None:
            return False
        mean = gain["mean"] if self.maximize else -gain["mean"]
        return 0 < mean <= switch_bar(switch_z, gain["n"]) * gain["se"]

    def hopeless(self, values: Sequence[float]) -> bool:
        """Whether a configuration with these first replicates cannot beat the bar.

        The comparison is paired (replicate ``i`` against the bar's replicate ``i``: the
        same seed or fold), with the standard error of a difference of two noisy runs.
        """
        k = min(len(values), len(self.values))
        if k == 0 or self.sd is None or not self.sd > 0:
            return False
        diff = statistics.fmean(values[:k]) - statistics.fmean(self.values[:k])
        if not self.maximize:
            diff = -diff
        return diff + self.z * math.sqrt(2.0) * self.sd / math.sqrt(k) < 0


@dataclass
class Scored:
    """An objective value with user attributes the runner stores on the trial.

    Args:
        value: The trial's value.
        attrs: JSON-able user attributes (e.g. ``hpo:replicates``).
    """

    value: float
    attrs: dict[str, Any] = field(default_factory=dict)

    def __float__(self) -> float:
        return float(self.value)


class ReplicateView:
    """The trial context one replicate sees: the trial's, plus which replicate it is.

    Only replicate 0 reports intermediate values to the trial (its learning curve is
    what the pruner compares, one curve per trial); every replicate's epochs are kept in
    the trial's history with a ``replicate`` column.
    """

    def __init__(self, context: Any, replicate: int, repeats: int, seed: int) -> None:
        self._context = context
        self.replicate = replicate
        """The replicate's index: pick the training seed or fold from it."""
        self.replicates = repeats
        """How many replicates a configuration gets at most."""
        self.replicate_seed = seed
        """A training seed for this replicate: derived from the search seed, the stage
        and the index, so all trials of a stage share their seeds (paired comparisons).
        A stage that takes over its incumbent's replicates (``Ledger.seeds``) uses the
        seeds they were measured with; one that measures its incumbent again, others."""
        self.stopped = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)

    def report(self, epoch: int, value: float | None = None, **metrics: float | None) -> None:
        """Report an epoch: to the trial for replicate 0, to the history for the rest."""
        if self.replicate == 0:
            self._context.report(epoch, value, **metrics)
        else:
            self._context.history.append({"epoch": int(epoch), "replicate": self.replicate,
                                          **metrics})

    def should_stop(self) -> bool:
        """The pruner decides on replicate 0; later replicates run their full budget."""
        if self.replicate == 0:
            self.stopped = bool(self._context.should_stop())
        return self.stopped


class ReplicatedObjective:
    """Runs an objective once per replicate and returns their mean, racing as it goes.

    Args:
        objective: ``objective(params, trial)``; ``trial`` is a :class:`ReplicateView`.
        replication: The settings.
        seed: The search seed (replicate seeds derive from it and the stage).
    """

    def __init__(self, objective: Any, replication: Replication, seed: int) -> None:
        self.objective = objective
        self.replication = replication
        self.seed = int(seed)

    def __getattr__(self, name: str) -> Any:
        # The wrapped objective's attributes (``metric``, ``direction``, the driver-side
        # hooks of a progress display) stay visible; dunders are never borrowed.
        if name.startswith("__") or name in ("objective", "replication", "seed"):
            raise AttributeError(name)
        return getattr(self.objective, name)

    @property
    def __wrapped__(self) -> Any:
        """What this wraps, with driver-side layers (e.g. a progress display) peeled off.

        A runner with worker processes keeps such layers (``driver_trial_started`` and
        ``__wrapped__``) in the driver and ships what they wrap: this objective's replicate
        loop must go with it, so below such a layer this is the loop around its inner
        objective.
        """
        inner = self.objective
        if hasattr(inner, "driver_trial_started") and hasattr(inner, "__wrapped__"):
            return ReplicatedObjective(inner.__wrapped__, self.replication, self.seed)
        return inner

    def __call__(self, params: dict[str, Any], trial: Any) -> Any:
        """Mean over the replicates this configuration earns.

        Raises:
            HPOError: A replicate's value is missing or not finite (the trial is FAIL).
        """
        bar = RaceBar.from_dict(getattr(trial, "race", None))
        repeats, most = self.replication.repeats, self.replication.most
        # a confirmation run goes on from the replicates of the trial it continues
        values: list[float] = list(bar.resume) if bar is not None else []
        extra: dict[str, list[Any]] = {
            key: list(items) for key, items in ((bar.resume_attrs or {}) if bar else {}).items()}
        raced = False
        seeds = getattr(trial, "seed_stage", None) or trial.stage
        for r in range(len(values), most):
            if r >= repeats and not (bar is not None and (
                    bar.is_incumbent or bar.undecided(values, self.replication.switch_z))):
                break
            view = ReplicateView(trial, r, most, replicate_seed(self.seed, seeds, r))
            result = self.objective(params, view)
            if view.stopped:
                return result  # pruned on replicate 0: the runner records PRUNED
            value = _finite(result, r)
            values.append(value)
            for key, item in (result.attrs if isinstance(result, Scored) else {}).items():
                extra.setdefault(key, []).append(item)  # one entry per replicate
            if (self.replication.racing and bar is not None and r + 1 < repeats
                    and bar.hopeless(values)):
                raced = True
                break
        attrs: dict[str, Any] = {**extra, REPLICATES_ATTR: values}
        if raced:
            attrs[RACED_ATTR] = True
        return Scored(statistics.fmean(values), attrs)


def replicate_seed(seed: int, stage: str, replicate: int) -> int:
    """The training seed of replicate ``replicate`` in stage ``stage`` of a search."""
    return derive_seed(seed, stage, f"r{replicate}")


def _finite(result: Any, replicate: int) -> float:
    value = float(result) if isinstance(result, int | float | Scored) else math.nan
    if not math.isfinite(value):
        raise HPOError(f"replicate {replicate} returned {result!r}, not a finite number")
    return value


# ------------------------------------------------------------------ reading the storage


def replicates_of(trial: FrozenTrial) -> list[float]:
    """A trial's replicate values (its value alone for a trial without replicates)."""
    stored = trial.user_attrs.get(REPLICATES_ATTR)
    if stored:
        return [float(v) for v in stored]
    return [float(trial.value)] if trial.value is not None else []


def superseded(trials: Sequence[FrozenTrial]) -> set[int]:
    """Numbers of the trials a COMPLETE confirmation run continued.

    The run holds their replicates and more, so they no longer count on their own.
    """
    return {int(t.user_attrs[CONFIRMS_ATTR]) for t in trials
            if t.state == TrialState.COMPLETE and CONFIRMS_ATTR in t.user_attrs}


def continued(trial: Any, trials: Sequence[FrozenTrial]) -> FrozenTrial | None:
    """The trial that ``trial``, a confirmation run, continues; ``None`` for any other."""
    number = trial.user_attrs.get(CONFIRMS_ATTR)
    return next((t for t in trials if t.number == number), None) if number is not None else None


def stage_incumbent(trials: Sequence[FrozenTrial]) -> FrozenTrial | None:
    """The stage's incumbent: its COMPLETE trial of the incumbent phase.

    Trial 0, or the incumbent queued again after trial 0 was lost (then a random trial
    may have completed first); the first COMPLETE trial for storages written before the
    phase was stored.
    """
    complete = sorted((t for t in trials if t.state == TrialState.COMPLETE),
                      key=lambda t: t.number)
    return next((t for t in complete if t.user_attrs.get(PHASE_ATTR) == INCUMBENT),
                complete[0] if complete else None)


def _usable(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    gone = superseded(trials)
    return [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None
            and math.isfinite(t.value) and t.number not in gone]


def full_trials(trials: Sequence[FrozenTrial], repeats: int) -> list[FrozenTrial]:
    """COMPLETE trials with at least ``repeats`` replicates (all of them when 1)."""
    return [t for t in _usable(trials) if len(replicates_of(t)) >= repeats]


def estimate_best(
    trials: Sequence[FrozenTrial], *, repeats: int, maximize: bool
) -> FrozenTrial | None:
    """The stage's best configuration by its mean over a full set of replicates.

    Trials with fewer replicates (raced out, or older single runs) are not eligible, so
    a configuration that was lucky once cannot win; ties go to the lowest trial number.
    Falls back to every COMPLETE trial when none has a full set.
    """
    pool = full_trials(trials, repeats) or _usable(trials)
    if not pool:
        return None
    sign = -1.0 if maximize else 1.0
    return min(pool, key=lambda t: (sign * float(t.value), t.number))


def noise_of(trials: Sequence[FrozenTrial]) -> dict[str, Any] | None:
    """The noise of one replicate, pooled over every trial with two replicates or more.

    Returns:
        ``{"sd": pooled standard deviation, "dof": degrees of freedom, "trials": n}``,
        or ``None`` when no trial has two replicates.
    """
    squares, dof, n = 0.0, 0, 0
    for t in _usable(trials):
        values = replicates_of(t)
        if len(values) >= 2:
            squares += statistics.variance(values) * (len(values) - 1)
            dof += len(values) - 1
            n += 1
    if dof == 0:
        return None
    return {"sd": math.sqrt(squares / dof), "dof": dof, "trials": n}


def paired_gain(best: Sequence[float], base: Sequence[float]) -> dict[str, Any] | None:
    """Mean and standard error of ``best - base`` over the replicates both have.

    Replicate ``i`` of both ran with the same seed / fold, so the difference cancels
    what the two share. ``None`` with fewer than two pairs.
    """
    k = min(len(best), len(base))
    if k < 2:
        return None
    diffs = [b - a for b, a in zip(best[:k], base[:k], strict=True)]
    return {"mean": statistics.fmean(diffs), "se": standard_error(diffs), "n": k}


def standard_error(values: Sequence[float]) -> float | None:
    """Standard error of the mean of ``values`` (``None`` below two values)."""
    if len(values) < 2:
        return None
    return statistics.stdev(values) / math.sqrt(len(values))


def gain_text(gain: Mapping[str, Any]) -> str:
    """``+0.0730 ± 0.0130``: a paired gain (``mean``, ``se``) as the toolkit prints it."""
    return f"{gain['mean']:+.4f} ± {gain['se']:.4f}"


def switch_bar(z: float, n: int) -> float:
    """Standard errors a paired gain over ``n`` replicates must exceed to count.

    ``z`` is read as a normal quantile (2: 97.7 % one-sided) and turned into Student's t
    quantile with ``n - 1`` degrees of freedom: the standard error of three paired
    differences is itself a rough guess (on the quickstart, a learning rate that beat its
    incumbent by 5.6 se over three seeds lost on five fresh ones).
    """
    # scipy.special rather than scipy.stats: the same quantile for a quarter of the import
    # time, which every `hpo` command pays.
    return float(stdtrit(max(1, n - 1), ndtr(z)))


def race_bar(
    trials: Sequence[FrozenTrial], replication: Replication, *, maximize: bool,
    incumbent: FrozenTrial | None = None,
) -> RaceBar | None:
    """What a new trial of the stage races against (``None``: nothing to race yet).

    Args:
        trials: The stage's trials so far.
        replication: The settings.
        maximize: Whether higher is better.
        incumbent: The stage's incumbent, once COMPLETE: intensification pairs with it.
    """
    if not (replication.replicated and (replication.racing or replication.intensifies)):
        return None
    best = estimate_best(full_trials(trials, replication.repeats),
                         repeats=replication.repeats, maximize=maximize)
    pair = (tuple(replicates_of(incumbent))
            if replication.intensifies and incumbent is not None else None)
    if best is None and pair is None:
        return None
    noise = noise_of(trials)
    values = tuple(replicates_of(best)) if best is not None and replication.racing else ()
    return RaceBar(values, noise["sd"] if noise else None, maximize, replication.z, pair)


def to_confirm(
    trials: Sequence[FrozenTrial], replication: Replication, *, maximize: bool
) -> FrozenTrial | None:
    """The trial that earns a confirmation run before the stage's ledger is written.

    The stage's best (:func:`estimate_best`) does when it beats the incumbent (the
    stage's first COMPLETE trial), but not yet by ``switch_z``, and the incumbent has
    replicates left to pair more with: a challenger that ran while the incumbent was
    still being measured could not be intensified then. Never the incumbent, a trial
    confirmed (or being confirmed) already, or more than :data:`MAX_CONFIRMATIONS` a stage.
    """
    if not replication.intensifies:
        return None
    confirming = [t for t in trials if CONFIRMS_ATTR in t.user_attrs]
    incumbent = stage_incumbent(trials)
    if len(confirming) >= MAX_CONFIRMATIONS or incumbent is None:
        return None
    best = estimate_best(trials, repeats=replication.repeats, maximize=maximize)
    done = {int(t.user_attrs[CONFIRMS_ATTR]) for t in confirming}
    if (best is None or best.number == incumbent.number or best.number in done
            or CONFIRMS_ATTR in best.user_attrs):
        return None
    bar = RaceBar((), None, maximize, replication.z, tuple(replicates_of(incumbent)))
    return best if bar.undecided(replicates_of(best), replication.switch_z) else None


def confirmation_bar(trials: Sequence[FrozenTrial], confirmed: FrozenTrial,
                     replication: Replication, *, maximize: bool,
                     exclude: Sequence[str] = ()) -> RaceBar | None:
    """The bar of a confirmation run of ``confirmed``.

    Paired with the incumbent, it goes on from ``confirmed``'s replicates and their
    per-replicate attributes.

    Args:
        trials: The stage's trials.
        confirmed: The trial the run continues.
        replication: The settings.
        maximize: Whether higher is better.
        exclude: User attributes that are not per replicate though they may look so
            (lists that the runner, not the objective, writes).
    """
    bar = race_bar(trials, replication, maximize=maximize, incumbent=stage_incumbent(trials))
    if bar is None:
        return None
    values = replicates_of(confirmed)
    attrs = {k: v for k, v in confirmed.user_attrs.items()
             if k != REPLICATES_ATTR and k not in exclude and isinstance(v, list)
             and len(v) == len(values)}
    return replace(bar, resume=tuple(values), resume_attrs=attrs)


def incumbent_bar(replication: Replication, *, maximize: bool) -> RaceBar | None:
    """The bar of a stage's incumbent: all ``max_repeats`` replicates (``None``: plain)."""
    if not replication.intensifies:
        return None
    return RaceBar((), None, maximize, replication.z, is_incumbent=True)


@dataclass(frozen=True)
class Gain:
    """The improvement of a search's best configuration over the untuned defaults.

    Both sides are means over their replicates; the uncertainty is the standard error of
    their difference (the two were measured with different seeds: unpaired), ``None``
    when either side is one run.

    Args:
        untuned: The defaults' replicate values (trial 0 of the first stage).
        best: The best configuration's replicate values (the last ledger entry).
    """

    untuned: tuple[float, ...]
    best: tuple[float, ...]

    @property
    def delta(self) -> float:
        """Best minus untuned (mean over replicates each)."""
        return statistics.fmean(self.best) - statistics.fmean(self.untuned)

    @property
    def se(self) -> float | None:
        """Standard error of :attr:`delta`; ``None`` unless both sides have 2+ values."""
        best, untuned = standard_error(self.best), standard_error(self.untuned)
        if best is None or untuned is None:
            return None
        return math.hypot(best, untuned)

    def text(self, metric: str) -> str:
        """``f1: untuned defaults 0.55 ± 0.02 (n=3) -> best 0.61 ± 0.03 (n=3), +0.06 ± 0.04``."""
        untuned = summary(statistics.fmean(self.untuned), self.untuned)
        best = summary(statistics.fmean(self.best), self.best)
        line = f"{metric}: untuned defaults {untuned} -> best {best}, {self.delta:+.4f}"
        if self.se is not None:
            return f"{line} ± {self.se:.4f}"
        return (f"{line} (single runs: the seed-to-seed spread is unknown; [tuning] repeats = 3 "
                f"measures it)")


def untuned_trial(result: Any) -> FrozenTrial | None:
    """Trial 0 of a :class:`~hpo.SearchResult`'s first stage, which measures the defaults.

    ``None`` until it is COMPLETE.
    """
    first = result.stages[0].study if result.stages else None
    if first is None:
        return None
    zero = next((t for t in first.get_trials(deepcopy=False) if t.number == 0), None)
    if zero is None or zero.state != TrialState.COMPLETE or zero.value is None:
        return None
    return zero


def search_gain(result: Any) -> Gain | None:
    """The :class:`Gain` of a :class:`~hpo.SearchResult`, ``None`` before both are measured."""
    zero = untuned_trial(result)
    finished = [s.ledger for s in result.stages if s.ledger is not None]
    if zero is None or not finished:
        return None
    best = finished[-1]
    return Gain(tuple(replicates_of(zero)), tuple(best.replicates or [best.value]))


def summary(value: float, values: Sequence[float]) -> str:
    """``0.6123 ± 0.0210 (n=3)``: a value with its standard error over replicates."""
    se = standard_error(values)
    return f"{value:.4f}" if se is None else f"{value:.4f} ± {se:.4f} (n={len(values)})"


__all__ = [
    "CONFIRMS_ATTR",
    "MAX_CONFIRMATIONS",
    "NOISE_ATTR",
    "RACED_ATTR",
    "REPLICATES_ATTR",
    "RaceBar",
    "ReplicateView",
    "Replication",
    "ReplicatedObjective",
    "Scored",
    "Gain",
    "confirmation_bar",
    "continued",
    "estimate_best",
    "full_trials",
    "gain_text",
    "incumbent_bar",
    "noise_of",
    "paired_gain",
    "race_bar",
    "replicate_seed",
    "replicates_of",
    "search_gain",
    "stage_incumbent",
    "standard_error",
    "summary",
    "superseded",
    "switch_bar",
    "to_confirm",
    "untuned_trial",
]
