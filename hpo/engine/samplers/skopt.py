"""An Optuna sampler on scikit-optimize's ``Optimizer`` (Optuna no longer ships one)."""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import optuna
import skopt
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    IntDistribution,
)
from optuna.samplers import BaseSampler, RandomSampler
from optuna.search_space import IntersectionSearchSpace
from optuna.trial import FrozenTrial, TrialState

if TYPE_CHECKING:
    from optuna.study import Study

LiarStrategy = Literal["cl_min", "cl_mean", "cl_max"]

# Where a trial's relatively sampled parameters are shared with other processes before
# the objective has suggested them (the same idea as GPSampler's system attribute).
_RELATIVE_PARAMS_KEY = "skopt:relative_params"
# RDB storages cap a system attribute's value; longer JSON is split into numbered chunks.
_SYSTEM_ATTR_MAX_LENGTH = 2045
# Acquisition optimisation dominates the cost of an ask (skopt's defaults, 10 000
# candidates and 5 L-BFGS restarts per acquisition, take ~1.5 s at 50 trials on a busy
# core with "gp_hedge"); these keep a 50-trial ask well under a second.
_DEFAULT_ACQ_OPTIMIZER_KWARGS = {"n_points": 2000, "n_restarts_optimizer": 2, "n_jobs": 1}


@dataclass(frozen=True)
class _Dim:
    """One Optuna distribution as a skopt dimension, with the value mapping both ways.

    Stepped distributions become an integer index ``k`` (value = ``low + k * step``)
    because skopt has no stepped dimensions; categoricals become the index of the choice
    so that any choice object (``None``, bool, mixed types) survives skopt's encoders.
    """

    dist: BaseDistribution

    def dimension(self) -> skopt.space.Dimension:
        d = self.dist
        if isinstance(d, CategoricalDistribution):
            return skopt.space.Categorical(list(range(len(d.choices))))
        prior = "log-uniform" if d.log else "uniform"
        if isinstance(d, IntDistribution) and not d.log:
            return skopt.space.Integer(0, (d.high - d.low) // d.step)
        if isinstance(d, IntDistribution):  # log: Optuna forbids step != 1 here
            return skopt.space.Integer(d.low, d.high, prior=prior)
        if d.step is not None:
            return skopt.space.Integer(0, round((d.high - d.low) / d.step))
        return skopt.space.Real(d.low, d.high, prior=prior)

    def to_skopt(self, value: Any) -> int | float:
        d = self.dist
        if isinstance(d, CategoricalDistribution):
            return int(d.to_internal_repr(value))
        step = getattr(d, "step", None)
        if step is not None and not (isinstance(d, IntDistribution) and d.log):
            return int(round((value - d.low) / step))
        return value

    def from_skopt(self, x: Any) -> Any:
        d = self.dist
        if isinstance(d, CategoricalDistribution):
            return d.choices[int(x)]
        step = getattr(d, "step", None)
        if step is not None and not (isinstance(d, IntDistribution) and d.log):
            x = d.low + int(x) * step
        if isinstance(d, IntDistribution):
            return int(min(max(int(x), d.low), d.high))
        # Python float, inside the range even after log/step rounding.
        return float(min(max(float(x), d.low), d.high))


class SkoptSampler(BaseSampler):
    """Bayesian optimisation with scikit-optimize's ``Optimizer`` as an Optuna sampler.

    Parameters in the intersection search space of the study's COMPLETE trials are
    sampled jointly by skopt; any other parameter goes to ``independent_sampler``.
    The sampler keeps no model between calls: every proposal rebuilds an ``Optimizer``
    from the study's trials and a seed derived from ``(seed, trial.number)``, so any
    process that resumes a study proposes the same point for the same history and seed.

    What each trial state means to the model:

    * COMPLETE: told with its value (negated for ``maximize``; skopt minimises).
      Trials added with ``study.add_trial`` or run from ``study.enqueue_trial`` count
      like any other. Non-finite values are skipped.
    * PRUNED: skipped, because a partial-budget value is not comparable with full runs;
      with ``consider_pruned_trials=True`` the last intermediate value is told instead
      (trials that reported none are still skipped).
    * FAIL / WAITING: skipped.
    * RUNNING (other than the trial being sampled): with ``constant_liar=True``, told at
      a lie (the minimum, mean or maximum of the observed skopt values, as
      ``liar_strategy`` says) so that parallel workers are sent elsewhere. Their
      parameters come from ``trial.params``, the ``fixed_params`` of an enqueued trial,
      or the point this sampler proposed for them (stored as a system attribute).

    Until ``n_initial_points`` COMPLETE trials exist the whole trial is sampled by the
    independent sampler.

    Args:
        seed: Seed of skopt and of the default independent sampler.
        base_estimator: skopt surrogate: ``"GP"``, ``"RF"``, ``"ET"``, ``"GBRT"`` or a
            scikit-learn regressor.
        acq_func: skopt acquisition function (``"gp_hedge"``, ``"EI"``, ``"LCB"``,
            ``"PI"``, ...).
        n_initial_points: COMPLETE trials needed before skopt is used.
        independent_sampler: Sampler for parameters outside the relative search space;
            defaults to ``RandomSampler(seed=seed)``.
        constant_liar: Tell RUNNING trials to skopt at a lie value.
        liar_strategy: The lie: ``"cl_min"`` (best observed, skopt's default),
            ``"cl_mean"`` or ``"cl_max"`` (worst observed, pushes hardest away).
        consider_pruned_trials: Tell PRUNED trials at their last intermediate value.
        acq_optimizer: ``"auto"``, ``"lbfgs"`` or ``"sampling"``.
        acq_optimizer_kwargs: Overrides of ``n_points`` (2000), ``n_restarts_optimizer``
            (2) and ``n_jobs`` (1).
        skopt_kwargs: Further keyword arguments of ``skopt.Optimizer``.
    """

    def __init__(
        self,
        *,
        seed: int | None = None,
        base_estimator: str | Any = "GP",
        acq_func: str = "gp_hedge",
        n_initial_points: int = 1,
        independent_sampler: BaseSampler | None = None,
        constant_liar: bool = True,
        liar_strategy: LiarStrategy = "cl_min",
        consider_pruned_trials: bool = False,
        acq_optimizer: str = "auto",
        acq_optimizer_kwargs: Mapping[str, Any] | None = None,
        skopt_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        if n_initial_points < 1:
            raise ValueError(f"n_initial_points must be >= 1, got {n_initial_points}")
        if liar_strategy not in ("cl_min", "cl_mean", "cl_max"):
            raise ValueError(
                f"liar_strategy must be 'cl_min', 'cl_mean' or 'cl_max', got {liar_strategy!r}"
            )
        self._seed = int(seed) if seed is not None else int(np.random.randint(2**31 - 1))
        self._independent_sampler = independent_sampler or RandomSampler(seed=seed)
        self._n_initial_points = n_initial_points
        self._constant_liar = constant_liar
        self._liar_strategy = liar_strategy
        self._consider_pruned = consider_pruned_trials
        self._optimizer_kwargs = {
            "base_estimator": base_estimator,
            "acq_func": acq_func,
            "acq_optimizer": acq_optimizer,
            "acq_optimizer_kwargs": {
                **_DEFAULT_ACQ_OPTIMIZER_KWARGS,
                **(acq_optimizer_kwargs or {}),
            },
            **(skopt_kwargs or {}),
        }
        self._search_space = IntersectionSearchSpace(include_pruned=consider_pruned_trials)

    def reseed_rng(self) -> None:
        """Draw a fresh seed (Optuna calls this for threads that share the sampler)."""
        self._seed = int(np.random.randint(2**31 - 1))
        self._independent_sampler.reseed_rng()

    def infer_relative_search_space(
        self, study: Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        """Return the COMPLETE trials' intersection search space, minus fixed ranges.

        Args:
            study: The study being sampled.
            trial: The trial being sampled.

        Returns:
            Parameter name -> distribution for the parameters skopt samples jointly.
        """
        return {
            name: dist
            for name, dist in self._search_space.calculate(study).items()
            if not dist.single()
        }

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        """Propose values for ``search_space`` from a skopt model of the study's trials.

        Args:
            study: The study being sampled.
            trial: The trial being sampled.
            search_space: The space from :meth:`infer_relative_search_space`.

        Returns:
            Parameter name -> Python value (int, float or the categorical choice), or an
            empty dict while too few trials are COMPLETE.
        """
        self._raise_error_if_multi_objective(study)
        if not search_space:
            return {}
        fixed = trial.system_attrs.get("fixed_params", {})
        if search_space.keys() <= fixed.keys():
            return {}  # an enqueued trial: every value is given, nothing to model
        dims = {name: _Dim(dist) for name, dist in search_space.items()}
        xs, ys = self._observations(study, dims)
        if len(ys) < self._n_initial_points:
            return {}
        pending = self._pending_points(study, trial, dims) if self._constant_liar else []
        lie = _lie(ys, self._liar_strategy)
        optimizer = skopt.Optimizer(
            [dim.dimension() for dim in dims.values()],
            n_initial_points=0,  # the initial phase is ours (see n_initial_points)
            random_state=self._call_seed(trial),
            **self._optimizer_kwargs,
        )
        with warnings.catch_warnings():
            # skopt warns when its best point was already evaluated and it picks another;
            # routine in small discrete spaces, and nothing a user can act on.
            warnings.simplefilter("ignore", UserWarning)
            optimizer.tell(xs + pending, ys + [lie] * len(pending))
            x = optimizer.ask()
        params = {name: dim.from_skopt(v) for (name, dim), v in zip(dims.items(), x, strict=True)}
        self._share(study, trial, search_space, params)
        return params

    def sample_independent(
        self,
        study: Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        """Sample a parameter outside the relative search space with the independent sampler.

        Args:
            study: The study being sampled.
            trial: The trial being sampled.
            param_name: The parameter's name.
            param_distribution: The parameter's distribution.

        Returns:
            The independent sampler's value.
        """
        return self._independent_sampler.sample_independent(
            study, trial, param_name, param_distribution
        )

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        """Forward to the independent sampler.

        Args:
            study: The study.
            trial: The trial about to start.
        """
        self._independent_sampler.before_trial(study, trial)

    def after_trial(
        self,
        study: Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        """Forward to the independent sampler.

        Args:
            study: The study.
            trial: The finished trial.
            state: Its final state.
            values: Its values, when COMPLETE.
        """
        self._independent_sampler.after_trial(study, trial, state, values)

    def _call_seed(self, trial: FrozenTrial) -> int:
        # Mixing in the trial number gives every proposal fresh randomness (restarts,
        # candidate points) that is still a pure function of (seed, history).
        seq = np.random.SeedSequence([self._seed, trial.number])
        return int(seq.generate_state(1)[0] & 0x7FFFFFFF)

    def _observations(
        self, study: Study, dims: dict[str, _Dim]
    ) -> tuple[list[list[int | float]], list[float]]:
        states = (TrialState.COMPLETE, TrialState.PRUNED)
        sign = -1.0 if study.direction == optuna.study.StudyDirection.MAXIMIZE else 1.0
        xs: list[list[int | float]] = []
        ys: list[float] = []
        for t in study._get_trials(deepcopy=False, states=states, use_cache=False):
            value = self._observed_value(t)
            if value is None or not math.isfinite(value) or not dims.keys() <= t.params.keys():
                continue
            xs.append([dim.to_skopt(t.params[name]) for name, dim in dims.items()])
            ys.append(sign * value)
        return xs, ys

    def _observed_value(self, trial: FrozenTrial) -> float | None:
        if trial.state == TrialState.COMPLETE:
            return trial.value
        if self._consider_pruned and trial.intermediate_values:
            return trial.intermediate_values[max(trial.intermediate_values)]
        return None

    def _pending_points(
        self, study: Study, trial: FrozenTrial, dims: dict[str, _Dim]
    ) -> list[list[int | float]]:
        points = []
        for t in study._get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if t.number == trial.number:
                continue
            params = {**_shared_params(t, dims), **t.system_attrs.get("fixed_params", {})}
            params.update(t.params)
            if dims.keys() <= params.keys():
                points.append([dim.to_skopt(params[name]) for name, dim in dims.items()])
        return points

    def _share(
        self,
        study: Study,
        trial: FrozenTrial,
        search_space: dict[str, BaseDistribution],
        params: dict[str, Any],
    ) -> None:
        # Stored in internal representation (floats), so any categorical choice fits JSON.
        internal = {k: search_space[k].to_internal_repr(v) for k, v in params.items()}
        text = json.dumps(internal)
        for i in range(0, len(text), _SYSTEM_ATTR_MAX_LENGTH):
            study._storage.set_trial_system_attr(
                trial._trial_id,
                f"{_RELATIVE_PARAMS_KEY}:{i // _SYSTEM_ATTR_MAX_LENGTH}",
                text[i : i + _SYSTEM_ATTR_MAX_LENGTH],
            )


def _lie(ys: list[float], strategy: LiarStrategy) -> float:
    """The value RUNNING trials are told at, in skopt's (minimising) terms."""
    if strategy == "cl_min":
        return min(ys)
    if strategy == "cl_max":
        return max(ys)
    return sum(ys) / len(ys)


def _shared_params(trial: FrozenTrial, dims: dict[str, _Dim]) -> dict[str, Any]:
    """The params another process's SkoptSampler proposed for a RUNNING trial."""
    chunks = []
    while chunk := trial.system_attrs.get(f"{_RELATIVE_PARAMS_KEY}:{len(chunks)}"):
        chunks.append(chunk)
    if not chunks:
        return {}
    internal = json.loads("".join(chunks))
    return {
        name: dims[name].dist.to_external_repr(value)
        for name, value in internal.items()
        if name in dims
    }


__all__ = ["SkoptSampler"]
