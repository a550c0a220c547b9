"""A stage's sampler: the incumbent, then random search, then the Bayesian sampler."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.trial import FrozenTrial, TrialState

from hpo.engine.space import derive_seed

PHASE_ATTR = "hpo:phase"
"""Trial user attribute: the phase a trial was asked in (written for incumbents only:
the others' follows from their number)."""
INCUMBENT = "incumbent"
RANDOM = "random"
BAYES = "bayes"
CONFIRM = "confirm"
"""The phase of a confirmation run: a queued trial that goes on from another's replicates
(its point is COMPLETE in the stage by design, so it is never redrawn as a duplicate)."""


def phase_of(number: int, n_random: int) -> str:
    """The phase of a stage trial: trial 0 is the incumbent, then random, then Bayesian."""
    if number == 0:
        return INCUMBENT
    return RANDOM if number < n_random else BAYES


class StageSampler(BaseSampler):
    """Chooses a stage trial's parameters by its trial number.

    Trial 0 takes the incumbent's values, trials below ``n_random`` are drawn at random
    and the rest come from the Bayesian sampler, which sees every trial of the stage.
    Random trials are seeded from (stage seed, trial number), not from one running
    random stream, so a resumed search or a second driver never repeats a point and the
    same seed gives the same points. The Bayesian sampler's random state is reset the
    same way before each of its trials: drivers start a stage together (they meet at the
    previous stage's barrier), and samplers with one seed and the same view of the
    stage (a trial asked a moment ago has no point yet) would propose the same point.

    Args:
        bayes: The sampler of the Bayesian phase.
        n_random: Trials numbered below this are the incumbent and random search.
        seed: The stage's seed.
        incumbent: Values of trial 0 (the stage's current values).
    """

    def __init__(
        self,
        bayes: BaseSampler,
        *,
        n_random: int,
        seed: int,
        incumbent: Mapping[str, Any],
    ) -> None:
        self.bayes = bayes
        self.n_random = n_random
        self.seed = seed
        self.incumbent = dict(incumbent)
        self._random: tuple[int, RandomSampler] | None = None
        self.on_trial: Callable[[int], None] | None = None
        """Called with a new trial's id before it is sampled (the engine's keepalive)."""

    def phase(self, trial: FrozenTrial) -> str:
        """The phase of ``trial`` (see :func:`phase_of`)."""
        return phase_of(trial.number, self.n_random)

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        """Delegate to the Bayesian sampler in its phase; nothing to model before."""
        if self.phase(trial) != BAYES:
            return {}
        return self.bayes.infer_relative_search_space(study, trial)

    def sample_relative(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        search_space: dict[str, BaseDistribution],
    ) -> dict[str, Any]:
        """Joint proposal of the Bayesian sampler (its phase only)."""
        if self.phase(trial) != BAYES or not search_space:
            return {}
        return self.bayes.sample_relative(study, trial, search_space)

    def sample_independent(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        """The incumbent's value, a seeded random value, or the Bayesian sampler's."""
        phase = self.phase(trial)
        if phase == INCUMBENT and param_name in self.incumbent:
            return self.incumbent[param_name]
        if phase == BAYES:
            return self.bayes.sample_independent(study, trial, param_name, param_distribution)
        return self._random_for(trial.number).sample_independent(
            study, trial, param_name, param_distribution
        )

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """Seed the Bayesian sampler for this trial, then forward the call to it."""
        if self.on_trial is not None:
            self.on_trial(trial._trial_id)
        if self.phase(trial) == BAYES:
            _seed_sampler(self.bayes, derive_seed(self.seed, "bayes", trial.number))
        self.bayes.before_trial(study, trial)

    def after_trial(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        """Forwarded to the Bayesian sampler."""
        self.bayes.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        """Reseed the Bayesian sampler (random trials are seeded per trial number)."""
        self.bayes.reseed_rng()

    def _random_for(self, number: int) -> RandomSampler:
        # One trial samples all its parameters in a row: keep its sampler for them.
        if self._random is None or self._random[0] != number:
            self._random = (number, RandomSampler(seed=derive_seed(self.seed, "random", number)))
        return self._random[1]


def _seed_sampler(sampler: BaseSampler, seed: int) -> None:
    """Reset an Optuna sampler's random state to ``seed``.

    Optuna's samplers keep it in ``_rng`` (a ``LazyRandomState`` or a numpy
    ``RandomState``), with a fallback sampler of their own beside it; samplers without
    one (the skopt sampler seeds each trial itself) are left as they are.
    """
    for attr in ("_rng", "_random_sampler", "_independent_sampler"):
        inner = getattr(sampler, attr, None)
        if isinstance(inner, BaseSampler):
            _seed_sampler(inner, seed)
            continue
        state = getattr(inner, "rng", inner)  # LazyRandomState wraps a RandomState
        if isinstance(state, np.random.RandomState):
            state.seed(seed)


__all__ = ["BAYES", "INCUMBENT", "RANDOM", "StageSampler", "phase_of"]
