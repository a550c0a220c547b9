"""Driver side of the ray runner: the Tune searcher, callback and stopper of one stage.

All three share one :class:`StageRun`, which owns the stage's :class:`StageJob`:

- :class:`StageSearcher` (a Tune ``Searcher``) asks the stage study for trials
  (``StageJob.ask``; RUNNING trials are visible to the sampler, so concurrent trials
  differ) and returns ``FINISHED`` once the budget is COMPLETE. It writes each epoch's
  report to the study and tells every outcome (``StageJob.tell``): COMPLETE / FAIL from
  the trial's final report, PRUNED (with ``hpo:epochs``) for a trial stopped early.
- :class:`StageCallback` (a Tune ``Callback``) keeps each trial's latest checkpoint (its
  artifacts are uploaded by the driver before the trial is told), logs retries, and tells
  FAIL with the reason once a crashing trial has used up its retries.
- :class:`PrunerStopper` (a Tune ``Stopper``) asks the stage study's Optuna pruner, when
  the search has one.

Optuna is the only state: these objects pickle to nothing (Tune saves its searcher and
callbacks with the experiment; the runner never restores a Tune experiment).
"""

from __future__ import annotations

import json
import logging
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optuna.artifacts import upload_artifact
from optuna.trial import TrialState
from ray import cloudpickle
from ray.tune import Callback, Stopper
from ray.tune.search import Searcher

from hpo.engine.errors import HPOError
from hpo.engine.runners.job import INTERRUPTED, Outcome, PendingTrial, StageJob
from hpo.engine.runners.ray.trainable import (
    CONFIG_KEY,
    FINAL_KEY,
    NODE_KEY,
    REPORT_KEY,
    ROW_KEY,
    VALUE_KEY,
    read_checkpoint,
)

_log = logging.getLogger("hpo")

RETRIES_ATTR = "hpo:retries"
"""User attribute: how often Tune restarted the trial after a crash."""
NODE_ATTR = "ray:node_id"
"""User attribute: the Ray node the trial ran on (its last attempt's)."""
NODES_ATTR = "ray:node_ids"
"""User attribute of a retried trial that moved: the nodes of its attempts, in order."""


@dataclass
class _Live:
    """A trial of this driver in flight in Tune."""

    pending: PendingTrial
    last_report: str | None = None
    final: dict[str, Any] | None = None
    stopped_by: str | None = None
    checkpoint: Any = None
    retries: int = 0
    errored: bool = False
    nodes: list[str] = field(default_factory=list)


class StageRun:
    """One stage run through one Tune experiment.

    Args:
        job: The stage.
        max_concurrent: Trials of this driver in flight at once.
        threads: Torch threads per trial.
        poll_interval: Seconds between reads of the stage study while nothing changed
            here (other drivers' trials may complete or fail meanwhile).
        prune: Whether the stage study's pruner is consulted after every epoch.
        timeout: Seconds a trial may run (enforced in the worker); ``None``: no limit.
    """

    def __init__(
        self,
        job: StageJob,
        *,
        max_concurrent: int,
        threads: int,
        poll_interval: float = 0.5,
        prune: bool = False,
        timeout: float | None = None,
    ) -> None:
        self.job = job
        self.timeout = timeout
        self.max_concurrent = max(1, int(max_concurrent))
        self.threads = max(1, int(threads))
        self.poll_interval = poll_interval
        self.prune = prune
        self.live: dict[str, _Live] = {}
        self.error: BaseException | None = None
        self.asked = 0
        self.told = 0
        self._counts: Any = None
        self._last_poll = -math.inf
        self._dirty = True
        self._ledgers = {name: entry.to_dict() for name, entry in job.ledgers.items()}

    def __getstate__(self) -> dict[str, Any]:
        return {}  # Optuna is the state; Tune's experiment snapshot gets nothing

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    # ------------------------------------------------------------------ asking

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        """A trial's config, ``None`` (not now) or ``Searcher.FINISHED``."""
        if self.error is not None:
            return Searcher.FINISHED
        try:
            return self._suggest(trial_id)
        except Exception as exc:  # noqa: BLE001 - raised by run_stage after Tune ends
            self.error = exc
            return Searcher.FINISHED

    def _suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        while True:
            if len(self.live) >= self.max_concurrent:
                return None
            counts = self._poll()
            if self.job.is_done(counts):
                return Searcher.FINISHED
            if self.job.open_slots(counts) == 0:
                if not self.live:
                    time.sleep(0.05)  # only other drivers' trials run: don't spin Tune's loop
                return None
            pending = self.job.ask()
            self._dirty = True
            if pending is None:  # the incumbent, copied without running
                continue
            self.asked += 1
            self.live[trial_id] = _Live(pending)
            return {
                CONFIG_KEY: {
                    "number": pending.number,
                    "stage": self.job.stage.name,
                    "params": pending.params,
                    "metric": self.job.metric,
                    "threads": self.threads,
                    "timeout": self.timeout,
                    "ledgers": self._ledgers,
                    "race": pending.context.race,
                    "seed_stage": pending.context.seed_stage,
                }
            }

    def _poll(self) -> Any:
        now = time.monotonic()
        if self._dirty or self._counts is None or now - self._last_poll >= self.poll_interval:
            self._counts = self.job.poll()  # raises StageFailedError at max_fail
            self._last_poll = now
            self._dirty = False
        return self._counts

    # --------------------------------------------------------------- reporting

    def record(self, trial_id: str, result: dict[str, Any] | None) -> _Live | None:
        """Write a report to the stage study (once, however many hooks see it)."""
        live = self.live.get(trial_id)
        if live is None or not result:
            return live
        key = result.get(REPORT_KEY)
        if key is None or key == live.last_report:
            return live
        live.last_report = key
        try:
            self._record_node(live, result.get(NODE_KEY))
            if FINAL_KEY in result:
                live.final = json.loads(result[FINAL_KEY])
            elif ROW_KEY in result:
                row = json.loads(result[ROW_KEY])
                epoch = int(row.pop("epoch"))
                context = live.pending.context
                # A retried trial that starts from scratch reports its epochs again.
                context.history = [r for r in context.history if r["epoch"] < epoch]
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # "step already reported" on a retry
                    context.report(epoch, result.get(VALUE_KEY), **row)
        except Exception as exc:  # noqa: BLE001 - never break Tune's loop; surface later
            self._fail(exc)
        return live

    def _record_node(self, live: _Live, node: Any) -> None:
        """Store the node a trial runs on, once per node (a retry may run elsewhere)."""
        if not node or (live.nodes and live.nodes[-1] == node):
            return
        live.nodes.append(str(node))
        trial = live.pending.trial
        trial.set_user_attr(NODE_ATTR, str(node))
        if len(live.nodes) > 1:
            trial.set_user_attr(NODES_ATTR, list(live.nodes))

    def should_stop(self, trial_id: str, result: dict[str, Any]) -> bool:
        """Whether the stage's pruner stops the trial after this report."""
        live = self.record(trial_id, result)
        if not self.prune or live is None or live.final is not None or ROW_KEY not in result:
            return False
        try:
            if live.pending.context.should_stop():
                live.stopped_by = "the pruner"
                return True
        except Exception as exc:  # noqa: BLE001
            self._fail(exc)
        return False

    # ----------------------------------------------------------------- telling

    def on_complete(self, trial_id: str, result: dict[str, Any] | None, error: bool) -> None:
        """Tune ended a trial: tell its outcome (errors wait for :meth:`on_error`)."""
        live = self.record(trial_id, result)
        if live is None:
            return
        if error:
            live.errored = True  # the callback's on_trial_error follows, with the reason
            return
        context = live.pending.context
        epochs = context.epochs if context.history else None
        if live.final is not None:
            final = live.final
            outcome = Outcome(
                TrialState[final["state"]],
                value=final.get("value"),
                reason=final.get("reason"),
                epochs=epochs,
                kind=final.get("kind", "objective"),
                attrs=final.get("attrs") or {},
            )
        elif result:
            why = live.stopped_by or "ASHA"
            outcome = Outcome(TrialState.PRUNED, reason=f"stopped early by {why}", epochs=epochs)
        else:  # removed before it ran (Tune ended the experiment)
            outcome = Outcome(
                TrialState.FAIL, reason="Ray Tune ended before the trial ran",
                epochs=epochs, kind=INTERRUPTED,
            )
        self.finish(trial_id, outcome)

    def on_error(self, trial_id: str, reason: str) -> None:
        """A trial crashed and has no retry left: FAIL with the reason."""
        live = self.live.get(trial_id)
        if live is None:
            return
        context = live.pending.context
        retries = f" after {live.retries} retr{'y' if live.retries == 1 else 'ies'}"
        self.finish(
            trial_id,
            Outcome(
                TrialState.FAIL,
                reason=reason + (retries if live.retries else ""),
                epochs=context.epochs if context.history else None,
            ),
        )

    def on_recover(self, trial_id: str, reason: str) -> None:
        """A trial crashed and Tune restarts it from its last checkpoint."""
        live = self.live.get(trial_id)
        if live is None:
            return
        live.retries += 1
        live.final = None
        _log.warning(
            "%s trial %d crashed (%s); retry %d from its last checkpoint (epoch %s)",
            self.job.study.study_name, live.pending.number, reason, live.retries,
            _checkpoint_epoch(live.checkpoint),
        )
        try:
            live.pending.trial.set_user_attr(RETRIES_ATTR, live.retries)
        except Exception as exc:  # noqa: BLE001
            self._fail(exc)

    def on_checkpoint(self, trial_id: str, checkpoint: Any) -> None:
        """Remember a trial's latest checkpoint (its artifacts are uploaded at the end)."""
        live = self.live.get(trial_id)
        if live is not None:
            live.checkpoint = checkpoint

    def finish(self, trial_id: str, outcome: Outcome) -> None:
        """Upload the trial's artifacts, then tell the stage study its outcome."""
        live = self.live.pop(trial_id, None)
        if live is None:
            return
        self._dirty = True
        try:
            if live.checkpoint is not None:
                try:
                    self._upload_artifacts(live)
                except Exception as exc:  # noqa: BLE001 - the trial fails, the stage goes on
                    _log.warning("artifacts of trial %d lost: %s", live.pending.number, exc)
                    if outcome.state == TrialState.COMPLETE:
                        outcome = Outcome(
                            TrialState.FAIL,
                            reason=f"uploading its artifacts failed: {type(exc).__name__}: "
                            f"{exc}",
                            epochs=outcome.epochs,
                        )
            self.job.tell(live.pending, outcome)
            self.told += 1
        except Exception as exc:  # noqa: BLE001
            self._fail(exc)

    def finish_all(self, reason: str, kind: str) -> None:
        """Fail every trial still in flight (Tune ended or was interrupted)."""
        for trial_id in list(self.live):
            context = self.live[trial_id].pending.context
            self.finish(
                trial_id,
                Outcome(
                    TrialState.FAIL, reason=reason,
                    epochs=context.epochs if context.history else None, kind=kind,
                ),
            )

    def _upload_artifacts(self, live: _Live) -> None:
        store = self.job.artifact_store
        with live.checkpoint.as_directory() as folder:
            files = read_checkpoint(folder)["artifact_files"]
            if files and store is None:
                raise HPOError("the search has no artifact store")
            for path in files.values():
                upload_artifact(
                    artifact_store=store, file_path=path, study_or_trial=live.pending.trial
                )

    def _fail(self, exc: BaseException) -> None:
        _log.error("ray runner: %s: %s", type(exc).__name__, exc)
        if self.error is None:
            self.error = exc


def _checkpoint_epoch(checkpoint: Any) -> Any:
    if checkpoint is None:
        return "none: it starts again"
    try:
        with checkpoint.as_directory() as folder:
            history = read_checkpoint(folder)["history"]
        return history[-1]["epoch"] if history else 0
    except Exception:  # noqa: BLE001 - only for the log line
        return "?"


class StageSearcher(Searcher):
    """The toolkit's Tune searcher: asks and tells the stage's Optuna study.

    Args:
        run: The stage run it serves.
    """

    def __init__(self, run: StageRun) -> None:
        super().__init__(metric=None, mode=None)
        self.run = run

    def set_search_properties(self, metric: Any, mode: Any, config: Any, **spec: Any) -> bool:
        """Accept Tune's properties (the search metric is the stage study's)."""
        return True

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        """A trial's config, ``None`` (not now) or ``FINISHED`` (budget met)."""
        return self.run.suggest(trial_id)

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        """Write an epoch's report to the stage study."""
        self.run.record(trial_id, result)

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        """Tell the stage study how the trial ended."""
        self.run.on_complete(trial_id, result, error)

    def save(self, checkpoint_path: str) -> None:
        """Nothing to save: the stage study is the state."""

    def restore(self, checkpoint_path: str) -> None:
        """Nothing to restore: the stage study is the state."""


class StageCallback(Callback):
    """Checkpoints, retries and final errors of a stage's Tune trials.

    Args:
        run: The stage run it serves.
    """

    def __init__(self, run: StageRun) -> None:
        self.run = run

    def on_checkpoint(self, iteration: int, trials: list, trial: Any, checkpoint: Any,
                      **info: Any) -> None:
        """Keep the trial's latest checkpoint."""
        self.run.on_checkpoint(trial.trial_id, checkpoint)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """A crashed trial is retried."""
        self.run.on_recover(trial.trial_id, error_reason(trial))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """A crashed trial has no retry left."""
        self.run.on_error(trial.trial_id, error_reason(trial))


class PrunerStopper(Stopper):
    """Stops a trial when the stage study's Optuna pruner says so.

    Args:
        run: The stage run it serves.
    """

    def __init__(self, run: StageRun) -> None:
        self.run = run

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        """Whether to stop the trial after this result."""
        return self.run.should_stop(trial_id, result)

    def stop_all(self) -> bool:
        """Never stop the whole experiment."""
        return False


def error_reason(trial: Any) -> str:
    """The objective's exception of a crashed Tune trial, as ``Type: message``."""
    exc = _pickled_error(trial)
    if exc is None:
        lines = [line for line in _error_text(trial).splitlines() if line.strip()]
        return lines[-1].strip() if lines else "the trial crashed (no error recorded)"
    seen = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        cause = getattr(exc, "cause", None)
        if isinstance(cause, BaseException):
            exc = cause
            continue
        if type(exc).__name__.startswith("StartTraceback") and exc.__cause__ is not None:
            exc = exc.__cause__
            continue
        break
    name = type(exc).__name__
    if name in ("RayActorError", "ActorDiedError", "ActorUnavailableError"):
        return f"{name}: the trial's worker process died (killed, or out of memory)"
    message = str(exc).strip().splitlines()
    return f"{name}: {message[0]}" if message else name


def _pickled_error(trial: Any) -> Any:
    # The driver writes the error beside the trial (local_path) before it syncs it to
    # the storage, so read the local file first.
    try:
        path = trial.pickled_error_file
        if path and Path(path).is_file():
            with open(path, "rb") as f:
                return cloudpickle.load(f)
        return trial.get_pickled_error()
    except Exception:  # noqa: BLE001 - fall back to the text trace
        return None


def _error_text(trial: Any) -> str:
    try:
        path = trial.error_file
        if path and Path(path).is_file():
            return Path(path).read_text(errors="replace")
        return str(trial.get_error() or "")
    except Exception:  # noqa: BLE001
        return ""


__all__ = [
    "NODES_ATTR",
    "NODE_ATTR",
    "PrunerStopper",
    "RETRIES_ATTR",
    "StageCallback",
    "StageRun",
    "StageSearcher",
    "error_reason",
]
