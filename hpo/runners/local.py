"""The local runner: trials one after another in this process."""

from __future__ import annotations

import logging

from hpo.leases import Backoff
from hpo.runners.base import Runner, StageJob

_log = logging.getLogger("hpo")


class LocalRunner(Runner):
    """Runs a stage's trials one by one in the driver process (tests, small studies).

    Several drivers may run the same search at once (each with a local runner) on a
    server storage; they share each stage's budget.
    """

    name = "local"

    def run_stage(self, job: StageJob) -> None:
        """Ask, evaluate and tell trials until the stage's budget is COMPLETE."""
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
