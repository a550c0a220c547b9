"""Stage serialization, seeds, ledgers and the refine stage's narrowing."""

from __future__ import annotations

import math
import subprocess
import sys

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from hpo import Refine, SpecError
from hpo.engine.ledger import Ledger, best_trial
from hpo.engine.space import derive_seed, narrow, stage_from_dict, stage_to_dict
from tests.hpo.conftest import two_stages

MAX = optuna.study.StudyDirection.MAXIMIZE
MIN = optuna.study.StudyDirection.MINIMIZE


def test_derived_seeds_are_the_same_in_another_process():
    here = derive_seed(7, "temporal", 3)
    code = "from hpo.engine.space import derive_seed; print(derive_seed(7, 'temporal', 3))"
    there = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert int(there.stdout) == here
    assert derive_seed(7, "temporal") != derive_seed(7, "dbn") != derive_seed(8, "dbn")
    assert 0 <= here < 2**31


def test_stage_round_trips_through_json():
    for stage in two_stages():
        assert stage_from_dict(stage_to_dict(stage)) == stage


def test_narrow_float_linear_and_log():
    lin = narrow(FloatDistribution(0.0, 10.0), 9.0)
    assert (lin.low, lin.high) == (6.5, 10.0)
    log = narrow(FloatDistribution(1e-4, 1.0, log=True), 1e-2)
    assert log.log and math.isclose(log.low, 1e-3) and math.isclose(log.high, 1e-1)
    stepped = narrow(FloatDistribution(0.0, 1.0, step=0.1), 0.5)
    assert stepped.step == 0.1
    assert math.isclose(stepped.low, 0.2) and math.isclose(stepped.high, 0.8)


def test_narrow_int_keeps_two_steps_and_the_grid():
    assert (lambda d: (d.low, d.high))(narrow(IntDistribution(1, 5), 3)) == (1, 5)
    wide = narrow(IntDistribution(0, 100), 50)
    assert (wide.low, wide.high) == (25, 75)
    small = narrow(IntDistribution(0, 100), 0)
    assert (small.low, small.high) == (0, 25)
    stepped = narrow(IntDistribution(0, 64, step=8), 32)
    assert stepped.step == 8 and (stepped.low, stepped.high) == (16, 48)
    tight = narrow(IntDistribution(0, 8, step=2), 4)
    assert (tight.low, tight.high) == (0, 8)  # at least two steps either side


def test_narrow_categorical_keeps_seen_choices_in_order():
    dist = CategoricalDistribution(["a", "b", "c", "d"])
    assert narrow(dist, "c", seen=["a", "c"]).choices == ("a", "c")
    assert narrow(dist, "d").choices == ("d",)


def test_refine_options_are_validated():
    assert Refine.coerce(5) == Refine(n_bayes=5)
    assert Refine.coerce({"n_bayes": 3, "width": 0.1}).width == 0.1
    with pytest.raises(SpecError, match="width"):
        Refine(width=0.9)
    with pytest.raises(SpecError):
        Refine.coerce("lots")


def _t(number, value, state=TrialState.COMPLETE):
    t = create_trial(value=value if state == TrialState.COMPLETE else None, state=state,
                     params={"x": number}, distributions={"x": IntDistribution(0, 99)})
    t.number = number
    return t


def test_best_trial_ties_lowest_number_and_skips_non_finite():
    trials = [_t(3, 2.0), _t(1, 2.0), _t(2, float("inf")), _t(4, 5.0, TrialState.FAIL),
              _t(5, 1.0)]
    assert best_trial(trials, MAX).number == 1
    assert best_trial(trials, MIN).number == 5
    assert best_trial([_t(0, 0.0, TrialState.PRUNED)], MAX) is None


def test_ledger_round_trip():
    ledger = Ledger("s", "demo.01.s", {"x": 1}, 0.5, 3, {"w.pt": "abc"})
    assert Ledger.from_dict(ledger.to_dict()) == ledger
