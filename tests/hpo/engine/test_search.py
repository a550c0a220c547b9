"""The layer-wise engine end to end on cheap objectives, with real storages."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
import warnings
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import TrialState

from hpo import (
    HPOError,
    LayerwiseSearch,
    SearchNotFoundError,
    Stage,
    StageChangedError,
    StageFailedError,
)
from hpo.engine.leases import DRIVER_GONE, FAIL_KIND_ATTR, FAIL_REASON_ATTR, reap_stale
from hpo.engine.ledger import COPIED_ATTR, LEDGER_ATTR
from hpo.engine.samplers.phased import PHASE_ATTR, phase_of
from hpo.engine.search import FIXED_ATTR, SEARCH_ATTR
from tests.hpo.conftest import quadratic, two_stages


class Recorder:
    """An objective that records the merged params of every call."""

    def __init__(self, fn=quadratic):
        self.fn = fn
        self.calls: list[dict] = []

    def __call__(self, params: dict) -> float:
        self.calls.append(dict(params))
        return self.fn(params)


def test_stages_run_in_order_with_ledger_incumbent_and_fixed_params(tmp_path, name):
    objective = Recorder()
    url = f"sqlite:///{tmp_path}/s.db"
    search = LayerwiseSearch(two_stages(), objective, storage=url, study_name=name)
    result = search.run()

    first, second = result.stages
    assert [s.study_name for s in result.stages] == [f"{name}.01.first", f"{name}.02.second"]
    for stage in result.stages:
        assert stage.state == "finished" and stage.n_complete == 5
        assert stage.study.user_attrs[SEARCH_ATTR]["name"] == name
        # A BO sampler only ever sees its own stage's parameters.
        assert {tuple(sorted(t.params)) for t in stage.study.trials} == {
            tuple(sorted(search.stages[stage.index].space))
        }
    # The first stage measures the defaults first.
    assert first.study.trials[0].params == {"x": 0.0, "n": 5}
    assert objective.calls[0] == {"x": 0.0, "n": 5, "lr": 0.01, "act": "relu"}
    # The incumbent is copied into the second stage, not recomputed.
    copied = second.study.trials[0]
    assert copied.user_attrs[COPIED_ATTR]["trial"] == first.ledger.trial_number
    assert copied.value == first.ledger.value
    assert copied.params == {"lr": 0.01, "act": "relu"}
    assert len(objective.calls) == 5 + 4
    # Second-stage trials see the first stage at its ledger values; fixed params are
    # user attributes, not trial parameters.
    for call in objective.calls[5:]:
        assert {k: call[k] for k in ("x", "n")} == first.ledger.params
    assert second.study.user_attrs[FIXED_ATTR] == first.ledger.params
    assert first.study.user_attrs[FIXED_ATTR] == {"lr": 0.01, "act": "relu"}
    # Phases by trial number: incumbent, random below n_random, then Bayesian.
    assert first.study.trials[0].user_attrs[PHASE_ATTR] == "incumbent"
    phases = [phase_of(t.number, 3) for t in first.study.trials]
    assert phases == ["incumbent", "random", "random", "bayes", "bayes"]
    # The result merges the ledgers.
    assert result.best_params == {**first.ledger.params, **second.ledger.params}
    assert result.best_value == second.ledger.value >= first.ledger.value


def test_ledger_ties_go_to_the_lowest_trial_number(name):
    search = LayerwiseSearch(two_stages(), lambda p: 1.0, study_name=name, sampler="random")
    result = search.run()
    assert [s.ledger.trial_number for s in result.stages] == [0, 0]


def test_remeasure_incumbent_runs_it_again(name):
    objective = Recorder()
    search = LayerwiseSearch(
        two_stages(), objective, study_name=name, remeasure_incumbent=True
    )
    result = search.run()
    assert len(objective.calls) == 10
    assert COPIED_ATTR not in result.stages[1].study.trials[0].user_attrs


def test_same_seed_same_trials_other_seed_other_trials(name):
    def points(seed):
        result = LayerwiseSearch(
            two_stages(), quadratic, study_name=name, seed=seed, sampler="tpe"
        ).run()
        return [[t.params for t in s.study.trials] for s in result.stages]

    assert points(3) == points(3)
    assert points(3) != points(4)


@pytest.mark.parametrize("sampler", ["random", "tpe", "gp", "skopt", "callable"])
def test_every_sampler_end_to_end(name, sampler):
    spec = sampler
    if sampler == "callable":
        spec = lambda seed: optuna.samplers.TPESampler(seed=seed, n_startup_trials=0)  # noqa: E731
    stages = [
        Stage("only", {"x": FloatDistribution(-2, 2), "k": IntDistribution(0, 4)},
              defaults={"x": 0.0, "k": 0}, n_random=2, n_bayes=3)
    ]
    result = LayerwiseSearch(
        stages, lambda p: -((p["x"] - 0.5) ** 2) - p["k"], study_name=name, sampler=spec
    ).run()
    assert result.stages[0].n_complete == 5
    assert result.best_value >= -0.25  # at least as good as the defaults


def test_a_loaded_search_reports_its_state_in_a_fresh_process(tmp_path, name):
    url = f"sqlite:///{tmp_path}/s.db"
    LayerwiseSearch(two_stages(), quadratic, storage=url, study_name=name).run()
    code = (
        "import json, sys; from hpo import LayerwiseSearch; "
        f"r = LayerwiseSearch.load({url!r}, {name!r}).status(); "
        "print(json.dumps([r.best_params, r.best_value, "
        "[s.ledger.to_dict() for s in r.stages]]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True,
        cwd=Path(__file__).resolve().parents[3],
    ).stdout
    params, value, ledgers = json.loads(out)
    here = LayerwiseSearch.load(url, name).status()
    assert params == here.best_params and value == here.best_value
    assert ledgers == [s.ledger.to_dict() for s in here.stages]
    # The stored attribute is the ledger, read from the storage.
    assert ledgers[0] == here.stages[0].study.user_attrs[LEDGER_ATTR]
    with pytest.raises(HPOError, match="no objective"):
        LayerwiseSearch.load(url, name).run()
    with pytest.raises(SearchNotFoundError, match="no-such"):
        LayerwiseSearch.load(url, "no-such")


def test_a_rerun_skips_finished_stages(tmp_path, name):
    url = f"sqlite:///{tmp_path}/s.db"
    LayerwiseSearch(two_stages(), quadratic, storage=url, study_name=name).run()
    objective = Recorder()
    result = LayerwiseSearch(two_stages(), objective, storage=url, study_name=name).run()
    assert objective.calls == []
    assert all(s.n_complete == 5 for s in result.stages)


def test_changing_a_finished_stage_is_a_named_error(tmp_path, name):
    url = f"sqlite:///{tmp_path}/s.db"
    LayerwiseSearch(two_stages(), quadratic, storage=url, study_name=name).run()
    changed = two_stages()
    changed[0] = Stage("first", {"x": FloatDistribution(-9, 9), "n": IntDistribution(1, 9)},
                       defaults={"x": 0.0, "n": 5}, n_random=3, n_bayes=2, sampler="tpe")
    search = LayerwiseSearch(changed, quadratic, storage=url, study_name=name)
    with pytest.raises(StageChangedError, match="--fresh.*--from-stage first") as info:
        search.run()
    assert info.value.stage == "first" and "space" in info.value.changes
    # Only what changed is named, not both whole stage descriptions.
    assert "high: 5.0 -> 9" in info.value.changes and "IntDistribution" not in str(info.value)
    # Re-tuning from the changed stage on works; fresh starts over.
    objective = Recorder()
    search.objective = objective
    result = search.run(from_stage="first")
    assert result.finished and len(objective.calls) == 9
    assert all(-9 <= c["x"] <= 9 for c in objective.calls)
    assert result.stages[1].study.user_attrs[SEARCH_ATTR]["stages"][0]["space"]["x"]
    assert len(search.reset()) == 2


def test_failures_and_nan_are_fail_with_reason_and_never_best(name):
    def objective(params):
        if params["n"] % 3 == 0:
            raise RuntimeError("diverged")
        if params["n"] % 3 == 1:
            return float("nan")
        return quadratic(params)

    stages = [Stage("s", {"n": IntDistribution(0, 30)}, defaults={"n": 2},
                    n_random=3, n_bayes=3, max_fail=100)]
    search = LayerwiseSearch(
        stages, lambda p: objective({**p, "x": 1, "lr": 0.1, "act": "x"}),
        study_name=name, sampler="random",
    )
    result = search.run()
    trials = result.stages[0].study.trials
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert failed, "the seeded random search should hit failing values"
    reasons = {t.user_attrs[FAIL_REASON_ATTR] for t in failed}
    assert any("RuntimeError: diverged" in r for r in reasons)
    assert any("nan" in r for r in reasons)
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 6
    assert result.stages[0].ledger.params["n"] % 3 == 2
    assert math.isfinite(result.best_value)


def test_max_fail_stops_the_stage_with_a_named_error(name):
    stages = [Stage("s", {"x": FloatDistribution(0, 1)}, defaults={"x": 0.5},
                    n_random=2, n_bayes=2, max_fail=3)]

    def broken(params):
        raise ValueError("bad input")

    search = LayerwiseSearch(stages, broken, study_name=name)
    with pytest.raises(StageFailedError, match="3 failed trials.*bad input") as info:
        search.run()
    assert info.value.stage == "s"
    assert len(search.status().stages[0].study.trials) == 3


def test_pruned_trials_are_pruned_with_epochs_and_do_not_count(name):
    class PruneOdd(optuna.pruners.BasePruner):
        def prune(self, study, trial):
            return trial.number % 2 == 1 and max(trial.intermediate_values) >= 1

    def objective(params, trial):
        for epoch in range(3):
            trial.report(epoch, f1=params["x"] * epoch, loss=1.0)
            if trial.should_stop():
                return 99.0  # an early value must never compete
        return params["x"]

    stages = [Stage("s", {"x": FloatDistribution(0, 1)}, defaults={"x": 0.5},
                    n_random=2, n_bayes=2)]
    search = LayerwiseSearch(
        stages, objective, study_name=name, pruner=PruneOdd(), metric="f1", sampler="random"
    )
    result = search.run()
    trials = result.stages[0].study.trials
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert pruned and all(t.number % 2 == 1 for t in pruned)
    assert all(t.user_attrs["hpo:epochs"] == 2 for t in pruned)
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 4
    assert result.best_value <= 1.0
    complete = next(t for t in trials if t.state == TrialState.COMPLETE)
    assert complete.intermediate_values == {e: complete.params["x"] * e for e in range(3)}
    assert [h["loss"] for h in complete.user_attrs["hpo:history"]] == [1.0] * 3


def test_refine_narrows_every_parameter_around_the_incumbent(name):
    objective = Recorder()
    search = LayerwiseSearch(two_stages(), objective, study_name=name, refine=3)
    result = search.run()
    assert [s.name for s in result.stages] == ["first", "second", "refine"]
    refine = result.stages[2]
    incumbent = {**result.stages[0].ledger.params, **result.stages[1].ledger.params}
    assert refine.study.trials[0].user_attrs[COPIED_ATTR]["study"].endswith("second")
    for trial in refine.study.trials[1:]:
        p = trial.params
        assert abs(p["x"] - incumbent["x"]) <= 0.25 * 10 + 1e-9
        assert abs(p["n"] - incumbent["n"]) <= 2
        assert abs(math.log(p["lr"] / incumbent["lr"])) <= 0.25 * math.log(1e4) + 1e-9
    assert result.best_params == result.stages[2].ledger.params
    assert result.best_value >= result.stages[1].ledger.value
    assert len(objective.calls) == 5 + 4 + 3


def test_artifacts_enter_the_ledger_and_later_stages_load_them(tmp_path, name):
    loaded = []

    def objective(params, trial):
        if trial.stage == "first":
            path = tmp_path / f"w{trial.number}.txt"
            path.write_text(f"weights of trial {trial.number}")
            trial.save_artifact(path)
        else:
            (filename,) = trial.ledgers["first"].artifacts
            got = trial.load_artifact(filename, tmp_path / "got.txt")
            loaded.append((filename, got.read_text()))
        return quadratic(params)

    search = LayerwiseSearch(
        two_stages(), objective, study_name=name, artifact_store=tmp_path / "artifacts"
    )
    result = search.run()
    ledger = result.stages[0].ledger
    assert list(ledger.artifacts) == [f"w{ledger.trial_number}.txt"]
    best = ledger.trial_number
    assert set(loaded) == {(f"w{best}.txt", f"weights of trial {best}")}
    # The copied incumbent carries the artifacts of the trial it copies.
    copied = result.stages[1].study.trials[0]
    assert copied.user_attrs[COPIED_ATTR]["artifacts"] == ledger.artifacts
    assert result.stages[1].ledger.artifacts in ({}, ledger.artifacts)


def test_invalid_searches_are_spec_errors():
    from hpo import SpecError

    with pytest.raises(SpecError, match="at least one stage"):
        LayerwiseSearch([], quadratic)
    stages = two_stages()
    with pytest.raises(SpecError, match="two stages named"):
        LayerwiseSearch([stages[0], stages[0]], quadratic)
    clash = Stage("other", {"x": FloatDistribution(0, 1)}, defaults={"x": 0.5})
    with pytest.raises(SpecError, match="'x' is in stages"):
        LayerwiseSearch([stages[0], clash], quadratic)
    with pytest.raises(SpecError, match="direction"):
        LayerwiseSearch(stages, quadratic, direction="up")
    with pytest.raises(SpecError, match="did you mean 'second'"):
        LayerwiseSearch(stages, quadratic).reset("secnd")


def test_a_runner_with_several_trials_in_flight_plugs_in(name):
    """A parallel runner (as the Ray runner will be) asks several trials, then tells."""
    from hpo.engine.runners import Runner

    class TwoAtATime(Runner):
        name = "two"

        def __init__(self):
            self.in_flight_seen = 0

        def run_stage(self, job):
            while True:
                counts = job.poll()
                if job.is_done(counts):
                    return
                batch = []
                for _ in range(min(2, job.open_slots(counts))):
                    pending = job.ask()
                    if pending is not None:
                        batch.append(pending)
                running = job.study.get_trials(states=(TrialState.RUNNING,))
                self.in_flight_seen = max(self.in_flight_seen, len(running))
                for pending in reversed(batch):  # finish out of order
                    job.tell(pending, job.evaluate(pending))

    runner = TwoAtATime()
    result = LayerwiseSearch(
        two_stages(n_random=2, n_bayes=3), quadratic, study_name=name, runner=runner
    ).run()
    assert runner.in_flight_seen == 2
    for stage in result.stages:
        assert stage.n_complete == 5 and stage.n_running == 0
        points = [tuple(t.params.values()) for t in stage.study.trials]
        assert len(set(points)) == len(points)  # concurrent trials got different points


def test_interrupted_trials_are_failed_but_not_counted_against_max_fail(name):
    calls = []

    def objective(params):
        calls.append(params)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return quadratic({**params, "lr": 0.1, "act": "tanh"})

    stages = [Stage("s", {"x": FloatDistribution(-5, 5), "n": IntDistribution(1, 9)},
                    defaults={"x": 0.0, "n": 5}, n_random=2, n_bayes=1, max_fail=1)]
    search = LayerwiseSearch(stages, objective, study_name=name, sampler="random")
    with pytest.raises(KeyboardInterrupt):
        search.run()
    result = search.run()  # resumes: the interruption does not count as a failure
    assert result.stages[0].n_complete == 3 and result.stages[0].n_fail == 1


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_trial_whose_driver_died_before_its_first_heartbeat_is_reaped(
    tmp_path, name, backend, request
):
    url = (
        request.getfixturevalue("pg_url") if backend == "postgres"
        else f"sqlite:///{tmp_path}/s.db"
    )
    # lease_seconds=1: heartbeat every second, stale after a grace period of 2 s.
    search = LayerwiseSearch(two_stages(), quadratic, storage=url, study_name=name,
                             lease_seconds=1)
    probe_name = f"{name}-probe"
    try:
        probe, stage = (
            optuna.create_study(study_name=n, storage=search.storage, direction="maximize")
            for n in (probe_name, search.stage_study_name(0))
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna: heartbeats belong to study.optimize
            orphan = probe.ask()  # its driver dies here, before any heartbeat
            alive = probe.ask()
            stage.ask()  # the search's first trial (the incumbent), lost the same way
        search.storage.record_heartbeat(alive._trial_id)
        # Younger than the grace period: it may be a live driver still sampling.
        assert reap_stale(probe, lease_seconds=1) == []
        assert reap_stale(stage, lease_seconds=1) == []
        time.sleep(2.2)
        search.storage.record_heartbeat(alive._trial_id)  # a live driver, long trial
        reaped = reap_stale(probe, lease_seconds=1)
        assert [t.number for t in reaped] == [orphan.number]
        assert probe.trials[alive.number].state == TrialState.RUNNING

        # The search reaps its own orphan, queues the lost incumbent and measures it.
        result = search.run()
        trials = result.stages[0].study.trials
        assert trials[0].state == TrialState.FAIL
        assert trials[0].user_attrs[FAIL_KIND_ATTR] == DRIVER_GONE
        assert "heartbeats" in trials[0].user_attrs[FAIL_REASON_ATTR]
        incumbents = [t for t in trials if t.user_attrs.get(PHASE_ATTR) == "incumbent"]
        assert [t.state for t in incumbents] == [TrialState.COMPLETE]
        assert incumbents[0].params == {"x": 0.0, "n": 5}
        assert [s.n_complete for s in result.stages] == [5, 5]
    finally:
        search.reset()
        optuna.delete_study(study_name=probe_name, storage=search.storage)


def test_ctrl_c_does_not_count_as_a_failure_and_the_defaults_are_measured_again(tmp_path, name):
    url = f"sqlite:///{tmp_path}/s.db"
    stages = [
        Stage(s.name, s.space, defaults=s.defaults, n_random=2, n_bayes=1, sampler="tpe",
              max_fail=1)
        for s in two_stages()
    ]
    calls: list[dict] = []

    def interrupted_at_every_start(params: dict) -> float:
        calls.append(dict(params))
        raise KeyboardInterrupt

    # Three Ctrl-C's on the first trial: with max_fail=1, a counted failure would stop it.
    for _ in range(3):
        with pytest.raises(KeyboardInterrupt):
            LayerwiseSearch(stages, interrupted_at_every_start, storage=url,
                            study_name=name).run()
    assert all(c == {"x": 0.0, "n": 5, "lr": 0.01, "act": "relu"} for c in calls)

    objective = Recorder()
    result = LayerwiseSearch(stages, objective, storage=url, study_name=name).run()
    assert result.finished
    # The interrupted incumbent was queued again, so the untuned defaults are measured.
    assert objective.calls[0] == {"x": 0.0, "n": 5, "lr": 0.01, "act": "relu"}
    first = result.stages[0].study.trials
    interrupted = [t for t in first if t.state == TrialState.FAIL]
    assert len(interrupted) == 3
    assert {t.user_attrs[FAIL_KIND_ATTR] for t in interrupted} == {"interrupted"}
    measured = [t for t in first if t.state == TrialState.COMPLETE]
    assert measured[0].params == {"x": 0.0, "n": 5}
