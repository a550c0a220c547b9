"""A stage: one "layer" of the layer-wise search."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from optuna.distributions import BaseDistribution, CategoricalDistribution

from hpo.engine.errors import SpecError
from hpo.engine.samplers import SamplerSpec

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]*$")


@dataclass(frozen=True)
class Stage:
    """One stage of a layer-wise search: a search space tuned while the others are fixed.

    Args:
        name: Stage name; part of the stage study's name, so letters, digits, ``_`` and ``-``.
        space: Parameter name -> Optuna distribution.
        defaults: A value for every parameter of ``space``, used until the stage is tuned
            (and measured first when this is the first stage).
        n_random: Random-search trials (trial numbers below this; the incumbent counts).
        n_bayes: Bayesian-optimization trials after the random phase.
        sampler: Sampler of the Bayesian phase; ``None`` uses the search's sampler.
        max_fail: Failed trials after which the stage stops with an error; ``None`` lets
            the engine choose.
    """

    name: str
    space: Mapping[str, BaseDistribution]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    n_random: int = 8
    n_bayes: int = 16
    sampler: SamplerSpec | None = None
    max_fail: int | None = None

    def __post_init__(self) -> None:
        where = f"stages.{self.name}"
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise SpecError(
                f"invalid stage name {self.name!r}",
                key="stages.name",
                hint="start with a letter; use letters, digits, '_' or '-'",
            )
        if not self.space:
            raise SpecError("stage has no parameters", key=where, hint="add at least one")
        for pname, dist in self.space.items():
            if not isinstance(dist, BaseDistribution):
                raise SpecError(
                    f"parameter {pname!r} is a {type(dist).__name__}, not a distribution",
                    key=f"{where}.{pname}",
                    hint="use optuna.distributions.FloatDistribution / IntDistribution / "
                    "CategoricalDistribution",
                )
            if pname not in self.defaults:
                raise SpecError(
                    f"parameter {pname!r} has no default",
                    key=f"{where}.{pname}.default",
                    hint="every parameter needs a default, used until its stage is tuned",
                )
            if not _contains(dist, self.defaults[pname]):
                raise SpecError(
                    f"default {self.defaults[pname]!r} of {pname!r} is outside {dist}",
                    key=f"{where}.{pname}.default",
                    hint="choose a default inside the parameter's range or choices",
                )
        extra = set(self.defaults) - set(self.space)
        if extra:
            raise SpecError(
                f"defaults for unknown parameters {sorted(extra)}",
                key=f"{where}.defaults",
                hint="every default must name a parameter of the stage's space",
            )
        if self.n_random < 1 or self.n_bayes < 0:
            raise SpecError(
                f"budget n_random={self.n_random}, n_bayes={self.n_bayes}",
                key=f"{where}.n_random",
                hint="n_random >= 1 (the first trial is the incumbent) and n_bayes >= 0",
            )
        if self.max_fail is not None and self.max_fail < 1:
            raise SpecError(
                f"max_fail={self.max_fail}", key=f"{where}.max_fail", hint="use >= 1 or None"
            )

    @property
    def budget(self) -> int:
        """COMPLETE trials the stage needs: random plus Bayesian."""
        return self.n_random + self.n_bayes


REFINE = "refine"
"""The name of the refine stage (no user stage may take it)."""


@dataclass(frozen=True)
class Refine:
    """The optional last stage: every parameter jointly, near the incumbent.

    Ranges shrink to ``± width`` of each range around the incumbent, in the parameter's
    own scale (log for log parameters); integers keep at least ``min_int_steps`` steps on
    each side; categoricals keep the choices seen in their stage's ``top_k`` best trials.

    Args:
        n_bayes: Bayesian trials.
        n_random: Trials numbered below this are the incumbent and random search.
        sampler: Sampler; ``None`` uses the search's.
        width: Half-width of the narrowed ranges, as a fraction of the full range.
        min_int_steps: Least half-width of an integer range, in steps.
        top_k: Best trials per stage whose categorical choices are kept.
        max_fail: Failed trials after which the stage stops.
    """

    n_bayes: int = 16
    n_random: int = 1
    sampler: SamplerSpec | None = None
    width: float = 0.25
    min_int_steps: int = 2
    top_k: int = 5
    max_fail: int | None = None

    def __post_init__(self) -> None:
        if self.n_bayes < 1 or self.n_random < 1:
            raise SpecError(
                f"refine budget n_random={self.n_random}, n_bayes={self.n_bayes}",
                key="refine",
                hint="n_random >= 1 (the incumbent) and n_bayes >= 1",
            )
        if not 0 < self.width <= 0.5:
            raise SpecError(
                f"refine width {self.width}", key="refine.width", hint="use 0 < width <= 0.5"
            )
        if self.top_k < 1 or self.min_int_steps < 0:
            raise SpecError(
                f"refine top_k={self.top_k}, min_int_steps={self.min_int_steps}",
                key="refine.top_k",
                hint="top_k >= 1 and min_int_steps >= 0",
            )

    @classmethod
    def coerce(cls, value: Refine | int | Mapping[str, Any] | None) -> Refine | None:
        """``None``, a Bayesian budget, a dict of fields, or a ``Refine``, as a ``Refine``."""
        if value is None or isinstance(value, Refine):
            return value
        if isinstance(value, bool):
            raise SpecError("refine must be a number of trials or a table", key="refine")
        if isinstance(value, int):
            return cls(n_bayes=value)
        if isinstance(value, Mapping):
            return cls(**value)
        raise SpecError(
            f"refine is a {type(value).__name__}",
            key="refine",
            hint="give the number of refine trials, or a table of Refine fields",
        )


def _contains(dist: BaseDistribution, value: Any) -> bool:
    if isinstance(dist, CategoricalDistribution):
        return value in dist.choices
    try:
        return bool(dist._contains(dist.to_internal_repr(value)))
    except (TypeError, ValueError):
        return False


__all__ = ["REFINE", "Refine", "Stage"]
