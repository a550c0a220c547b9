"""RunPlan: the one place that picks the runner, the trials' resources and their isolation."""

from __future__ import annotations

import pytest

from hpo import HPOError, LocalRunner, SpecError
from hpo.engine.runners import RunPlan
from hpo.engine.runners.isolated import IsolatedObjective
from hpo.engine.runners.local import default_workers


def objective(params: dict, trial) -> float:
    return 0.0


def test_a_plain_local_plan_runs_trials_in_this_process():
    plan = RunPlan()
    assert plan.workers == 1 and not plan.isolated
    assert plan.runner() == "local"
    assert plan.objective(objective) is objective
    runner = plan.make()
    assert isinstance(runner, LocalRunner) and not runner.isolate


@pytest.mark.parametrize("settings", [{"trial_timeout": 30}, {"isolate": True}])
def test_a_timeout_or_isolate_isolates_local_trials_once(settings):
    plan = RunPlan(max_concurrent=1, **settings)
    assert plan.isolated
    runner = plan.runner()
    assert isinstance(runner, LocalRunner) and runner.isolate and runner.workers == 1
    assert runner.trial_timeout == settings.get("trial_timeout")
    wrapped = plan.objective(objective)
    assert isinstance(wrapped, IsolatedObjective)
    assert wrapped.timeout == settings.get("trial_timeout")
    wrapped.close()


def test_local_workers_are_capped_at_what_the_machine_fits_and_isolate_the_trials():
    fit = default_workers(1.0)
    plan = RunPlan(max_concurrent=fit + 3, cpu=1.0)
    assert plan.workers == fit
    if fit > 1:
        assert plan.isolated
        runner = plan.runner()
        assert isinstance(runner, LocalRunner) and runner.workers == fit and runner.threads == 1
        assert plan.objective(objective) is objective  # the pool sends it to its workers
    big = RunPlan(max_concurrent=4, cpu=fit * 2.0)
    assert big.workers == 1 and big.runner() == "local"
    assert RunPlan(cpu=3.7).threads == 3 and RunPlan(cpu=0.5).threads == 1


def test_ray_trials_are_isolated_only_with_a_timeout():
    assert not RunPlan(kind="ray", isolate=True).isolated
    assert RunPlan(kind="ray", trial_timeout=5).isolated
    # Ray's worker isolates the trial itself: the driver's objective stays as it is.
    assert RunPlan(kind="ray", trial_timeout=5).objective(objective) is objective


def test_a_plan_checks_its_kind_and_timeout():
    with pytest.raises(HPOError, match="unknown runner 'slurm'"):
        RunPlan(kind="slurm")
    with pytest.raises(SpecError, match="trial_timeout"):
        RunPlan(trial_timeout=0)
    assert RunPlan(trial_timeout=5).trial_timeout == 5.0
