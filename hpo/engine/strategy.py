"""How a layer-wise search models its stages: the paper's stage-wise way or one shared model.

``stagewise`` (the paper): each stage's Bayesian sampler sees only that stage study's
trials, with every other stage pinned.

``shared`` (block-coordinate Bayesian optimization): a stage whose Bayesian sampler is
the default GP gets a :class:`~hpo.engine.samplers.shared.SharedGPSampler` instead, one GP over
the full parameter vector of every trial of the search so far (read from the earlier
stage studies in the storage, each trial completed with its study's ``hpo:fixed``
values), its acquisition moving only the stage's parameters. Stages that name another
sampler (``tpe``, ``skopt``, ``random``, a callable) keep it. The refine stage and later
passes (``cycles``) therefore start warm, and the model is joint.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import TrialState

from hpo.engine.errors import SpecError
from hpo.engine.ledger import COPIED_ATTR
from hpo.engine.samplers import SamplerSpec, make_sampler
from hpo.engine.samplers.shared import SharedGPSampler

STAGEWISE = "stagewise"
SHARED = "shared"
STRATEGIES = (STAGEWISE, SHARED)
DEFAULT_STRATEGY = SHARED
"""The engine's default, chosen by ``benchmarks/experiments/layerwise.py`` (docs/results.md,
section 5)."""

FIXED_ATTR = "hpo:fixed"  # the same key as hpo.engine.search.FIXED_ATTR (no import cycle)


def check_strategy(strategy: Any, key: str = "strategy") -> str:
    """The strategy name, or a named error.

    Raises:
        SpecError: Not one of :data:`STRATEGIES`.
    """
    if strategy not in STRATEGIES:
        raise SpecError(
            f"strategy = {strategy!r}",
            key=key,
            hint=f"use one of {', '.join(STRATEGIES)} ('stagewise' is the paper's method)",
        )
    return str(strategy)


def uses_shared_model(strategy: str, sampler: SamplerSpec) -> bool:
    """Whether a stage with this (effective) Bayesian sampler gets the shared model."""
    return strategy == SHARED and sampler == "gp"


def stage_history(studies: Sequence[optuna.Study]) -> list[tuple[dict[str, Any], float]]:
    """``(full params, value)`` of every COMPLETE trial of earlier stage studies.

    A trial's full parameters are its own plus its study's ``hpo:fixed`` (the other
    stages' values while it ran). Copied incumbents are skipped: they repeat a trial of
    the study they were copied from.
    """
    out = []
    for study in studies:
        fixed = study.user_attrs.get(FIXED_ATTR) or {}
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if t.user_attrs.get(COPIED_ATTR) or t.value is None:
                continue
            out.append(({**fixed, **t.params}, float(t.value)))
    return out


def bayes_sampler(
    strategy: str,
    sampler: SamplerSpec,
    seed: int,
    *,
    space: Mapping[str, BaseDistribution],
    active: Mapping[str, BaseDistribution],
    fixed: Mapping[str, Any],
    earlier: Callable[[], Sequence[optuna.Study]],
) -> optuna.samplers.BaseSampler:
    """The Bayesian-phase sampler of one stage.

    Args:
        strategy: ``stagewise`` or ``shared``.
        sampler: The stage's effective sampler spec (its own or the search's).
        seed: The stage's seed.
        space: Every parameter of the search, with its declared distribution.
        active: The stage's parameters (the refine stage's narrowed ranges).
        fixed: Values of the parameters outside ``active``.
        earlier: Returns the stage studies run before this one (read lazily, at the
            first Bayesian proposal, from the storage).

    Returns:
        An Optuna sampler.
    """
    if not uses_shared_model(strategy, sampler):
        return make_sampler(sampler, seed)
    full_fixed = {k: v for k, v in fixed.items() if k in space and k not in active}
    return SharedGPSampler(
        space=space,
        active=active,
        fixed=full_fixed,
        history=lambda: stage_history(earlier()),
        seed=seed,
    )


__all__ = [
    "DEFAULT_STRATEGY",
    "SHARED",
    "STAGEWISE",
    "STRATEGIES",
    "bayes_sampler",
    "check_strategy",
    "stage_history",
    "uses_shared_model",
]
