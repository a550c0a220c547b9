"""Bayesian-optimization back-ends for the Bayesian phase of a stage."""

from __future__ import annotations

from collections.abc import Callable

import optuna

from hpo.engine.errors import SpecError
from hpo.engine.samplers.shared import SharedGPSampler

SamplerSpec = str | Callable[[int], optuna.samplers.BaseSampler]
"""A sampler name (``random``, ``tpe``, ``gp``, ``skopt``) or a callable ``seed -> sampler``."""

SAMPLER_NAMES = ("random", "tpe", "gp", "skopt")


def make_sampler(spec: SamplerSpec, seed: int) -> optuna.samplers.BaseSampler:
    """Build the sampler of a stage's Bayesian phase.

    The layer-wise engine runs the random phase itself, so the model-based samplers
    start modelling from the first trial they are asked for.

    Args:
        spec: A sampler name or a callable that takes a seed and returns a sampler.
        seed: The stage's seed.

    Returns:
        A seeded Optuna sampler.

    Raises:
        SpecError: The name is not a known sampler.
    """
    if callable(spec):
        sampler = spec(seed)
        if not isinstance(sampler, optuna.samplers.BaseSampler):
            raise SpecError(
                f"sampler factory returned {type(sampler).__name__}, not an optuna sampler",
                key="sampler",
                hint="a sampler callable takes a seed and returns an optuna.samplers.BaseSampler",
            )
        return sampler
    if spec == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if spec == "tpe":
        return optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=0, multivariate=True, constant_liar=True
        )
    if spec == "gp":
        # Every training run is noisy (seed-to-seed F1 sd 0.05-0.1 on the quickstart): a
        # GP that interpolates its points chases lucky ones.
        return optuna.samplers.GPSampler(
            seed=seed, n_startup_trials=0, warn_independent_sampling=False,
            deterministic_objective=False,
        )
    if spec == "skopt":
        # Here, not at the top: scikit-optimize imports scikit-learn (about a second).
        from hpo.engine.samplers.skopt import SkoptSampler

        return SkoptSampler(seed=seed)
    raise SpecError(
        f"unknown sampler {spec!r}",
        key="sampler",
        hint=f"use one of {', '.join(SAMPLER_NAMES)}, or a callable seed -> BaseSampler",
    )


__all__ = ["SAMPLER_NAMES", "SamplerSpec", "SharedGPSampler", "make_sampler"]
