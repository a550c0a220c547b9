"""Several passes over the stages (``cycles``): naming, incumbents, resume, spec changes."""

from __future__ import annotations

import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from hpo import LayerwiseSearch, SpecError, Stage, StageChangedError
from hpo.engine.leases import FAIL_KIND_ATTR
from hpo.engine.ledger import COPIED_ATTR
from hpo.engine.runners.job import INTERRUPTED
from hpo.engine.search import FIXED_ATTR, SEARCH_ATTR
from hpo.study.export import export_best

BUDGET = 8  # n_random=4 (incumbent included) + n_bayes=4 per stage
LABELS = ["first", "second", "first.c2", "second.c2"]


def coupled_stages(width: float = 3.0) -> list[Stage]:
    """Stage ``first`` tunes ``a``, stage ``second`` tunes ``b``; both default to 0."""
    return [
        Stage("first", {"a": FloatDistribution(-width, width)}, defaults={"a": 0.0},
              n_random=4, n_bayes=4, sampler="tpe"),
        Stage("second", {"b": FloatDistribution(-3.0, 3.0)}, defaults={"b": 0.0},
              n_random=4, n_bayes=4, sampler="tpe"),
    ]


def coupled(params: dict) -> float:
    """Maximum 0 at a = b = 2, but the best ``a`` is wherever ``b`` is.

    With ``b`` at its default, the first pass settles ``a`` near 0; ``b`` then settles
    near (a + 2) / 2 = 1 (value about -2). Only a second pass can move ``a`` towards
    ``b`` and ``b`` on towards 2: the lock-in DESIGN.md's cycles remedy is for.
    """
    return -((params["a"] - params["b"]) ** 2) - (params["b"] - 2.0) ** 2


class Recorder:
    """Records the merged params of every call; raises KeyboardInterrupt at one call."""

    def __init__(self, interrupt_at: int | None = None) -> None:
        self.calls: list[dict] = []
        self.interrupt_at = interrupt_at

    def __call__(self, params: dict) -> float:
        if len(self.calls) == self.interrupt_at:
            self.interrupt_at = None
            raise KeyboardInterrupt
        self.calls.append(dict(params))
        return coupled(params)


def search(url: str, name: str, objective=coupled, **kw) -> LayerwiseSearch:
    return LayerwiseSearch(
        kw.pop("stages", None) or coupled_stages(), objective, storage=url, study_name=name,
        seed=0, cycles=kw.pop("cycles", 2), **kw,
    )


def test_a_second_pass_retunes_each_stage_from_the_incumbent_and_beats_the_first(
    tmp_path, name
):
    url = f"sqlite:///{tmp_path}/s.db"
    objective = Recorder()
    result = search(url, name, objective).run()

    assert [s.name for s in result.stages] == LABELS
    assert [s.study_name for s in result.stages] == [
        f"{name}.01.first", f"{name}.02.second", f"{name}.03.first.c2", f"{name}.04.second.c2"
    ]
    assert [(s.stage, s.cycle) for s in result.stages] == [
        ("first", 1), ("second", 1), ("first", 2), ("second", 2)
    ]
    assert all(s.state == "finished" and s.n_complete == BUDGET for s in result.stages)
    first, second, first2, second2 = result.stages
    for index, stage in enumerate(result.stages):
        record = stage.study.user_attrs[SEARCH_ATTR]
        assert record["index"] == index and record["cycles"] == 2

    # Each pass-2 stage starts from the incumbent, copied (not measured): the value of
    # the slot before it, at the stage's own latest ledger values.
    for stage, before, own in ((first2, second, first), (second2, first2, second)):
        copied = stage.study.trials[0]
        assert copied.user_attrs[COPIED_ATTR]["study"] == before.study_name
        assert copied.user_attrs[COPIED_ATTR]["trial"] == before.ledger.trial_number
        assert copied.value == before.ledger.value
        assert copied.params == own.ledger.params
    assert len(objective.calls) == BUDGET + 3 * (BUDGET - 1)

    # Stages before this one are at this pass's values, later ones at the last pass's.
    assert first2.study.user_attrs[FIXED_ATTR] == second.ledger.params
    assert second2.study.user_attrs[FIXED_ATTR] == first2.ledger.params
    pass2_first = objective.calls[BUDGET + BUDGET - 1: BUDGET + 2 * (BUDGET - 1)]
    pass2_second = objective.calls[BUDGET + 2 * (BUDGET - 1):]
    assert {c["b"] for c in pass2_first} == {second.ledger.params["b"]}
    assert {c["a"] for c in pass2_second} == {first2.ledger.params["a"]}
    # A later pass draws its own random points.
    assert first2.study.trials[1].params != first.study.trials[1].params

    # The coupling is what the second pass exploits: it ends clearly better.
    assert second2.ledger.value > second.ledger.value + 0.3
    assert result.best_value == second2.ledger.value
    assert result.best_params == {**first2.ledger.params, **second2.ledger.params}
    assert coupled(result.best_params) == pytest.approx(result.best_value)


def test_an_interrupted_second_pass_resumes_without_recomputing(tmp_path, name):
    url = f"sqlite:///{tmp_path}/s.db"
    # Calls: 8 (first), 7 (second), 7 (first.c2), then second.c2; stop at its 3rd call.
    stop = BUDGET + 2 * (BUDGET - 1) + 2
    objective = Recorder(interrupt_at=stop)
    with pytest.raises(KeyboardInterrupt):
        search(url, name, objective).run()
    before = LayerwiseSearch.load(url, name).status()
    assert [s.state for s in before.stages] == ["finished", "finished", "finished", "open"]
    assert before.stages[3].n_complete == 3  # the copied incumbent and two measured

    again = Recorder()
    result = search(url, name, again).run()
    assert result.finished
    assert [s.n_complete for s in result.stages] == [BUDGET] * 4
    # Only the open slot's missing trials ran, with the first stage at its pass-2 values.
    assert len(again.calls) == BUDGET - 3
    assert {c["a"] for c in again.calls} == {result.stages[2].ledger.params["a"]}
    (stopped,) = [t for t in result.stages[3].study.trials if t.state == TrialState.FAIL]
    assert stopped.user_attrs[FAIL_KIND_ATTR] == INTERRUPTED
    # The same search uninterrupted stores the same ledgers (resume changes nothing).
    clean = search(f"sqlite:///{tmp_path}/clean.db", name).run()
    assert [s.ledger.params for s in clean.stages] == [s.ledger.params for s in result.stages]


def test_status_load_and_export_show_the_stage_studies_in_run_order(tmp_path, name):
    url = f"sqlite:///{tmp_path}/s.db"
    # One pass first: adding a pass to a finished search keeps its finished studies.
    search(url, name, cycles=1).run()
    objective = Recorder()
    search(url, name, objective).run()
    assert len(objective.calls) == 2 * (BUDGET - 1)  # only the new pass ran

    loaded = LayerwiseSearch.load(url, name)
    assert loaded.cycles == 2 and loaded.stage_names == LABELS
    result = loaded.status()
    assert [s.study_name for s in result.stages] == sorted(s.study_name for s in result.stages)
    assert [s.name for s in result.stages] == LABELS
    summary = result.summary().splitlines()
    assert [line.split()[1] for line in summary[1:5]] == LABELS
    doc = export_best(loaded, tmp_path / "best.json")
    stages = doc["provenance"]["stages"]
    assert [(s["name"], s["cycle"]) for s in stages] == [
        ("first", 1), ("second", 1), ("first.c2", 2), ("second.c2", 2)
    ]
    assert doc["best_value"] == result.stages[3].ledger.value
    assert doc["model"]["params"] == result.best_params


def test_a_changed_finished_stage_is_a_named_error_in_every_pass(tmp_path, name):
    url = f"sqlite:///{tmp_path}/s.db"
    search(url, name).run()
    with pytest.raises(StageChangedError, match="--from-stage first") as info:
        search(url, name, stages=coupled_stages(width=4.0)).run()
    assert info.value.stage == "first" and "space" in info.value.changes

    # A new per-pass budget changes only the later passes' slots.
    changed = search(url, name, cycle_budget=(1, 3))
    with pytest.raises(StageChangedError, match="--from-stage first.c2") as info:
        changed.run()
    assert info.value.stage == "first.c2"
    objective = Recorder()
    changed.objective = objective
    result = changed.run(from_stage="first.c2")
    assert [s.n_complete for s in result.stages] == [BUDGET, BUDGET, 4, 4]
    assert len(objective.calls) == 2 * 3  # the incumbent is copied, three BO trials each
    assert [s.state for s in result.stages] == ["finished"] * 4


def test_refine_runs_after_the_last_pass_and_options_are_checked(name):
    stages = coupled_stages()
    result = LayerwiseSearch(
        stages, coupled, study_name=name, cycles=2, cycle_budget=(2, 1), refine=2
    ).run()
    assert [s.name for s in result.stages] == [*LABELS, "refine"]
    refine = result.stages[4]
    assert refine.study_name == f"{name}.05.refine" and refine.cycle == 2
    assert refine.study.trials[0].user_attrs[COPIED_ATTR]["study"] == f"{name}.04.second.c2"
    assert [s.budget for s in result.stages] == [BUDGET, BUDGET, 3, 3, 3]
    assert result.best_value >= result.stages[3].ledger.value

    for bad in (0, 1.5, True):
        with pytest.raises(SpecError, match="cycles"):
            LayerwiseSearch(stages, coupled, cycles=bad)
    for bad in ((0, 3), (1,), (1, -1), "13"):
        with pytest.raises(SpecError, match="cycle_budget"):
            LayerwiseSearch(stages, coupled, cycles=2, cycle_budget=bad)


def test_the_study_files_cycles_key_reaches_the_engine(tmp_path):
    from hpo.study import make_search
    from hpo.study.schema import parse_study

    spec = parse_study(
        {
            "name": "cyc",
            "storage": "sqlite:///cyc.db",
            "cycles": 2,
            "data": {"format": "geotiff", "dates": ["2008"], "patch_size": 16},
            "stages": [
                {"name": "optim", "n_random": 2, "n_bayes": 1, "params": {
                    "optim.lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True,
                                 "default": 1e-3}}},
            ],
        },
        file=tmp_path / "cyc.toml",
    )
    built = make_search(spec)
    assert built.cycles == 2 and built.stage_names == ["optim", "optim.c2"]
