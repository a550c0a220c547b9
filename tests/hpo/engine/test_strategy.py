"""Search strategies: the shared surrogate over all trials vs the paper's stage-wise search."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from hpo import LayerwiseSearch, SpecError, Stage, StageChangedError
from hpo.engine.ledger import COPIED_ATTR
from hpo.engine.samplers.shared import SharedGPSampler
from hpo.engine.search import FIXED_ATTR, SEARCH_ATTR
from hpo.engine.strategy import STRATEGIES, stage_history

# The coupled objective whose lock-in the cycles remedy (see test_cycles).
from tests.hpo.engine.test_cycles import Recorder, coupled

LABELS = ["first", "second", "first.c2", "second.c2"]


def stages(sampler: str | None = None) -> list[Stage]:
    return [
        Stage("first", {"a": FloatDistribution(-3.0, 3.0)}, defaults={"a": 0.0},
              n_random=3, n_bayes=4, sampler=sampler),
        Stage("second", {"b": FloatDistribution(-3.0, 3.0)}, defaults={"b": 0.0},
              n_random=3, n_bayes=4, sampler=sampler),
    ]


def search(url: str | None, name: str, objective=coupled, **kw) -> LayerwiseSearch:
    return LayerwiseSearch(
        kw.pop("stages", None) or stages(), objective, storage=url, study_name=name, seed=0,
        cycles=kw.pop("cycles", 2), cycle_budget=kw.pop("cycle_budget", (1, 3)),
        strategy=kw.pop("strategy", "shared"), **kw,
    )


def test_the_shared_model_sees_every_earlier_trial_and_the_second_pass_gains(tmp_path, name):
    url = f"sqlite:///{tmp_path}/s.db"
    objective = Recorder()
    run = search(url, name, objective)
    result = run.run()
    assert [s.name for s in result.stages] == LABELS
    assert [s.n_complete for s in result.stages] == [7, 7, 4, 4]
    assert len(objective.calls) == 7 + 6 + 3 + 3  # copied incumbents cost nothing
    for stage in result.stages:  # plain Optuna studies, each with its own parameters
        assert stage.study.user_attrs[SEARCH_ATTR]["strategy"] == "shared"
        own = {"a"} if stage.stage == "first" else {"b"}
        assert all(set(t.params) == own for t in stage.study.trials)

    # The last slot's Bayesian sampler models every trial measured before it, each with
    # the values its stage held fixed, read back from the storage.
    ledgers = {s.stage: s.ledger for s in result.stages[:3]}
    sampler = run._bayes_sampler(3, run._stage_at(3, ledgers), ledgers, seed=0)
    assert isinstance(sampler, SharedGPSampler)
    history = stage_history([s.study for s in result.stages[:3]])
    assert len(history) == 7 + 6 + 3  # every measured trial; copied incumbents skipped
    assert all(set(params) == {"a", "b"} for params, _ in history)
    fixed_b = result.stages[0].study.user_attrs[FIXED_ATTR]["b"]
    assert all(p["b"] == fixed_b for p, _ in history[:7])
    assert all(coupled(p) == pytest.approx(v) for p, v in history)

    # The coupling is what a warm second pass exploits: three Bayesian trials per stage
    # move both parameters clearly towards (2, 2).
    first, second, _, second2 = result.stages
    assert second2.ledger.value > second.ledger.value + 0.3
    assert second2.study.trials[0].user_attrs[COPIED_ATTR]["study"] == result.stages[2].study_name


def test_an_interrupted_stage_resumes_to_the_uninterrupted_result(tmp_path, name):
    url = f"sqlite:///{tmp_path}/s.db"
    stop = 7 + 6 + 3 + 1  # the second Bayesian trial of the last slot
    objective = Recorder(interrupt_at=stop)
    with pytest.raises(KeyboardInterrupt):
        search(url, name, objective).run()
    before = LayerwiseSearch.load(url, name).status()
    assert [s.state for s in before.stages] == ["finished", "finished", "finished", "open"]

    loaded = LayerwiseSearch.load(url, name, objective=Recorder())
    assert loaded.strategy == "shared"
    again = loaded.objective
    result = loaded.run()
    assert result.finished and [s.n_complete for s in result.stages] == [7, 7, 4, 4]
    assert len(again.calls) == 2  # only the open slot's missing trials ran
    (stopped,) = [t for t in result.stages[3].study.trials if t.state == TrialState.FAIL]
    clean = search(f"sqlite:///{tmp_path}/clean.db", name).run()
    assert [s.ledger.params for s in clean.stages[:3]] == [
        s.ledger.params for s in result.stages[:3]
    ]
    assert result.best_value == pytest.approx(clean.best_value, abs=0.05)


def test_stagewise_keeps_the_papers_samplers_and_stage_keys(name):
    plain = search(None, name, strategy="stagewise", cycles=1, cycle_budget=None)
    ledgers: dict = {}
    bayes = plain._bayes_sampler(0, plain.stages[0], ledgers, seed=0)
    assert isinstance(bayes, optuna.samplers.GPSampler)
    assert "strategy" not in plain._stage_key(0)  # the keys of searches stored before

    shared = search(None, name, cycles=1, cycle_budget=None)
    assert shared._stage_key(0)["strategy"] == "shared"
    assert isinstance(shared._bayes_sampler(1, shared.stages[1], ledgers, 0), SharedGPSampler)
    # A stage that names another sampler keeps it under the shared strategy.
    tpe = search(None, name, stages=stages("tpe"), cycles=1, cycle_budget=None)
    assert isinstance(tpe._bayes_sampler(0, tpe.stages[0], ledgers, 0),
                      optuna.samplers.TPESampler)
    assert "strategy" not in tpe._stage_key(0)


def test_a_changed_strategy_is_a_named_error_and_bad_names_are_refused(tmp_path, name):
    url = f"sqlite:///{tmp_path}/s.db"
    search(url, name, strategy="stagewise", cycles=1, cycle_budget=None).run()
    assert LayerwiseSearch.load(url, name).strategy == "stagewise"
    with pytest.raises(StageChangedError, match="strategy"):
        search(url, name, cycles=1, cycle_budget=None).run()
    for bad in ("joint", ""):
        with pytest.raises(SpecError, match="strategy") as info:
            search(None, name, strategy=bad)
        assert info.value.key == "strategy"
    assert set(STRATEGIES) == {"stagewise", "shared"}


def test_the_study_files_strategy_key_reaches_the_engine(tmp_path):
    from hpo.study import make_search
    from hpo.study.schema import parse_study

    raw = {
        "name": "strat",
        "storage": "sqlite:///strat.db",
        "strategy": "stagewise",
        "data": {"format": "geotiff", "dates": ["2008"], "patch_size": 16},
        "stages": [
            {"name": "optim", "n_random": 2, "n_bayes": 1, "params": {
                "optim.lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True,
                             "default": 1e-3}}},
        ],
    }
    spec = parse_study(raw, file=tmp_path / "strat.toml")
    assert spec.strategy == "stagewise" and spec.to_dict()["strategy"] == "stagewise"
    assert make_search(spec).strategy == "stagewise"
    with pytest.raises(SpecError, match="strategy"):
        parse_study({**raw, "strategy": "sharde"}, file=tmp_path / "strat.toml")


def _drive(url: str, name: str, queue) -> None:
    import time

    def slow(params: dict) -> float:
        time.sleep(0.05)  # long enough that the two drivers' trials interleave
        return coupled(params)

    result = search(url, name, slow).run()
    queue.put((result.best_value, [s.ledger.trial_number for s in result.stages]))


def test_two_drivers_share_one_shared_strategy_search(tmp_path, name):
    """Both drivers finish with the same stored result and every slot has its exact budget."""
    import multiprocessing as mp

    url = f"sqlite:///{tmp_path}/two.db"
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_drive, args=(url, name, queue)) for _ in range(2)]
    for p in procs:
        p.start()
    outcomes = [queue.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert outcomes[0] == outcomes[1]
    result = LayerwiseSearch.load(url, name).status()
    assert result.finished and all(s.n_running == 0 for s in result.stages)
    # Two drivers that ask in the same instant may both start the last trial of a slot:
    # one COMPLETE over the budget (the engine's, seen with the stage-wise GP as well).
    for stage, budget in zip(result.stages, [7, 7, 4, 4], strict=True):
        assert budget <= stage.n_complete <= budget + 1
    # Concurrent proposals were sent to different points (the pending ones are told to
    # the model at its mean), or yielded as duplicates; no point is measured twice.
    for stage in result.stages:
        points = [tuple(t.params.values()) for t in stage.study.trials
                  if t.state == TrialState.COMPLETE and not t.user_attrs.get(COPIED_ATTR)]
        assert len(points) == len(set(points))
