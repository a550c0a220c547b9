"""The local runner: trials on this machine, one at a time or several in worker processes.

With ``workers = 1`` (the engine's default) trials run one after another in the driver
(or, isolated, in one child process). With ``workers > 1`` a pool of worker processes
(:class:`~hpo.engine.runners.pool.WorkerPool`) trains that many trials at once: the driver
asks the stage study for a trial whenever a worker is idle, with the trials still in
flight RUNNING in the study, so the Bayesian sampler knows about them (the path the Ray
runner takes), and tells each outcome as it arrives. Workers are reused from trial to
trial (starting a process and importing torch costs seconds); each sets torch to the
trial's CPUs (``threads``). A trial's value does not depend on the worker that trained
it: the objective seeds its own training. Timeouts and killed workers are FAIL trials as
with isolated trials; Ctrl-C kills the workers' trials, records them interrupted, and
the next run resumes.

Wrappers around the objective that must stay in the driver (the command line's progress
display) say so with two methods, ``driver_trial_started(params, trial)`` and
``driver_trial_finished(params, trial)``, and ``__wrapped__``: the pool calls those
around each trial and pickles what they wrap.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any

from optuna.trial import TrialState

from hpo.engine.errors import SpecError
from hpo.engine.leases import Backoff
from hpo.engine.runners.isolated import (
    IsolatedObjective,
    check_start_method,
    check_timeout,
    isolated,
)
from hpo.engine.runners.job import (
    INTERRUPTED,
    Outcome,
    PendingTrial,
    Runner,
    StageJob,
    outcome_of,
    outcome_of_exception,
)
from hpo.engine.runners.pool import WorkerPool

_log = logging.getLogger("hpo")


def machine_cpus() -> int:
    """CPU cores this process may use (its affinity where the OS tells it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def default_workers(cpu: float = 1.0) -> int:
    """Trials at once that fit this machine: its cores divided by each trial's CPUs, >= 1."""
    return max(1, int(math.floor(machine_cpus() / max(float(cpu), 1e-9) + 1e-9)))


def runs_isolated(*, trial_timeout: float | None, isolate: bool, workers: int) -> bool:
    """Whether local trials run in child processes (see :class:`~hpo.engine.runners.RunPlan`).

    With a timeout (only a process can be killed at it), when asked to (``isolate``), or
    with several workers (a pool of processes).
    """
    return bool(isolate) or trial_timeout is not None or workers > 1


class LocalRunner(Runner):
    """Runs a stage's trials on this machine, one at a time or ``workers`` at once.

    Several drivers may run the same search at once (each with a local runner) on a
    server storage; they share each stage's budget.

    Args:
        trial_timeout: Seconds a trial may run; a trial past it is killed and recorded
            FAIL ``timed out after N s``. Implies ``isolate``. ``None``: no limit.
        isolate: Run each trial in its own child process (see
            :mod:`hpo.engine.runners.isolated`), so a trial killed by the OS (out of memory) is
            a FAIL and the search goes on. The objective must pickle.
        start_method: ``forkserver`` or ``spawn`` for isolated trials; ``None``: forkserver
            where available.
        workers: Trials at once. ``1``: one after another (in this process unless
            isolated); more: that many worker processes (implies ``isolate``; the
            objective must pickle).
        threads: Torch threads of each worker process (the trial's CPUs); ``None``: 1.

    Raises:
        SpecError: Invalid timeout, start method, workers or threads.
    """

    name = "local"

    def __init__(
        self,
        *,
        trial_timeout: float | None = None,
        isolate: bool = False,
        start_method: str | None = None,
        workers: int = 1,
        threads: int | None = None,
    ) -> None:
        for key, value, low in (("max_concurrent", workers, 1), ("cpu", threads, 1)):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < low
            ):
                raise SpecError(f"{key} = {value!r}", key=f"runner.{key}",
                                hint=f"use an integer >= {low}")
        self.trial_timeout = check_timeout(trial_timeout)
        self.workers = int(workers)
        self.threads = 1 if threads is None else int(threads)
        self.isolate = runs_isolated(trial_timeout=self.trial_timeout, isolate=isolate,
                                     workers=self.workers)
        self.start_method = check_start_method(start_method) if self.isolate else start_method
        self._isolated: dict[int, tuple[Any, Any]] = {}
        self._pools: dict[int, tuple[Any, WorkerPool, tuple[Any, ...]]] = {}

    def run_stage(self, job: StageJob) -> None:
        """Ask, evaluate and tell trials until the stage's budget is COMPLETE.

        Raises:
            StageFailedError: ``max_fail`` trials failed.
            HPOError: Isolated trials and an objective that cannot be pickled.
        """
        if self.workers > 1:
            self._run_parallel(job)
            return
        if self.isolate:
            # Before any trial is asked: an objective that cannot go to a child process
            # is an error of the search, not a failed trial. One per objective, so its
            # worker process serves every stage.
            key = id(job.objective)
            if key not in self._isolated:
                wrapped = isolated(
                    job.objective, timeout=self.trial_timeout, start_method=self.start_method
                )
                self._isolated[key] = (job.objective, wrapped)
            job.objective = self._isolated[key][1]
        backoff = Backoff()
        while True:
            counts = job.poll()
            if job.is_done(counts):
                return
            if job.open_slots(counts) == 0:
                # Only other drivers' RUNNING trials can fill the budget now: wait for
                # them to complete, fail, or be reaped when their driver is gone.
                if backoff.waited == 0:
                    _log.info(
                        "%s: waiting for other drivers' RUNNING trials", job.study.study_name
                    )
                backoff.sleep()
                continue
            backoff.reset()
            pending = job.ask()
            if pending is None:  # the incumbent, copied without running
                continue
            job.tell(pending, job.evaluate(pending))

    # ------------------------------------------------------------------ parallel

    def _pool(self, job: StageJob) -> tuple[WorkerPool, tuple[Any, ...]]:
        """The worker pool of the stage's objective (one per objective, for every stage)."""
        key = id(job.objective)
        if key not in self._pools:
            hooks, inner = _driver_side(job.objective)
            timeout = self.trial_timeout
            if isinstance(inner, IsolatedObjective):
                # Already meant for a child process: the pool's workers are those.
                timeout = timeout if timeout is not None else inner.timeout
                inner = inner.objective
            pool = WorkerPool(
                inner,
                size=self.workers,
                timeout=timeout,
                start_method=self.start_method,
                threads=self.threads,
            )
            self._pools[key] = (job.objective, pool, hooks)
        _, pool, hooks = self._pools[key]
        return pool, hooks

    def _run_parallel(self, job: StageJob) -> None:
        pool, hooks = self._pool(job)
        live: dict[int, PendingTrial] = {}
        backoff = Backoff()
        try:
            while True:
                counts = job.poll()
                # Ask while a worker is idle and the budget has room; the trials in flight
                # are RUNNING in the study, so the sampler proposes around them.
                while pool.idle() and job.open_slots(counts) > 0:
                    pending = job.ask()
                    if pending is not None:
                        live[pending.number] = pending
                        for hook in hooks:
                            hook.driver_trial_started(pending.params, pending.context)
                        pool.submit(pending.number, pending.params, pending.context)
                    counts = job.poll()
                if not live:
                    if job.is_done(counts):
                        return
                    if backoff.waited == 0:
                        _log.info("%s: waiting for other drivers' RUNNING trials",
                                  job.study.study_name)
                    backoff.sleep()
                    continue
                backoff.reset()
                # Wake up at the keepalive's pace too: other drivers' trials may end.
                for number, raised, value in pool.wait(timeout=job.keepalive.interval):
                    pending = live[number]
                    context = pending.context
                    if raised:
                        _log.warning("%s trial %d failed: %s: %s", job.study.study_name,
                                     number, type(value).__name__, value)
                        outcome = outcome_of_exception(value, context)
                    else:
                        outcome = outcome_of(value, context)
                    for hook in reversed(hooks):
                        hook.driver_trial_finished(pending.params, context)
                    job.tell(pending, outcome)
                    del live[number]  # after the tell: an interrupt meanwhile retells it
        except BaseException as exc:
            # Ctrl-C (or an error of the driver): the trials in flight cannot finish. Like
            # a sequential trial that is interrupted, they do not count towards max_fail.
            pool.cancel()
            reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else (
                f"the driver stopped: {type(exc).__name__}: {exc}"
            )
            for pending in live.values():
                for hook in reversed(hooks):
                    hook.driver_trial_finished(pending.params, pending.context)
                job.tell(pending, Outcome(TrialState.FAIL, reason=reason, kind=INTERRUPTED))
            raise

    def close(self) -> None:
        """Stop the worker processes of the objectives this runner isolated."""
        for objective, wrapped in self._isolated.values():
            if wrapped is not objective and isinstance(wrapped, IsolatedObjective):
                wrapped.close()
        self._isolated.clear()
        for _, pool, _ in self._pools.values():
            pool.close()
        self._pools.clear()


def _driver_side(objective: Any) -> tuple[tuple[Any, ...], Any]:
    """The driver-side wrappers around ``objective`` (outermost first) and what they wrap."""
    hooks: list[Any] = []
    layer = objective
    for _ in range(32):  # wrappers nest a few levels; never loop on a cycle
        if not (hasattr(layer, "driver_trial_started") and hasattr(layer, "__wrapped__")):
            break
        hooks.append(layer)
        layer = layer.__wrapped__
    return tuple(hooks), layer


__all__ = ["LocalRunner", "default_workers", "machine_cpus", "runs_isolated"]
