"""A tuned parameter in its three forms: the study file's table, Optuna's, the network's.

:data:`ParamSpec` is a parameter's study-file table (:class:`FloatParam`,
:class:`IntParam`, :class:`CategoricalParam`, by its ``type``);
:meth:`FloatParam.distribution` and :func:`optuna_value` are its Optuna distribution and
value, where a choice of sizes such as ``dbn.hidden = [32, 16]`` is the string ``"32,16"``
(:func:`networks.config.sizes_text`); :func:`check_with_network` holds its values to the
network's config object (:class:`networks.config.ModelConfig`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, ClassVar, Literal

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from pydantic import AfterValidator, Field, StrictBool, model_validator
from pydantic.dataclasses import dataclass
from pydantic_core import PydanticCustomError

from hpo.study.fields import STUDY_CONFIG, Float, Int, fail, fits_64_bits

PARAM_TYPES = ("float", "int", "categorical")

# `networks` is imported where it is used: the package imports torch (seconds), which
# `import hpo` (the engine's users, `hpo status`) must not pay for.


def _choice(value: Any) -> Any:
    """A categorical choice: a plain value, or a sequence of integers (sizes) as a tuple."""
    if isinstance(value, list | tuple) and value and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        return tuple(fits_64_bits(v) for v in value)
    if isinstance(value, float) and not math.isfinite(value):
        raise fail(f"choice {value} is not a finite number", "use a finite number")
    if isinstance(value, int) and not isinstance(value, bool):
        return fits_64_bits(value)
    if not isinstance(value, str | int | float | bool):
        from networks.errors import kind_of

        raise fail(
            f"expected a string, a number, true or false, or an array of integers, got "
            f"{kind_of(value)} {value!r}",
            'write each choice as a plain value, or sizes as an array (e.g. [32, 16])',
        )
    return value


Choice = Annotated[Any, AfterValidator(_choice)]
"""A categorical choice as a spec holds it (sizes as a tuple of integers)."""


def optuna_value(value: Any) -> Any:
    """A study-file value as Optuna holds it: sizes as ``"32,16"``, the rest as they are."""
    from networks.config import sizes_text

    return sizes_text(value) if isinstance(value, list | tuple) else value


def written(value: Any) -> Any:
    """A spec value as a study file writes it: tuples (sizes) as arrays."""
    return list(value) if isinstance(value, tuple) else value


def _on_grid(span: float, step: float) -> bool:
    k = span / step
    return math.isclose(k, round(k), rel_tol=0, abs_tol=1e-8)


@dataclass(frozen=True, config=STUDY_CONFIG)
class _Param:
    """What every tuned parameter has: a default, and a table in the study file."""

    @model_validator(mode="before")
    @classmethod
    def _has_default(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "default" not in data:
            raise fail(
                "the parameter has no default",
                "every parameter needs a default, used until its stage is tuned",
                ("default",),
            )
        return data

    def to_dict(self) -> dict[str, Any]:
        """The parameter as its study-file table (unset optional keys left out)."""
        data = {"type": self.type}  # type: ignore[attr-defined]
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "choices":
                data["choices"] = [written(c) for c in value]
            elif value is not None and not (f.name == "log" and value is False):
                data[f.name] = written(value)
        return data


@dataclass(frozen=True, config=STUDY_CONFIG)
class _RangeParam(_Param):
    """The checks of a numeric range, shared by float and int parameters."""

    @model_validator(mode="after")
    def _check_range(self) -> _RangeParam:
        low, high, step, default = self.low, self.high, self.step, self.default  # type: ignore[attr-defined]
        if low > high:
            raise fail(f"low = {low} > high = {high}", "swap low and high", ("low",))
        if not math.isfinite(high - low):
            raise fail(
                f"the range [{low}, {high}] is too wide to sample",
                "narrow it, or use log = true with low > 0",
                ("high",),
            )
        if self.log and low <= 0:  # type: ignore[attr-defined]
            raise fail(
                f"log scale needs low > 0, got {low}", "raise low above 0 or remove log = true",
                ("low",),
            )
        if step is not None:
            self._check_step(low, high, step)
        on_grid = step is None or _on_grid(default - low, step)
        if not (low <= default <= high and on_grid):
            raise fail(
                f"default {default} is outside [{low}, {high}]"
                if on_grid
                else f"default {default} is not on the step grid low + k * {step}",
                "choose a default inside the range (and on the step grid)",
                ("default",),
            )
        return self

    def _check_step(self, low: float, high: float, step: float) -> None:
        if step <= 0:
            raise fail(f"step = {step}", "use a step > 0", ("step",))
        if step > high - low and low != high:
            raise fail(
                f"step = {step} is larger than the range [{low}, {high}]",
                "use a step that divides high - low",
                ("step",),
            )
        if self.log:  # type: ignore[attr-defined]
            raise fail("step and log cannot be combined", "remove step or log = true",
                       ("step",))
        if not _on_grid(high - low, step):
            raise fail(
                f"high - low = {high - low} is not a multiple of step = {step}",
                f"set high to low + a multiple of {step}",
                ("high",),
            )


@dataclass(frozen=True, config=STUDY_CONFIG)
class FloatParam(_RangeParam):
    """A float parameter: ``{ type = "float", low, high, log, step, default }``.

    ``default`` is its value until its stage is tuned; ``high`` is inclusive; ``log``
    samples on a log scale; ``step`` discretises the range (not with ``log``).
    """

    default: Float
    low: Float
    high: Float
    type: Literal["float"] = "float"
    log: StrictBool = False
    step: Float | None = None
    choices: ClassVar[None] = None

    def distribution(self) -> BaseDistribution:
        """The parameter as an Optuna distribution."""
        return FloatDistribution(self.low, self.high, log=self.log, step=self.step)


@dataclass(frozen=True, config=STUDY_CONFIG)
class IntParam(_RangeParam):
    """An integer parameter: ``{ type = "int", low, high, log, step, default }``."""

    default: Int
    low: Int
    high: Int
    type: Literal["int"] = "int"
    log: StrictBool = False
    step: Int | None = None
    choices: ClassVar[None] = None

    def distribution(self) -> BaseDistribution:
        """The parameter as an Optuna distribution."""
        return IntDistribution(self.low, self.high, log=self.log, step=self.step or 1)


@dataclass(frozen=True, config=STUDY_CONFIG)
class CategoricalParam(_Param):
    """A categorical parameter: ``{ type = "categorical", choices, default }``.

    Attributes:
        choices: Its values: strings, numbers, booleans, or arrays of integers (sizes,
            such as ``dbn.hidden``), held as tuples.
        default: Its value until its stage is tuned, one of the choices.
        type: ``"categorical"``.
    """

    choices: tuple[Choice, ...]
    default: Choice
    type: Literal["categorical"] = "categorical"
    low: ClassVar[None] = None
    high: ClassVar[None] = None
    log: ClassVar[bool] = False
    step: ClassVar[None] = None

    @model_validator(mode="after")
    def _check_choices(self) -> CategoricalParam:
        choices = [written(c) for c in self.choices]
        if not choices:
            raise fail("empty choices", "list at least one choice", ("choices",))
        if len({(type(c), optuna_value(c)) for c in choices}) != len(choices):
            raise fail(f"choices repeat: {choices}", "list each choice once", ("choices",))
        if not any(type(self.default) is type(c) and self.default == c for c in self.choices):
            raise fail(
                f"default {written(self.default)!r} is not one of the choices {choices}",
                'use one of the choices (same type: 32 and "32" differ)',
                ("default",),
            )
        return self

    def distribution(self) -> BaseDistribution:
        """The parameter as an Optuna distribution (sizes as ``"32,16"``)."""
        return CategoricalDistribution([optuna_value(c) for c in self.choices])


ParamSpec = Annotated[FloatParam | IntParam | CategoricalParam, Field(discriminator="type")]
"""One tuned parameter of a stage: its study-file table, by its ``type``."""


def sizes_as_lists(name: str, entry: Any) -> Any:
    """A choice of sizes written as strings (``"32,16"``, older study files) as lists."""
    from networks.config import ModelConfig, parse_sizes

    sizes = name in ModelConfig.sequence_params()
    if not (sizes and isinstance(entry, Mapping) and entry.get("type") == "categorical"):
        return entry
    entry = dict(entry)
    for key in ("choices", "default"):
        values = entry.get(key)
        try:
            if isinstance(values, str):
                entry[key] = parse_sizes(values)
            elif key == "choices" and isinstance(values, list):
                entry[key] = [parse_sizes(v) if isinstance(v, str) else v for v in values]
        except PydanticCustomError as exc:
            raise fail(exc.message(), (exc.context or {}).get("hint"), (name, key)) from exc
    return entry


def check_with_network(tuned: Sequence[Mapping[str, ParamSpec]], fixed: Mapping[str, Any]) -> None:
    """Check parameter names and values against the network's config (every model has one).

    Args:
        tuned: Each stage's parameters, in stage order (keys name ``stages[i]``).
        fixed: The ``[model.fixed]`` values.

    Raises:
        PydanticCustomError: A name the network does not know (naming the nearest), or a
            default, fixed value, choice or range end the network rejects.
    """
    from networks.config import ModelConfig
    from networks.errors import ConfigError, unknown_key

    valid = ModelConfig.param_names()
    names = [(("stages", i, "params", p), "a parameter of the fusion network")
             for i, params in enumerate(tuned) for p in params]
    names += [(("model", "fixed", p), "a network parameter") for p in fixed]
    for key, what in names:
        if key[-1] not in valid:
            _, hint = unknown_key(key[-1], "", valid)
            raise fail(f"{key[-1]!r} is not {what}",
                       hint if hint.startswith("did") else "see ModelConfig.param_names()", key)
    defaults = {p: ps.default for params in tuned for p, ps in params.items()}
    try:
        ModelConfig.from_params({**fixed, **defaults})
    except ConfigError as exc:
        stage = next((i for i, params in enumerate(tuned) if exc.key in params), None)
        key = (
            ("stages", stage, "params", exc.key, "default")
            if stage is not None
            else ("model", "fixed", exc.key)
        )
        raise fail(f"the network rejects it: {exc}", exc.hint or "fix the value",
                   key) from exc
    # Every value a trial can draw, not only the defaults: a bad choice or bound would
    # otherwise surface as failed trials mid-search. Ranges are checked at their ends (the
    # network's own checks are per field and monotone: a lower bound, an upper bound).
    base = ModelConfig.from_params(dict(fixed))
    for i, params in enumerate(tuned):
        for pname, p in params.items():
            values = (
                [("choices", c) for c in p.choices]
                if p.type == "categorical"
                else [("low", p.low), ("high", p.high)]
            )
            for field_name, value in values:
                try:
                    ModelConfig.from_params({pname: value}, base)
                except ConfigError as exc:
                    shown = (f"{written(value)!r}" if field_name == "choices"
                             else f"{field_name} = {value}")
                    raise fail(
                        f"{shown}: the network rejects it ({exc})",
                        exc.hint
                        or (
                            "remove that choice"
                            if field_name == "choices"
                            else "narrow the range to values the network accepts"
                        ),
                        ("stages", i, "params", pname, field_name),
                    ) from exc


__all__ = [
    "PARAM_TYPES",
    "CategoricalParam",
    "Choice",
    "FloatParam",
    "IntParam",
    "ParamSpec",
    "check_with_network",
    "optuna_value",
    "sizes_as_lists",
    "written",
]
