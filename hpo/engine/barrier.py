"""A stage's barrier: once its budget is COMPLETE and nothing runs, its ledger entry.

Every driver of a search reaches the barrier; the first to see no RUNNING trial writes
the entry (the best mean over full replicates, or the incumbent when the best does not
beat it by ``switch_z`` standard errors), the others read it back. With intensification,
an undecided best first earns a confirmation run (``replicates.to_confirm``): the barrier
queues it and sends every driver back to run it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpo.engine.curves import STILL_IMPROVING_ATTR, still_improving
from hpo.engine.leases import Backoff, reap_stale
from hpo.engine.ledger import COPIED_ATTR, Ledger, ledger_from_trial, read_ledger, write_ledger
from hpo.engine.replicates import (
    CONFIRMS_ATTR,
    NOISE_ATTR,
    Replication,
    continued,
    estimate_best,
    noise_of,
    paired_gain,
    replicates_of,
    stage_incumbent,
    switch_bar,
    to_confirm,
)
from hpo.engine.stage import Stage

_log = logging.getLogger("hpo")

DECLINED_ATTR = "hpo:declined"
"""Stage user attribute: the best trial that did not beat the incumbent by ``switch_z`` se."""


def close_stage(
    study: optuna.Study, stage: Stage, *, direction: str, replication: Replication,
    lease_seconds: float,
) -> Ledger | None:
    """The barrier: once nothing runs, write the ledger (or read another driver's).

    Args:
        study: The stage study, its budget COMPLETE.
        stage: The stage.
        direction: ``maximize`` or ``minimize``.
        replication: How its trials were replicated.
        lease_seconds: After how long a silent RUNNING trial counts as orphaned.

    Returns:
        The stage's ledger entry, as stored; ``None`` while a confirmation run waits (this
        driver queued it or another did): run the stage again, then come back.
    """
    backoff = Backoff(first=0.2, longest=5.0)
    while True:
        ledger = read_ledger(study)
        if ledger is not None:
            return ledger
        reap_stale(study, lease_seconds=lease_seconds)
        trials = study.get_trials(deepcopy=False)
        if any(t.state == TrialState.WAITING and CONFIRMS_ATTR in t.user_attrs
               for t in trials):
            return None
        running = [t.number for t in trials if t.state == TrialState.RUNNING]
        if not running:
            confirm = to_confirm(trials, replication, maximize=direction == "maximize")
            if confirm is not None:
                _queue_confirmation(study, confirm)
                return None
            write_ledger(study, ledger_of(study, stage, trials, direction=direction,
                                          replication=replication))
            continue  # read back what is stored: every stage reads the storage
        if backoff.waited == 0:
            _log.info(
                "%s: budget complete; waiting for RUNNING trials %s of other drivers "
                "before writing the ledger",
                study.study_name, running,
            )
        backoff.sleep()


def _queue_confirmation(study: optuna.Study, trial: FrozenTrial) -> None:
    _log.info("%s: best trial %d beats the incumbent after %d replicates, not yet surely: "
              "a confirmation run goes on from them", study.study_name, trial.number,
              len(replicates_of(trial)))
    study.enqueue_trial(dict(trial.params), user_attrs={CONFIRMS_ATTR: trial.number},
                        skip_if_exists=False)


def ledger_of(
    study: optuna.Study, stage: Stage, trials: Sequence[FrozenTrial], *, direction: str,
    replication: Replication,
) -> Ledger:
    """The stage's entry: the best mean over full replicates, never a lucky single run.

    With one replicate per trial this is the best trial (ties: lowest number).
    """
    maximize = direction == "maximize"
    best = estimate_best(trials, repeats=replication.repeats, maximize=maximize)
    assert best is not None  # the runner returned with the budget COMPLETE
    noise = noise_of(trials)
    if noise is not None:
        study.set_user_attr(NOISE_ATTR, noise)
    incumbent = stage_incumbent(trials)
    assert incumbent is not None  # best is COMPLETE
    gain = (paired_gain(replicates_of(best), replicates_of(incumbent))
            if best.number != incumbent.number else None)
    if gain is not None and not maximize:
        gain["mean"] = -gain["mean"]  # positive: better than the incumbent
    bar = switch_bar(replication.switch_z, gain["n"]) if gain is not None else 0.0
    if gain is not None and gain["mean"] <= bar * gain["se"]:
        # Not measurably better than what the stage started from: the best of noisy
        # means is biased up, so the incumbent is handed on.
        study.set_user_attr(DECLINED_ATTR, {"trial": best.number, **gain})
        _log.info("%s: best trial %d beats the incumbent by %+.4g ± %.2g, under %.3g se: "
                  "the incumbent is handed on", study.study_name, best.number,
                  gain["mean"], gain["se"], bar)
        best, gain = incumbent, None
    # a confirmation run has no learning curve of its own (it starts at a later
    # replicate): read the run it continues
    improving = still_improving(continued(best, trials) or best, maximize,
                                (noise or {}).get("sd"))
    if improving is not None:
        study.set_user_attr(STILL_IMPROVING_ATTR, {"trial": best.number, **asdict(improving)})
        _log.warning("%s: trial %d, handed on, was still improving when its training "
                     "stopped (%.4g at best in its first %d of %d steps, %.4g at the last)",
                     study.study_name, best.number, improving.early, improving.early_steps,
                     improving.steps, improving.last)
    # the incumbent handed on was measured, not selected: the next stage may pair with it
    seeds = (((incumbent.user_attrs.get(COPIED_ATTR) or {}).get("seeds") or stage.name)
             if replication.replicated and best.number == incumbent.number else None)
    return ledger_from_trial(stage.name, study.study_name, best, noise=noise, gain=gain,
                             seeds=seeds)


__all__ = ["DECLINED_ATTR", "close_stage", "ledger_of"]
