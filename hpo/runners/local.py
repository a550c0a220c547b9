"""The local runner: trials one after another in this process (or one child process each)."""

from __future__ import annotations

import logging
from typing import Any

from hpo.leases import Backoff
from hpo.runners.base import Runner, StageJob
from hpo.runners.isolated import IsolatedObjective, check_start_method, check_timeout, isolated

_log = logging.getLogger("hpo")


class LocalRunner(Runner):
    """Runs a stage's trials one by one from the driver process (tests, small studies).

    Several drivers may run the same search at once (each with a local runner) on a
    server storage; they share each stage's budget.

    Args:
        trial_timeout: Seconds a trial may run; a trial past it is killed and recorded
            FAIL ``timed out after N s``. Implies ``isolate``. ``None``: no limit.
        isolate: Run each trial in its own child process (see
            :mod:`hpo.runners.isolated`), so a trial killed by the OS (out of memory) is
            a FAIL and the search goes on. The objective must pickle.
        start_method: ``forkserver`` or ``spawn`` for isolated trials; ``None``: forkserver
            where available.

    Raises:
        SpecError: Invalid timeout or start method.
    """

    name = "local"

    def __init__(
        self,
        *,
        trial_timeout: float | None = None,
        isolate: bool = False,
        start_method: str | None = None,
    ) -> None:
        self.trial_timeout = check_timeout(trial_timeout)
        self.isolate = bool(isolate) or self.trial_timeout is not None
        self.start_method = check_start_method(start_method) if self.isolate else start_method
        self._isolated: dict[int, tuple[Any, Any]] = {}

    def run_stage(self, job: StageJob) -> None:
        """Ask, evaluate and tell trials until the stage's budget is COMPLETE.

        Raises:
            StageFailedError: ``max_fail`` trials failed.
            HPOError: Isolated trials and an objective that cannot be pickled.
        """
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

    def close(self) -> None:
        """Stop the worker processes of the objectives this runner isolated."""
        for objective, wrapped in self._isolated.values():
            if wrapped is not objective and isinstance(wrapped, IsolatedObjective):
                wrapped.close()
        self._isolated.clear()
