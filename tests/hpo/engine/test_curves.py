"""Learning-curve checks: a trial still improving at its end, and one that plateaued."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import FloatDistribution

from hpo.engine.curves import MIN_STEPS, still_improving, trend


def _trial(curve: list[float]) -> optuna.trial.FrozenTrial:
    return optuna.trial.create_trial(
        params={"x": 0.5}, distributions={"x": FloatDistribution(0, 1)}, value=curve[-1],
        intermediate_values=dict(enumerate(curve)),
    )


# The quickstart's untuned network at 8 epochs (validation F1 per epoch, a real trial).
CUT_SHORT = [0.0, 0.0, 0.117, 0.084, 0.537, 0.55, 0.619, 0.621]
# The same network at 22 epochs: it plateaued over its last third.
PLATEAU = [0.0, 0.0, 0.158, 0.075, 0.426, 0.24, 0.599, 0.452, 0.619, 0.308, 0.716, 0.655,
           0.576, 0.713, 0.598, 0.756, 0.751, 0.725, 0.751, 0.744, 0.743, 0.734]


def test_a_curve_still_rising_is_flagged_with_what_its_last_third_added():
    found = still_improving(_trial(CUT_SHORT))
    assert found is not None
    assert (found.steps, found.early_steps) == (8, 5)
    assert found.early == 0.537 and found.last == 0.621
    assert found.gain == pytest.approx(0.084)


def test_a_plateau_and_a_wobble_at_the_top_are_not_flagged():
    assert still_improving(_trial(PLATEAU)) is None
    # 0.734 at the end against 0.716 at best in the first 14 of 22 epochs: +0.018, under
    # 5 % of 0.734
    assert trend(_trial(PLATEAU)).gain == pytest.approx(0.018)
    wobble = [0.1, 0.5, 0.60, 0.58, 0.60, 0.615]  # +0.015 over 0.60: under 5 % of 0.615
    assert still_improving(_trial(wobble)) is None


def test_the_bar_is_at_least_one_runs_noise():
    assert still_improving(_trial(CUT_SHORT), noise_sd=0.05) is not None
    assert still_improving(_trial(CUT_SHORT), noise_sd=0.1) is None  # +0.084 is within it


def test_direction_minimize_reads_a_falling_loss_as_improving():
    loss = [1.0, 0.8, 0.7, 0.6, 0.5, 0.3]
    found = still_improving(_trial(loss), maximize=False)
    assert found is not None and found.early == 0.6 and found.gain == pytest.approx(0.3)
    assert still_improving(_trial(loss), maximize=True) is None


def test_short_curves_and_trials_without_curves_are_not_judged():
    assert trend(_trial([0.1, 0.5, 0.9][:MIN_STEPS - 1])) is None
    plain = optuna.trial.create_trial(params={"x": 0.5}, value=0.5,
                                      distributions={"x": FloatDistribution(0, 1)})
    assert trend(plain) is None
