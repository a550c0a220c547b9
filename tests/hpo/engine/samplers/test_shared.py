"""The shared surrogate: its GP, its acquisition, and a stage that sees other stages' trials."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from scipy.optimize import check_grad
from scipy.stats import norm

from hpo.engine.samplers.shared import _GP, TIMES, SharedGPSampler, log_ei

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_likelihood_gradient_matches_finite_differences() -> None:
    rng = np.random.RandomState(0)
    x = rng.uniform(size=(25, 4))
    x[:, 3] = rng.randint(3, size=25)  # a categorical column (choice index)
    y = np.sin(3 * x[:, 0]) + x[:, 1] ** 2 + 0.3 * x[:, 3]
    gp = _GP(x, y, np.array([False, False, False, True]))
    for raw in (np.zeros(6), rng.normal(size=6) * 0.5):
        loss, grad = gp._loss(raw)
        assert math.isfinite(loss)
        err = check_grad(lambda r: gp._loss(r)[0], lambda r: gp._loss(r)[1], raw)
        assert err < 1e-4 * max(1.0, np.linalg.norm(grad))


def test_gp_interpolates_a_noiseless_function() -> None:
    rng = np.random.RandomState(1)
    x = rng.uniform(size=(30, 2))
    y = (x[:, 0] - 0.3) ** 2 + (x[:, 1] - 0.6) ** 2
    gp = _GP(x, y, np.zeros(2, dtype=bool))
    gp.fit()
    mu, sd = gp.predict(x)
    assert np.max(np.abs(mu - y)) < 1e-2
    far_mu, far_sd = gp.predict(np.array([[0.3, 0.6]]))
    assert abs(far_mu[0]) < 0.05  # the minimum, between the points


def test_log_ei_matches_the_closed_form_and_stays_finite_in_the_tail() -> None:
    mu, sigma, best = np.array([0.0, 0.5, -0.3]), np.array([1.0, 0.2, 0.7]), 0.1
    z = (best - mu) / sigma
    direct = sigma * (z * norm.cdf(z) + norm.pdf(z))
    assert np.allclose(np.exp(log_ei(mu, sigma, best)), direct, rtol=1e-9)
    tail = log_ei(np.array([50.0]), np.array([1.0]), 0.0)  # z = -50: EI underflows
    assert np.isfinite(tail[0]) and tail[0] < -1000


def quadratic(params: dict) -> float:
    return (params["a"] - 0.7) ** 2 + (math.log10(params["lr"]) + 2) ** 2 + (
        0.0 if params["act"] == "gelu" else 0.5
    ) + 0.05 * abs(params["n"] - 6)


SPACE = {
    "a": FloatDistribution(0.0, 1.0),
    "lr": FloatDistribution(1e-5, 1e-1, log=True),
    "act": CategoricalDistribution(["relu", "gelu", "tanh"]),
    "n": IntDistribution(1, 10),
}


def test_alone_it_is_a_working_bayesian_optimizer() -> None:
    """On one study with nothing fixed: far better than random search at 25 trials."""
    def best_of(sampler: optuna.samplers.BaseSampler) -> float:
        study = optuna.create_study(sampler=sampler)
        study.optimize(lambda t: quadratic({
            "a": t.suggest_float("a", 0, 1), "lr": t.suggest_float("lr", 1e-5, 1e-1, log=True),
            "act": t.suggest_categorical("act", ["relu", "gelu", "tanh"]),
            "n": t.suggest_int("n", 1, 10),
        }), n_trials=25)
        assert all(isinstance(t.params["n"], int) for t in study.trials)
        return study.best_value

    shared = best_of(SharedGPSampler(space=SPACE, active=SPACE, fixed={}, seed=0))
    rand = best_of(optuna.samplers.RandomSampler(seed=0))
    assert shared < 0.1
    assert shared < rand / 3


def coupled(params: dict) -> float:
    """The best ``a`` is wherever ``b`` is."""
    return (params["a"] - params["b"]) ** 2


def test_history_moves_the_active_stage_to_where_the_fixed_values_want_it() -> None:
    """Other stages' trials (``a`` and ``b`` varied) tell the model ``a`` should follow ``b``.

    The stage's own data are two points at ``a`` = 0.1 and 0.2; a model of the stage alone
    cannot know the best ``a`` is 0.8, the shared one can.
    """
    rng = np.random.RandomState(0)
    history = [
        ({"a": float(a), "b": float(b)}, coupled({"a": a, "b": b}))
        for a, b in rng.uniform(size=(30, 2))
    ]
    space = {"a": FloatDistribution(0, 1), "b": FloatDistribution(0, 1)}
    sampler = SharedGPSampler(
        space=space, active={"a": space["a"]}, fixed={"b": 0.8}, history=lambda: history, seed=0
    )
    study = optuna.create_study(sampler=sampler)
    for a in (0.1, 0.2):
        study.enqueue_trial({"a": a})
    TIMES.reset()
    study.optimize(lambda t: coupled({"a": t.suggest_float("a", 0, 1), "b": 0.8}), n_trials=3)
    proposed = study.trials[2].params["a"]
    assert abs(proposed - 0.8) < 0.1
    assert TIMES.calls >= 1 and TIMES.fit > 0


def test_a_narrowed_range_and_a_single_choice_are_respected() -> None:
    """The refine stage's ranges are narrower than the declared ones the model encodes."""
    narrowed = {
        "a": FloatDistribution(0.0, 0.3),
        "lr": FloatDistribution(1e-3, 1e-2, log=True),
        "act": CategoricalDistribution(["relu"]),
        "n": IntDistribution(2, 4),
    }
    rng = np.random.RandomState(2)
    history = []
    for _ in range(20):
        p = {"a": rng.uniform(), "lr": 10 ** rng.uniform(-5, -1),
             "act": ["relu", "gelu", "tanh"][rng.randint(3)], "n": int(rng.randint(1, 11))}
        history.append((p, quadratic(p)))
    sampler = SharedGPSampler(
        space=SPACE, active=narrowed, fixed={}, history=lambda: history, seed=0
    )
    study = optuna.create_study(sampler=sampler)
    study.optimize(lambda t: quadratic({
        "a": t.suggest_float("a", 0.0, 0.3), "lr": t.suggest_float("lr", 1e-3, 1e-2, log=True),
        "act": t.suggest_categorical("act", ["relu"]), "n": t.suggest_int("n", 2, 4),
    }), n_trials=6)
    for t in study.trials:
        assert 0.0 <= t.params["a"] <= 0.3 and 1e-3 <= t.params["lr"] <= 1e-2
        assert t.params["act"] == "relu" and 2 <= t.params["n"] <= 4
    assert study.best_trial.params["a"] > 0.2  # towards 0.7, at the edge of its range


def test_missing_fixed_values_are_an_error() -> None:
    with pytest.raises(ValueError, match="no fixed value"):
        SharedGPSampler(space=SPACE, active={"a": SPACE["a"]}, fixed={"lr": 1e-3}, seed=0)


def test_same_trials_and_seed_give_the_same_proposal() -> None:
    """A proposal is a function of the stored trials and the seed (resume, other drivers)."""
    def propose() -> float:
        sampler = SharedGPSampler(space=SPACE, active=SPACE, fixed={}, seed=3)
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        study.optimize(lambda t: quadratic({
            "a": t.suggest_float("a", 0, 1),
            "lr": t.suggest_float("lr", 1e-5, 1e-1, log=True),
            "act": t.suggest_categorical("act", ["relu", "gelu", "tanh"]),
            "n": t.suggest_int("n", 1, 10),
        }), n_trials=8)
        study.sampler = sampler
        trial = study.ask(SPACE)
        return trial.params["a"], trial.params["lr"], trial.params["act"], trial.params["n"]

    assert propose() == propose()
