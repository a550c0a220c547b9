"""A live driver whose trial another driver failed as orphaned (its heartbeat or lease
looked stale, e.g. on a machine so loaded that the renewal thread stalled) drops that
result with a warning and goes on, instead of crashing.

Regression: ``StageJob`` caught Optuna's ``UpdateFinishedTrialError`` only, but
``study.tell`` on a trial already FAIL raises ``ValueError("Cannot tell a FAIL trial.")``,
and a trial failed while it was being asked made ``study.ask`` (the sampler writing its
proposal) raise. Found by ``test_concurrency.py``: a driver of four died with it.
"""

from __future__ import annotations

import time

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from hpo import LayerwiseSearch, Stage
from hpo.engine.leases import DRIVER_GONE, FAIL_KIND_ATTR, reap_stale
from tests.hpo.conftest import name  # noqa: F401 - the fixture


def reap(storage, trial_id: int) -> None:
    """Fail a trial as another driver's reap_stale would."""
    storage.set_trial_user_attr(trial_id, FAIL_KIND_ATTR, DRIVER_GONE)
    storage.set_trial_state_values(trial_id, state=TrialState.FAIL)


def objective(params: dict, trial) -> float:
    if trial.number in (1, 2):
        reap(trial._trial.storage, trial._trial._trial_id)
    if trial.number == 2:
        trial.report(0, f1=1.0)  # writing to a failed trial raises inside the objective
    return params["x"]


class ReapWhileAsking(optuna.samplers.RandomSampler):
    """Another driver fails trial 3 while this one samples it."""

    def sample_independent(self, study, trial, param_name, param_distribution):
        if trial.number == 3:
            reap(study._storage, trial._trial_id)
        return super().sample_independent(study, trial, param_name, param_distribution)


@pytest.mark.parametrize("backend", ["sqlite", "journal"])
def test_a_trial_failed_by_another_driver_is_dropped_not_fatal(tmp_path, backend, name):  # noqa: F811
    url = f"sqlite:///{tmp_path}/s.db" if backend == "sqlite" else f"journal:///{tmp_path}/s.log"
    stages = [Stage("s", {"x": FloatDistribution(0, 1)}, defaults={"x": 0.5}, n_random=2,
                    n_bayes=2, max_fail=1, sampler=lambda seed: ReapWhileAsking(seed=seed))]
    result = LayerwiseSearch(stages, objective, storage=url, study_name=name).run()
    trials = result.stages[0].study.trials
    assert [t.state for t in trials[:4]] == [TrialState.COMPLETE] + [TrialState.FAIL] * 3
    assert result.stages[0].n_complete == 4 and result.finished


class Slow(optuna.samplers.RandomSampler):
    """Samples for longer than a lease; another driver looks for orphans meanwhile."""

    def sample_independent(self, study, trial, param_name, param_distribution):
        if trial.number == 1:
            time.sleep(1.8)
            assert reap_stale(study, lease_seconds=1) == [], "a live trial was reaped"
        return super().sample_independent(study, trial, param_name, param_distribution)


def test_a_trial_is_kept_alive_while_it_is_sampled(tmp_path, name):  # noqa: F811
    # Regression: a trial's lease started after its sampling, so a sampler slower than
    # the lease (GP on many trials, a busy machine) had it failed by another driver.
    stages = [Stage("s", {"x": FloatDistribution(0, 1)}, defaults={"x": 0.5}, n_random=1,
                    n_bayes=1, sampler=lambda seed: Slow(seed=seed))]
    result = LayerwiseSearch(stages, lambda p: p["x"], storage=f"journal:///{tmp_path}/s.log",
                             study_name=name, lease_seconds=1).run()
    assert [t.state for t in result.stages[0].study.trials] == [TrialState.COMPLETE] * 2
