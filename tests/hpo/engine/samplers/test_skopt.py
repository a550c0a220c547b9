"""SkoptSampler, tested the way Optuna tests its samplers."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import optuna
import pytest
import skopt
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState, create_trial

from hpo.engine.samplers import make_sampler
from hpo.engine.samplers.skopt import SkoptSampler

optuna.logging.set_verbosity(optuna.logging.WARNING)

# Cheap acquisition optimisation keeps the suite fast; the defaults are measured elsewhere.
FAST: dict[str, Any] = {
    "acq_func": "EI",
    "acq_optimizer_kwargs": {"n_points": 300, "n_restarts_optimizer": 1},
}
RELATIVE_KEY = "skopt:relative_params:0"

DISTRIBUTIONS: dict[str, BaseDistribution] = {
    "float": FloatDistribution(-3.0, 3.0),
    "float_log": FloatDistribution(1e-4, 1.0, log=True),
    "float_step": FloatDistribution(0.0, 1.0, step=0.25),
    "int": IntDistribution(-5, 5),
    "int_log": IntDistribution(1, 1024, log=True),
    "int_step": IntDistribution(0, 20, step=4),
    "cat_mixed": CategoricalDistribution([None, True, "relu", 1.5]),
    "cat_int": CategoricalDistribution([16, 32]),
}


def _score(dist: BaseDistribution, value: Any) -> float:
    """A value-dependent score so the surrogate has something to model."""
    return float(dist.to_internal_repr(value))


def _suggest(trial: optuna.Trial, name: str, dist: BaseDistribution) -> Any:
    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)


def _run(sampler: optuna.samplers.BaseSampler, space: dict, n: int, **kw: Any) -> optuna.Study:
    study = optuna.create_study(sampler=sampler, **kw)
    sign = 1.0 if study.direction == optuna.study.StudyDirection.MINIMIZE else -1.0

    def objective(trial: optuna.Trial) -> float:
        return sign * sum(
            _score(dist, _suggest(trial, name, dist)) ** 2 for name, dist in space.items()
        )

    study.optimize(objective, n_trials=n)
    return study


def _assert_valid(dist: BaseDistribution, value: Any) -> None:
    if isinstance(dist, CategoricalDistribution):
        assert any(value is c or (type(value) is type(c) and value == c) for c in dist.choices)
        return
    expected = int if isinstance(dist, IntDistribution) else float
    assert type(value) is expected, f"{value!r} is {type(value).__name__}"
    assert dist.low <= value <= dist.high
    if dist.step is not None:
        k = (value - dist.low) / dist.step
        assert math.isclose(k, round(k), abs_tol=1e-9)


@pytest.fixture
def told(monkeypatch: pytest.MonkeyPatch) -> list[tuple[list, list]]:
    """Record every (X, y) batch the sampler tells skopt."""
    calls: list[tuple[list, list]] = []
    original = skopt.Optimizer.tell

    def spy(self: skopt.Optimizer, x: list, y: list, fit: bool = True) -> Any:
        calls.append((list(x), list(y)))
        return original(self, x, y, fit)

    monkeypatch.setattr(skopt.Optimizer, "tell", spy)
    return calls


@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
def test_single_parameter_stays_in_range_and_type(name: str) -> None:
    space = {name: DISTRIBUTIONS[name]}
    study = _run(SkoptSampler(seed=1, **FAST), space, n=5)
    for trial in study.trials:
        _assert_valid(space[name], trial.params[name])
    # Every trial after the first was proposed by skopt, not by the fallback.
    assert [RELATIVE_KEY in t.system_attrs for t in study.trials] == [False] + [True] * 4


def test_joint_space_of_every_distribution_type() -> None:
    study = _run(SkoptSampler(seed=2, **FAST), DISTRIBUTIONS, n=6)
    for trial in study.trials[1:]:
        assert RELATIVE_KEY in trial.system_attrs
        for name, dist in DISTRIBUTIONS.items():
            _assert_valid(dist, trial.params[name])


def test_categorical_only_space_returns_the_choice_objects() -> None:
    space = {"act": CategoricalDistribution(["relu", "gelu", None]), "bn": DISTRIBUTIONS["cat_int"]}

    def objective(trial: optuna.Trial) -> float:
        act = trial.suggest_categorical("act", ["relu", "gelu", None])
        bn = trial.suggest_categorical("bn", [16, 32])
        return (act == "gelu") + bn / 32

    study = optuna.create_study(sampler=SkoptSampler(seed=0, **FAST))
    study.optimize(objective, n_trials=6)
    for trial in study.trials:
        for name, dist in space.items():
            _assert_valid(dist, trial.params[name])
    assert RELATIVE_KEY in study.trials[-1].system_attrs


def test_same_seed_same_proposals_and_different_seeds_differ() -> None:
    space = {"x": DISTRIBUTIONS["float"], "n": DISTRIBUTIONS["int_log"]}

    def proposals(seed: int) -> list[dict]:
        return [t.params for t in _run(SkoptSampler(seed=seed, **FAST), space, n=6).trials]

    assert proposals(3) == proposals(3)
    assert proposals(3) != proposals(4)


def test_a_fresh_sampler_continues_a_copied_history_identically() -> None:
    """Stateless: a resuming process (new sampler, same seed, same trials) proposes the same."""
    space = {"x": DISTRIBUTIONS["float"], "y": DISTRIBUTIONS["int_step"]}
    original = _run(SkoptSampler(seed=5, **FAST), space, n=5)
    resumed = optuna.create_study(sampler=SkoptSampler(seed=5, **FAST))
    for trial in original.trials[:4]:
        resumed.add_trial(trial)
    trial = resumed.ask()
    assert {n: _suggest(trial, n, d) for n, d in space.items()} == original.trials[4].params


@pytest.mark.parametrize("direction", ["minimize", "maximize"])
def test_beats_random_search_on_a_quadratic(direction: str) -> None:
    sign = 1.0 if direction == "minimize" else -1.0

    def objective(trial: optuna.Trial) -> float:
        x, y = trial.suggest_float("x", -5, 5), trial.suggest_float("y", -5, 5)
        return sign * ((x - 1.0) ** 2 + (y + 2.0) ** 2)

    def regret(sampler: optuna.samplers.BaseSampler) -> float:
        study = optuna.create_study(sampler=sampler, direction=direction)
        study.optimize(objective, n_trials=15)
        return sign * study.best_value

    seeds = range(3)
    skopt_regret = np.mean([regret(SkoptSampler(seed=s, **FAST)) for s in seeds])
    random_regret = np.mean([regret(optuna.samplers.RandomSampler(seed=s)) for s in seeds])
    # Random search with 15 points leaves a regret around 1-2; a GP on a quadratic
    # gets to ~1e-2. A 4x margin holds with room to spare.
    assert skopt_regret < random_regret / 4, (skopt_regret, random_regret)


def _seed_trials(study: optuna.Study, n: int, rng_seed: int = 0) -> None:
    rng = np.random.default_rng(rng_seed)
    dists = {"x": FloatDistribution(-5, 5), "y": FloatDistribution(-5, 5)}
    for _ in range(n):
        x, y = rng.uniform(-5, 5, size=2)
        study.add_trial(
            create_trial(
                params={"x": float(x), "y": float(y)},
                distributions=dists,
                value=float((x - 1) ** 2 + (y + 2) ** 2),
            )
        )


def _ask_xy(study: optuna.Study) -> tuple[optuna.Trial, np.ndarray]:
    trial = study.ask()
    return trial, np.array([trial.suggest_float("x", -5, 5), trial.suggest_float("y", -5, 5)])


def test_failed_and_pruned_trials_are_not_told(told: list) -> None:
    study = optuna.create_study(sampler=SkoptSampler(seed=0, **FAST))
    _seed_trials(study, 4)
    dists = {"x": FloatDistribution(-5, 5), "y": FloatDistribution(-5, 5)}
    study.add_trial(
        create_trial(params={"x": 0.0, "y": 0.0}, distributions=dists, state=TrialState.FAIL)
    )
    study.add_trial(
        create_trial(
            params={"x": 1.0, "y": 1.0},
            distributions=dists,
            state=TrialState.PRUNED,
            intermediate_values={0: 3.0},
        )
    )
    _ask_xy(study)
    ((xs, ys),) = told
    assert len(xs) == len(ys) == 4
    assert [0.0, 0.0] not in xs and [1.0, 1.0] not in xs


def test_pruned_trials_told_at_their_last_intermediate_value_when_asked(told: list) -> None:
    study = optuna.create_study(sampler=SkoptSampler(seed=0, consider_pruned_trials=True, **FAST))
    _seed_trials(study, 3)
    dists = {"x": FloatDistribution(-5, 5), "y": FloatDistribution(-5, 5)}
    study.add_trial(
        create_trial(
            params={"x": 1.0, "y": 1.0},
            distributions=dists,
            state=TrialState.PRUNED,
            intermediate_values={0: 9.0, 3: 7.0},
        )
    )
    _ask_xy(study)
    ((xs, ys),) = told
    assert xs[-1] == [1.0, 1.0] and ys[-1] == 7.0


def test_only_failed_trials_fall_back_to_the_independent_sampler() -> None:
    study = optuna.create_study(sampler=SkoptSampler(seed=0, **FAST))
    dists = {"x": FloatDistribution(-5, 5), "y": FloatDistribution(-5, 5)}
    for _ in range(3):
        study.add_trial(
            create_trial(params={"x": 0.0, "y": 0.0}, distributions=dists, state=TrialState.FAIL)
        )
    trial, xy = _ask_xy(study)
    assert RELATIVE_KEY not in study._storage.get_trial(trial._trial_id).system_attrs
    assert np.all(np.abs(xy) <= 5)


def test_empty_study_falls_back_then_uses_skopt() -> None:
    study = optuna.create_study(sampler=SkoptSampler(seed=0, n_initial_points=2, **FAST))
    study.optimize(lambda t: t.suggest_float("x", -1, 1) ** 2, n_trials=3)
    assert [RELATIVE_KEY in t.system_attrs for t in study.trials] == [False, False, True]


def test_added_trials_are_told_and_maximize_is_negated(told: list) -> None:
    study = optuna.create_study(
        sampler=SkoptSampler(seed=0, n_initial_points=5, **FAST), direction="maximize"
    )
    _seed_trials(study, 5)
    _ask_xy(study)  # five added COMPLETE trials are enough to leave the random phase
    ((xs, ys),) = told
    values = [t.value for t in study.trials[:5]]
    assert ys == [-v for v in values]
    assert xs == [[t.params["x"], t.params["y"]] for t in study.trials[:5]]


def test_enqueued_trial_keeps_its_params_and_is_pending_while_running(told: list) -> None:
    study = optuna.create_study(sampler=SkoptSampler(seed=0, **FAST))
    _seed_trials(study, 4)
    study.enqueue_trial({"x": 4.5, "y": -4.5})
    enqueued, xy = _ask_xy(study)
    assert list(xy) == [4.5, -4.5]
    assert not told  # every value was given: skopt was not consulted
    _ask_xy(study)  # the enqueued trial is still RUNNING
    ((xs, ys),) = told
    assert xs[-1] == [4.5, -4.5] and ys[-1] == min(ys[:-1])  # cl_min lie


def test_running_trials_push_the_next_proposal_away() -> None:
    def gap(constant_liar: bool) -> float:
        study = optuna.create_study(
            sampler=SkoptSampler(seed=1, constant_liar=constant_liar, **FAST)
        )
        _seed_trials(study, 6)
        _, first = _ask_xy(study)  # stays RUNNING
        _, second = _ask_xy(study)
        return float(np.linalg.norm(first - second))

    assert gap(constant_liar=False) < 1e-2  # same history: same point (why lying matters)
    assert gap(constant_liar=True) > 0.5


def test_running_trial_seen_from_its_shared_proposal(told: list) -> None:
    """Another process's RUNNING trial counts before it has suggested every parameter."""
    study = optuna.create_study(sampler=SkoptSampler(seed=0, **FAST))
    _seed_trials(study, 4)
    first = study.ask()
    x = first.suggest_float("x", -5, 5)  # y not suggested yet: only the shared attr knows it
    assert "y" not in study._storage.get_trial(first._trial_id).params
    _ask_xy(study)
    pending = told[-1][0][-1]
    assert pending[0] == x and pending[1] == pytest.approx(first.relative_params["y"])


def test_make_sampler_builds_it_and_rejects_bad_arguments() -> None:
    assert isinstance(make_sampler("skopt", 7), SkoptSampler)
    with pytest.raises(ValueError, match="n_initial_points"):
        SkoptSampler(n_initial_points=0)
    with pytest.raises(ValueError, match="liar_strategy"):
        SkoptSampler(liar_strategy="cl_worst")  # type: ignore[arg-type]


def test_multi_objective_is_refused() -> None:
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=SkoptSampler(seed=0))
    with pytest.raises(ValueError, match="multi-objective"):
        study.optimize(lambda t: (t.suggest_float("x", 0, 1), 1.0), n_trials=1)
