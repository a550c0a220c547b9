"""How trials execute: ``local`` (this machine) and ``ray`` (Ray Tune).

Which runner, each trial's resources and whether trials run in a child process are
decided by :class:`~hpo.engine.runners.plan.RunPlan`. ``RayRunner`` is imported on first
use (``from hpo.engine.runners import RayRunner`` or a ray plan), so commands that never
run trials on Ray do not pay Ray's import.
"""

from __future__ import annotations

from hpo.engine.runners.job import Outcome, PendingTrial, Runner, StageJob
from hpo.engine.runners.local import LocalRunner
from hpo.engine.runners.plan import RUNNER_NAMES, RunPlan, make_runner


def __getattr__(name: str) -> object:
    if name == "RayRunner":  # lazily: importing Ray costs seconds
        from hpo.engine.runners.ray.runner import RayRunner

        return RayRunner
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "RUNNER_NAMES",
    "LocalRunner",
    "Outcome",
    "PendingTrial",
    "RayRunner",
    "RunPlan",
    "Runner",
    "StageJob",
    "make_runner",
]
