"""Study files (``studies/*.toml``) and exported configurations as one typed (pydantic) schema.

The spec classes below are frozen pydantic dataclasses: their fields' types, bounds and
literals validate a study file, ``extra="forbid"`` refuses a key they do not know, and the
``[data]`` section is checked against :class:`data.section.DataSection`. Every mistake a
user can make raises a :class:`~hpo.engine.errors.SpecError` that names the file, the dotted
key and a hint; an unknown key names the nearest valid one (one reading of pydantic's
errors: :func:`networks.errors.explain`). :class:`ExportDoc` is the exported best
configuration (``hpo export``), its ``data`` the same section.

A parameter exists in three forms: its study-file entry (:data:`ParamSpec`), its Optuna
distribution and value (:meth:`FloatParam.distribution`; a choice of sizes such as
``dbn.hidden = [32, 16]`` is the string ``"32,16"`` there, :func:`networks.config.sizes_text`)
and the network's config object (:class:`networks.config.ModelConfig`).

A study file is data only (TOML: no includes, no code). The files it makes the toolkit
write (the storage file, the artifact folder, the cube cache) must stay inside the study
file's folder or the working folder; see :data:`OUTPUT_KEYS`. A path given on the command
line (``--storage``, ``-o``) is the user's own choice and may point anywhere.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import tomllib
from collections.abc import Collection, Mapping
from dataclasses import asdict, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.dataclasses import dataclass
from pydantic_core import ArgsKwargs, PydanticCustomError, core_schema

from data.section import DataSection
from hpo.engine.errors import ExportError, SpecError
from hpo.engine.runners.local import default_workers
from hpo.engine.samplers import SAMPLER_NAMES
from hpo.engine.space import fingerprint as _hash
from hpo.engine.stage import Stage
from hpo.engine.strategy import STRATEGIES

METRICS = ("f1", "miou", "auc", "f1_best", "miou_best")
MODELS = ("fusion", "segnet", "deeplabv3", "pspnet", "unet", "hgb")
RUNNERS = ("local", "ray")
PARAM_TYPES = ("float", "int", "categorical")
MAX_CYCLES = 100
"""Most passes over the stages a study may ask for (more is surely a typo)."""
ALLOW_OUTSIDE_ENV = "HPO_ALLOW_OUTSIDE"
"""Environment variable: folders (``os.pathsep``-separated) a study file may also write into."""
OUTPUT_KEYS = ("storage", "artifacts", "data.cache_dir")
"""Study-file keys naming where the toolkit writes; each must stay inside the study's folder
or the working folder (``data.cache_dir`` may also use the study folder's parent, where the
shipped studies share ``../.cache/cubes``)."""
EXPORT_FORMAT = "landslide-hpo/best-config/1"
"""The ``format`` of an exported best configuration."""

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]*$")
# TOML integers are 64-bit; Python's parser reads longer ones, which overflow numpy and torch.
_INT_RANGE = (-(2**63), 2**63 - 1)
_TOML_ONLY = {".yaml": "YAML", ".yml": "YAML", ".json": "JSON"}
# Keys that never change what a search explores, so editing them keeps its fingerprint.
_NOT_FINGERPRINTED = ("storage", "artifacts", "runner", "description", "compare")
_FILE = ConfigDict(extra="forbid", allow_inf_nan=False)
Loc = tuple[str | int, ...]

# `networks` is imported where it is used: the package imports torch (seconds), which
# `import hpo` (the engine's users, `hpo status`) must not pay for.


def _fail(message: str, hint: str, key: Loc = ()) -> PydanticCustomError:
    """The error a validator raises for a rule of the study file.

    Args:
        message: What is wrong.
        hint: How to fix it.
        key: Where, below the validated value (``("low",)`` from a parameter's validator).

    Returns:
        The error, read back by :func:`networks.errors.explain` (``hint`` and ``key`` in
        its context, as ``networks.errors.invalid`` gives them).
    """
    return PydanticCustomError("invalid", "{message}", {"message": message, "hint": hint,
                                                         "key": tuple(key)})


class Checked:
    """``Annotated`` marker: validate a value as ``model`` but keep it as written.

    The ``[data]`` and ``[compare]`` tables are checked against their models when a study
    file or an export is validated (with a validation context), while the spec keeps the
    table itself: its fingerprint and the code that reads it see the file's own keys and
    values. A spec rebuilt from another (``dataclasses.replace``: a comparison's variant
    and split) keeps its tables unchecked, as the data package checks what it reads.

    Args:
        model: The pydantic model or dataclass the value must satisfy.
    """

    def __init__(self, model: type) -> None:
        self.model = model

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> Any:
        def keep(value: Any, validate: Any, info: ValidationInfo) -> Any:
            if info.context is not None:
                validate(value)
            return dict(value) if isinstance(value, Mapping) else value

        return core_schema.with_info_wrap_validator_function(
            keep, handler.generate_schema(self.model)
        )


def _fits_64_bits(value: int) -> int:
    if not _INT_RANGE[0] <= value <= _INT_RANGE[1]:
        raise _fail(
            f"{value} does not fit in 64 bits",
            f"use an integer from {_INT_RANGE[0]} to {_INT_RANGE[1]}",
        )
    return value


def _named(what: str) -> AfterValidator:
    def check(value: str) -> str:
        if not _NAME.match(value):
            raise _fail(
                f"invalid {what} name {value!r}",
                "start with a letter; use letters, digits, '_' or '-'",
            )
        return value

    return AfterValidator(check)


def _choice(value: Any) -> Any:
    """A categorical choice: a plain value, or a sequence of integers (sizes) as a tuple."""
    if isinstance(value, list | tuple) and value and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        return tuple(_fits_64_bits(v) for v in value)
    if isinstance(value, float) and not math.isfinite(value):
        raise _fail(f"choice {value} is not a finite number", "use a finite number")
    if isinstance(value, int) and not isinstance(value, bool):
        return _fits_64_bits(value)
    if not isinstance(value, str | int | float | bool):
        from networks.errors import kind_of

        raise _fail(
            f"expected a string, a number, true or false, or an array of integers, got "
            f"{kind_of(value)} {value!r}",
            'write each choice as a plain value, or sizes as an array (e.g. [32, 16])',
        )
    return value


Int = Annotated[StrictInt, AfterValidator(_fits_64_bits)]
Float = StrictFloat  # strict: no strings; integers become floats (`low = 0` is 0.0)
Choice = Annotated[Any, AfterValidator(_choice)]


def _optuna_value(value: Any) -> Any:
    """A study-file value as Optuna holds it: sizes as ``"32,16"``, the rest as they are."""
    from networks.config import sizes_text

    return sizes_text(value) if isinstance(value, list | tuple) else value


def _written(value: Any) -> Any:
    """A spec value as a study file writes it: tuples (sizes) as arrays."""
    return list(value) if isinstance(value, tuple) else value


def _on_grid(span: float, step: float) -> bool:
    k = span / step
    return math.isclose(k, round(k), rel_tol=0, abs_tol=1e-8)


@dataclass(frozen=True, config=_FILE)
class _Param:
    """What every tuned parameter has: a default, and a table in the study file."""

    @model_validator(mode="before")
    @classmethod
    def _has_default(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "default" not in data:
            raise _fail(
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
                data["choices"] = [_written(c) for c in value]
            elif value is not None and not (f.name == "log" and value is False):
                data[f.name] = _written(value)
        return data


@dataclass(frozen=True, config=_FILE)
class _RangeParam(_Param):
    """The checks of a numeric range, shared by float and int parameters."""

    @model_validator(mode="after")
    def _check_range(self) -> _RangeParam:
        low, high, step, default = self.low, self.high, self.step, self.default  # type: ignore[attr-defined]
        if low > high:
            raise _fail(f"low = {low} > high = {high}", "swap low and high", ("low",))
        if not math.isfinite(high - low):
            raise _fail(
                f"the range [{low}, {high}] is too wide to sample",
                "narrow it, or use log = true with low > 0",
                ("high",),
            )
        if self.log and low <= 0:  # type: ignore[attr-defined]
            raise _fail(
                f"log scale needs low > 0, got {low}", "raise low above 0 or remove log = true",
                ("low",),
            )
        if step is not None:
            self._check_step(low, high, step)
        on_grid = step is None or _on_grid(default - low, step)
        if not (low <= default <= high and on_grid):
            raise _fail(
                f"default {default} is outside [{low}, {high}]"
                if on_grid
                else f"default {default} is not on the step grid low + k * {step}",
                "choose a default inside the range (and on the step grid)",
                ("default",),
            )
        return self

    def _check_step(self, low: float, high: float, step: float) -> None:
        if step <= 0:
            raise _fail(f"step = {step}", "use a step > 0", ("step",))
        if step > high - low and low != high:
            raise _fail(
                f"step = {step} is larger than the range [{low}, {high}]",
                "use a step that divides high - low",
                ("step",),
            )
        if self.log:  # type: ignore[attr-defined]
            raise _fail("step and log cannot be combined", "remove step or log = true",
                        ("step",))
        if not _on_grid(high - low, step):
            raise _fail(
                f"high - low = {high - low} is not a multiple of step = {step}",
                f"set high to low + a multiple of {step}",
                ("high",),
            )


@dataclass(frozen=True, config=_FILE)
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


@dataclass(frozen=True, config=_FILE)
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


@dataclass(frozen=True, config=_FILE)
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
        choices = [_written(c) for c in self.choices]
        if not choices:
            raise _fail("empty choices", "list at least one choice", ("choices",))
        if len({(type(c), _optuna_value(c)) for c in choices}) != len(choices):
            raise _fail(f"choices repeat: {choices}", "list each choice once", ("choices",))
        if not any(type(self.default) is type(c) and self.default == c for c in self.choices):
            raise _fail(
                f"default {_written(self.default)!r} is not one of the choices {choices}",
                'use one of the choices (same type: 32 and "32" differ)',
                ("default",),
            )
        return self

    def distribution(self) -> BaseDistribution:
        """The parameter as an Optuna distribution (sizes as ``"32,16"``)."""
        return CategoricalDistribution([_optuna_value(c) for c in self.choices])


ParamSpec = Annotated[FloatParam | IntParam | CategoricalParam, Field(discriminator="type")]
"""One tuned parameter of a stage: its study-file table, by its ``type``."""


def _sizes_as_lists(name: str, entry: Any) -> Any:
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
            raise _fail(exc.message(), (exc.context or {}).get("hint"), (name, key)) from exc
    return entry


@dataclass(frozen=True, config=_FILE)
class StageSpec:
    """One ``[[stages]]`` table.

    Attributes:
        name: Stage name.
        params: Parameter name -> its spec, in file order.
        n_random: Random-search trials (the incumbent counts).
        n_bayes: Bayesian-optimisation trials after them.
        sampler: This stage's Bayesian sampler; ``None`` uses the study's.
        max_fail: Failed trials after which the stage stops; ``None``: the engine decides.
    """

    name: Annotated[StrictStr, _named("stage")]
    params: Mapping[str, ParamSpec]
    n_random: Annotated[Int, Field(ge=1)] = 8
    n_bayes: Annotated[Int, Field(ge=0)] = 16
    sampler: Literal[SAMPLER_NAMES] | None = None  # type: ignore[valid-type]
    max_fail: Annotated[Int, Field(ge=1)] | None = None

    @field_validator("params", mode="before")
    @classmethod
    def _some_params(cls, value: Any) -> Any:
        if not isinstance(value, Mapping) or not value:
            raise _fail(
                "stage has no parameters",
                'add e.g. [stages.params."optim.lr"] with type, low, high, default',
            )
        return {name: _sizes_as_lists(str(name), entry) for name, entry in value.items()}

    def to_stage(self) -> Stage:
        """The stage as the engine's :class:`~hpo.engine.stage.Stage`."""
        return Stage(
            self.name,
            {name: p.distribution() for name, p in self.params.items()},
            defaults={name: _optuna_value(p.default) for name, p in self.params.items()},
            n_random=self.n_random,
            n_bayes=self.n_bayes,
            sampler=self.sampler,
            max_fail=self.max_fail,
        )

    def to_dict(self) -> dict[str, Any]:
        """The stage as its study-file table."""
        data: dict[str, Any] = {
            "name": self.name,
            "n_random": self.n_random,
            "n_bayes": self.n_bayes,
        }
        if self.sampler is not None:
            data["sampler"] = self.sampler
        if self.max_fail is not None:
            data["max_fail"] = self.max_fail
        data["params"] = {name: p.to_dict() for name, p in self.params.items()}
        return data


@dataclass(frozen=True, config=_FILE)
class AshaSpec:
    """ASHA early stopping of the ray runner.

    Attributes:
        grace: Epochs every trial runs before it may be stopped.
        reduction_factor: Share of trials kept at each rung is ``1 / reduction_factor``.
    """

    grace: Annotated[Int, Field(ge=1)] = 1
    reduction_factor: Annotated[Float, Field(ge=2)] = 3.0


@dataclass(frozen=True, config=_FILE)
class RunnerSpec:
    """How trials execute.

    Attributes:
        kind: ``"local"`` (on this machine) or ``"ray"`` (Ray Tune).
        cpu: CPUs per trial.
        gpu: GPUs per trial; fractions share a GPU.
        max_concurrent: Trials running at once (local: worker processes; left out of
            the study file, this machine's cores divided by ``cpu``; ray: 1).
        address: Ray cluster to join (``ray.init(address=...)``); ``None`` starts one.
        max_retries: Times a crashed trial is retried before it counts as FAIL.
        asha: ASHA early stopping (ray); ``None`` disables it.
        trial_timeout: Seconds a trial may run before it is killed and recorded FAIL
            (local: each trial then runs in a child process); ``None``: no limit.
        isolate: Local runner: each trial in its own child process, so a trial the OS
            kills (out of memory) is a FAIL and the search goes on.
    """

    kind: Literal[RUNNERS] = "local"  # type: ignore[valid-type]
    cpu: Annotated[Float, Field(gt=0)] = 1.0
    gpu: Annotated[Float, Field(ge=0)] = 0.0
    max_concurrent: Annotated[Int, Field(ge=1)] = 1
    address: StrictStr | None = None
    max_retries: Annotated[Int, Field(ge=0)] = 0
    asha: AshaSpec | None = None
    trial_timeout: Annotated[Float, Field(gt=0)] | None = None
    isolate: StrictBool = False

    @model_validator(mode="before")
    @classmethod
    def _fill_this_machine(cls, data: Any) -> Any:
        # Left out of a study file: the local runner fills this machine (its cores / cpu
        # per trial); Ray keeps one trial at a time unless told.
        if not isinstance(data, Mapping) or "max_concurrent" in data:
            return data
        cpu = data.get("cpu", 1.0)
        usable = isinstance(cpu, int | float) and not isinstance(cpu, bool) and cpu > 0 \
            and math.isfinite(cpu)
        local = data.get("kind", "local") == "local" and usable
        return {**data, "max_concurrent": default_workers(float(cpu)) if local else 1}


@dataclass(frozen=True, config=_FILE)
class ModelSpec:
    """The model that every trial trains.

    Attributes:
        name: ``"fusion"`` (the paper's network), a baseline network (``"segnet"``,
            ``"deeplabv3"``, ``"pspnet"``, ``"unet"``) or the per-pixel gradient-boosting
            floor ``"hgb"`` (tuned through the ``boost.*`` parameters).
        fixed: Dotted config key -> value, overriding the base configuration in every trial.
    """

    name: Literal[MODELS] = "fusion"  # type: ignore[valid-type]
    fixed: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, config=_FILE)
class RefineSpec:
    """The optional joint refine stage after the last stage.

    Attributes:
        enabled: Run it.
        n_trials: Its budget of COMPLETE trials.
    """

    enabled: StrictBool = False
    n_trials: Annotated[Int, Field(ge=1)] = 10


@dataclass(frozen=True, config=_FILE)
class TuningSpec:
    """How noisy trials are scored (``[tuning]``).

    Attributes:
        repeats: Replicates per configuration: the trial's value is their mean (1: one
            training run, the plain behaviour). Left out: one per fold, else 1.
        folds: k-fold cross-validation over the training units (0: the fixed validation
            split). Replicate ``r`` validates on fold ``r % folds``; the test split is
            never part of a fold.
        racing: Stop replicating a configuration once it trails the stage's best by more
            than ``z`` standard errors.
        z: Standard errors of the racing rule.
        switch_z: Standard errors of its paired gain by which a stage's best must beat the
            stage's incumbent to be handed on instead of it.
        prune: Stop a trial whose learning curve (its first replicate's) falls below the
            median of the stage's earlier trials at the same epoch (Optuna's
            ``MedianPruner``, after half the epochs); it is recorded PRUNED and the stage
            asks another configuration. Ray's ASHA (``[runner.asha]``) does the same there.
    """

    repeats: Annotated[Int, Field(ge=1, le=100)] = 1
    folds: Annotated[Int, Field(ge=0)] = 0
    racing: StrictBool = True
    z: Annotated[Float, Field(gt=0, le=10)] = 1.0
    switch_z: Annotated[Float, Field(gt=0, le=10)] = 2.0
    prune: StrictBool = False

    @model_validator(mode="before")
    @classmethod
    def _one_replicate_per_fold(cls, data: Any) -> Any:
        # Folds are the natural replicates: one per fold unless told otherwise.
        if isinstance(data, Mapping) and "repeats" not in data:
            folds = data.get("folds", 0)
            if isinstance(folds, int) and not isinstance(folds, bool) and folds >= 2:
                return {**data, "repeats": folds}
        return data

    @field_validator("folds")
    @classmethod
    def _no_single_fold(cls, folds: int) -> int:
        if folds == 1:
            raise _fail(f"folds = {folds}",
                        "use 0 (the fixed validation split) or 2 or more folds")
        return folds

    def replication(self) -> dict[str, Any]:
        """The engine's :class:`~hpo.Replication` fields."""
        return {"repeats": self.repeats, "racing": self.racing, "z": self.z,
                "switch_z": self.switch_z}


@dataclass(frozen=True, config=_FILE)
class CompareTable:
    """The keys of ``[compare]``; ``hpo compare`` checks their values (``compare_settings``)."""

    variants: Any = None
    trials: Any = None
    seeds: Any = None
    splits: Any = None
    folds: Any = None
    ensemble: Any = None


@dataclasses.dataclass(frozen=True)
class _Where:
    """What validating a study file needs to know beyond its tables (the validation context).

    Attributes:
        file: The study file (``None``: built from a dict).
        base: The folder its relative paths refer to.
        check_paths: Check that the files it refers to exist.
        explicit: Output keys the command line replaces (not confined).
        allow: Further folders output paths may lie in.
    """

    file: Path | None
    base: Path
    check_paths: bool
    explicit: frozenset[str]
    allow: tuple[Path, ...]

    def output(self, path: str, key: str, *, parent_ok: bool = False) -> Path:
        """Resolve an output path of the study file, held to the allowed folders.

        Args:
            path: The path as written (relative to the study file's folder).
            key: Its dotted key.
            parent_ok: Also allow the folder above the study's (the cube cache).

        Returns:
            The absolute path.

        Raises:
            PydanticCustomError: It leaves the study's folder and the working folder,
                through ``..``, ``~`` or an absolute path, and the command line did not give it.
        """
        resolved = _resolve_path(self.base, path)
        if key in self.explicit:
            return resolved
        # Judged on the path as written, before symbolic links: a link the user made inside
        # the study's folder is the user's choice, not the study file's.
        lexical = Path(os.path.normpath(self.base / Path(path).expanduser()))
        roots = [self.base, Path.cwd()] + ([self.base.parent] if parent_ok else [])
        if not any(lexical.is_relative_to(root) for root in [*roots, *self.allow]):
            where = " or ".join(dict.fromkeys(str(root) for root in roots))
            raise _fail(
                f"{path!r} resolves to {lexical}, outside {where}",
                "a study file may only write inside its own folder or the working folder: "
                "use a relative path without '..', run hpo from a folder that contains it"
                + (", pass it on the command line (--storage)" if key == "storage" else "")
                + f", or allow the folder with --allow-outside {lexical.parent} (or "
                f"{ALLOW_OUTSIDE_ENV})",
            )
        return resolved


@dataclass(frozen=True, config=_FILE)
class StudySpec:
    """A validated study file.

    Attributes:
        name: Search name; stage studies are ``<name>.<NN>.<stage>``.
        file: The study file (``None`` when built from a dict).
        storage: Storage URL, relative paths resolved against the study file's folder.
        artifacts: Artifact store folder.
        seed: Seed of every random choice.
        direction: ``"maximize"`` (every metric here is better when higher).
        metric: Validation metric the objective returns: ``"f1"``, ``"miou"``, ``"auc"``,
            ``"f1_best"`` or ``"miou_best"`` (the last two at the validation-chosen threshold).
        sampler: Default Bayesian sampler of the stages.
        runner: How trials run.
        data: The ``[data]`` section as written (checked against
            :class:`~data.section.DataSection`); its paths are relative to ``base_dir``.
        model: The model and its fixed configuration.
        stages: The stages, in tuning order.
        refine: The optional refine stage.
        cycles: Passes over the stages.
        strategy: How stages are modelled: ``shared`` (one surrogate over all trials) or
            ``stagewise`` (the paper's method); see :mod:`hpo.engine.strategy`. ``None`` (left
            out): ``shared`` for a new search, while a search stored before strategies
            existed goes on stage-wise.
        description: Free text.
        compare: The ``[compare]`` table of ``hpo compare`` (its values validated there).
        tuning: Replicates, folds and racing of noisy trials (``[tuning]``).
    """

    name: Annotated[StrictStr, _named("study")]
    file: Path | None
    storage: StrictStr
    artifacts: Path
    seed: Annotated[Int, Field(ge=0, le=2**32 - 1)]  # numpy's and optuna's seeds: 32 bits
    direction: Literal["maximize", "minimize"]
    metric: Literal[METRICS]  # type: ignore[valid-type]
    sampler: Literal[SAMPLER_NAMES]  # type: ignore[valid-type]
    runner: RunnerSpec
    data: Annotated[dict[str, Any], Checked(DataSection)]
    model: ModelSpec
    stages: tuple[StageSpec, ...]
    refine: RefineSpec = field(default_factory=RefineSpec)
    cycles: Annotated[Int, Field(ge=1, le=MAX_CYCLES)] = 1
    strategy: Literal[STRATEGIES] | None = None  # type: ignore[valid-type]
    description: StrictStr = ""
    compare: Annotated[dict[str, Any], Checked(CompareTable)] = field(default_factory=dict)
    tuning: TuningSpec = field(default_factory=TuningSpec)

    @model_validator(mode="before")
    @classmethod
    def _study_file(cls, data: Any, info: ValidationInfo) -> Any:
        """A study file's tables (validated with a :class:`_Where`): its defaults filled in."""
        where = info.context
        if not isinstance(where, _Where) or isinstance(data, ArgsKwargs):
            return data
        from networks.errors import kind_of, unknown_key

        if not isinstance(data, Mapping):
            raise _fail(f"expected a table, got {kind_of(data)}", "write the study in TOML")
        if "file" in data:  # the one field that is not a key of the file
            allowed = [f for f in cls.__dataclass_fields__ if f != "file"]
            raise _fail(*unknown_key("file", "", allowed), ("file",))
        if "data" not in data:
            raise _fail(
                "missing [data] section",
                'add [data] with scene = "path/to/scene.toml" or format = "geotiff" '
                "and the sources (see studies/quickstart.toml)",
                ("data",),
            )
        stages = data.get("stages", [])
        if stages == []:
            raise _fail("no stages", "add at least one [[stages]] table with params",
                        ("stages",))
        if not isinstance(stages, list):
            raise _fail(
                f"expected an array of tables, got {kind_of(stages)}",
                "write each stage as [[stages]] (double brackets)",
                ("stages",),
            )
        filled = {
            "seed": 0, "direction": "maximize", "metric": "f1", "sampler": "gp", "runner": {},
            "model": {}, "storage": None, "artifacts": None, **data, "file": where.file,
        }  # fmt: skip
        if where.file is not None:
            filled.setdefault("name", where.file.stem)
        return filled

    @field_validator("storage", mode="before")
    @classmethod
    def _resolve_storage(cls, url: Any, info: ValidationInfo) -> Any:
        """Default to ``<study dir>/<name>.db``; resolve relative file paths against the study."""
        where = info.context
        if not isinstance(where, _Where) or not isinstance(url, str | None):
            return url
        if url is None:
            name = info.data.get("name")
            return f"sqlite:///{where.base / f'{name}.db'}"
        if "://" not in url:  # a bare file name, as make_storage accepts too
            path = where.output(url, "storage")
            return f"journal://{path}" if path.suffix in (".log", ".jsonl", ".journal") \
                else f"sqlite:///{path}"
        scheme = url.split("://", 1)[0].split("+", 1)[0]
        known = ("sqlite", "postgresql", "postgres", "mysql", "redis", "rediss", "journal")
        if scheme not in known:
            raise _fail(
                f"unknown storage scheme {scheme!r}",
                "use sqlite:///file.db, postgresql://user@host/db, redis://host:6379/0 "
                "or journal:///file.log",
            )
        if scheme == "sqlite":
            path = url.split(":///", 1)[-1]
            if path in ("", ":memory:"):
                return url
            return f"{url.split(':///', 1)[0]}:///{where.output(path, 'storage')}"
        if scheme == "journal":
            # journal://rel/path is relative, journal:///abs/path absolute (as make_storage
            # reads it)
            return f"journal://{where.output(url[len('journal://') :], 'storage')}"
        return url

    @field_validator("artifacts", mode="before")
    @classmethod
    def _resolve_artifacts(cls, path: Any, info: ValidationInfo) -> Any:
        where = info.context
        if not isinstance(where, _Where):
            return path
        if path is None:
            path = f"artifacts/{info.data.get('name')}"
        if not isinstance(path, str):
            from networks.errors import kind_of

            raise _fail(f"expected a string, got {kind_of(path)} {path!r}",
                        "write artifacts as a string")
        return where.output(path, "artifacts")

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> StudySpec:
        """What the tables mean together, for a study file (validated with a :class:`_Where`)."""
        where = info.context
        if not isinstance(where, _Where):
            return self
        if self.direction != "maximize":
            raise _fail(
                f"{self.metric} is better when higher, so minimizing it would find the worst "
                "model",
                "remove direction or set 'maximize'",
                ("direction",),
            )
        self._check_stages()
        self._check_data(where)
        if self.tuning.folds and "folds" in self.data:
            raise _fail(
                "[tuning] folds and [data] folds are both set",
                "keep [tuning] folds (every fold is a replicate of each trial) and drop "
                "[data] folds / fold",
                ("tuning", "folds"),
            )
        _check_model_config(self)
        return self

    def _check_stages(self) -> None:
        owner: dict[str, str] = {}
        for i, stage in enumerate(self.stages):
            if any(s.name == stage.name for s in self.stages[:i]):
                raise _fail(f"stage name {stage.name!r} is used twice",
                            "give every stage a unique name", ("stages", i))
            for pname in stage.params:
                key = ("stages", i, "params", pname)
                if pname in owner:
                    raise _fail(
                        f"parameter {pname!r} is already tuned in stage {owner[pname]!r}",
                        "tune each parameter in one stage only",
                        key,
                    )
                if pname in self.model.fixed:
                    raise _fail(f"parameter {pname!r} is also in [model.fixed]",
                                "a parameter is either tuned or fixed: remove one", key)
                owner[pname] = stage.name

    def _check_data(self, where: _Where) -> None:
        if "scene" in self.data:
            scene = _resolve_path(where.base, self.data["scene"])
            if where.check_paths and not scene.is_file():
                raise _fail(
                    f"scene file {str(scene)!r} does not exist",
                    f"generate it with `hpo synth {scene.parent}` or fix the path "
                    "(relative to the study file)",
                    ("data", "scene"),
                )
        if "cache_dir" in self.data:
            try:
                where.output(self.data["cache_dir"], "data.cache_dir", parent_ok=True)
            except PydanticCustomError as exc:
                raise _fail(exc.message(), (exc.context or {}).get("hint"),
                            ("data", "cache_dir")) from exc

    @property
    def base_dir(self) -> Path:
        """The folder the file's relative paths (data, storage, artifacts) refer to."""
        return self.file.parent if self.file is not None else Path.cwd()

    def to_stages(self) -> list[Stage]:
        """The stages as the engine's :class:`~hpo.engine.stage.Stage` objects."""
        return [stage.to_stage() for stage in self.stages]

    def to_dict(self) -> dict[str, Any]:
        """The canonical spec as plain data; :func:`parse_study` reads it back unchanged.

        Returns:
            A JSON- and YAML-safe dict with every default filled in and paths resolved.
        """
        runner = asdict(self.runner)
        for key in ("asha", "address", "trial_timeout"):
            if runner[key] is None:
                del runner[key]
        # Written only when set, so studies without it keep their fingerprint.
        tuning = {"tuning": asdict(self.tuning)} if self.tuning != TuningSpec() else {}
        return {
            "name": self.name,
            "description": self.description,
            "storage": self.storage,
            "artifacts": str(self.artifacts),
            "seed": self.seed,
            "direction": self.direction,
            "metric": self.metric,
            "sampler": self.sampler,
            "cycles": self.cycles,
            **({"strategy": self.strategy} if self.strategy is not None else {}),
            "runner": runner,
            "data": _plain(self.data),
            "model": {"name": self.model.name, "fixed": dict(self.model.fixed)},
            "stages": [stage.to_dict() for stage in self.stages],
            "refine": asdict(self.refine),
            "compare": _plain(self.compare),
            **tuning,
        }

    def fingerprint(self) -> str:
        """A stable hash of what the search explores (storage, runner, artifacts excluded).

        Parameter values enter as the search holds them (sizes as ``"32,16"``), so a
        study file that writes ``[32, 16]`` and one of earlier versions that wrote
        ``"32,16"`` define the same search.

        Returns:
            16 hex digits; equal for study files that define the same search.
        """
        data = {k: v for k, v in self.to_dict().items() if k not in _NOT_FINGERPRINTED}
        for stage in data["stages"]:
            for p in stage["params"].values():
                if p["type"] == "categorical":
                    p["choices"] = [_optuna_value(c) for c in p["choices"]]
                    p["default"] = _optuna_value(p["default"])
        return _hash(data)


class ExportModel(BaseModel):
    """The ``model`` section of an export.

    Attributes:
        name: The model trained (``None``: a search over a custom objective).
        params: The best parameters, flat (sizes as arrays; ``"32,16"`` in older exports).
        config: The full ``networks`` configuration, nested (read by
            :meth:`networks.config.ModelConfig.from_dict`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Literal[MODELS] | None = None  # type: ignore[valid-type]
    params: dict[str, Any] | None = None
    config: dict[str, dict[str, Any]] | None = None

    @field_validator("config")
    @classmethod
    def _network_config(cls, config: dict[str, Any] | None) -> dict[str, Any] | None:
        from networks.config import ModelConfig
        from networks.errors import ConfigError

        if config is not None:
            try:
                ModelConfig.from_dict(config)
            except ConfigError as exc:
                key = tuple(exc.key.split(".", 1)) if exc.key else ()
                raise _fail(exc.message, exc.hint or "re-export it with `hpo export`",
                            key) from exc
        return config


class ExportDoc(BaseModel):
    """An exported best configuration (``hpo export``), as ``load_export`` reads it.

    Attributes:
        format: :data:`EXPORT_FORMAT`.
        search: The search's name.
        metric: The validation metric tuned.
        seed: The study's seed (the split and every training used it).
        direction: ``maximize`` or ``minimize``.
        best_value: The best trial's value.
        estimate: The best value as mean, standard error and replicates.
        validation_threshold: The decision threshold ``hpo predict`` cuts at.
        threshold: The pooled threshold decision of the best trial's replicates.
        finished: Whether every stage finished.
        model: The model section.
        data: The study's ``[data]`` section (checked as a study's is).
        data_base_dir: The folder its relative paths refer to.
        provenance: Where the configuration comes from.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=True)

    format: Literal[EXPORT_FORMAT]  # type: ignore[valid-type]
    search: str | None = None
    metric: Literal[METRICS] | None = None  # type: ignore[valid-type]
    seed: Annotated[int, Field(ge=0, le=2**32 - 1)] | None = None
    direction: Literal["maximize", "minimize"] | None = None
    best_value: float | None = None
    estimate: dict[str, Any] | None = None
    validation_threshold: float | None = None
    threshold: dict[str, Any] | None = None
    finished: bool | None = None
    model: ExportModel | None = None
    data: Annotated[dict[str, Any], Checked(DataSection)] | None = None
    data_base_dir: str | None = None
    provenance: dict[str, Any] | None = None


def check_export(doc: Mapping[str, Any], source: str | None = None) -> None:
    """Validate an export document against :class:`ExportDoc`.

    Args:
        doc: The parsed document.
        source: The file it was read from, as errors name it.

    Raises:
        ExportError: Naming the key at fault and how to fix it.
    """
    from networks.errors import explain

    try:
        ExportDoc.model_validate(doc, context=source or "<export>")
    except ValidationError as exc:
        issue = explain(exc, ExportDoc)
        raise ExportError(f"[{_key(issue.loc, doc)}] {issue.message}", path=source,
                          hint=issue.hint or "re-export it with `hpo export`") from exc


def load_study_file(
    path: str | Path,
    *,
    check_paths: bool = True,
    explicit: Collection[str] = (),
    allow: Collection[str | Path] = (),
) -> StudySpec:
    """Read and validate a study file.

    Args:
        path: The ``.toml`` file.
        check_paths: Check that files the study refers to (``data.scene``) exist; turn
            off for commands that only read results (status, export).
        explicit: Keys of :data:`OUTPUT_KEYS` the command line replaces (e.g.
            ``"storage"`` with ``--storage``); the file's value is not used, so it is not
            held to the study's folder.
        allow: Further folders the study file may write into (``--allow-outside``),
            besides those of :func:`allowed_outside`.

    Returns:
        The validated spec.

    Raises:
        SpecError: The file is missing, not TOML, or invalid; the message names the
            file, the dotted key and a hint.
    """
    path = Path(path).resolve()
    if path.is_dir():
        raise SpecError(
            "is a folder, not a study file",
            file=str(path),
            hint="pass the .toml file inside it, e.g. studies/quickstart.toml",
        )
    if not path.is_file():
        raise SpecError(
            "study file not found",
            file=str(path),
            hint="check the path; studies/quickstart.toml is a template to copy",
        )
    hint = "see https://toml.io for the syntax"
    if path.suffix.lower() in _TOML_ONLY:
        hint = f"study files are TOML, not {_TOML_ONLY[path.suffix.lower()]}: " + hint
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise SpecError(
            f"not a text file (byte {exc.start} is not UTF-8)", file=str(path), hint=hint
        ) from exc
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"not valid TOML: {exc}", file=str(path), hint=hint) from exc
    except OSError as exc:
        raise SpecError(
            f"cannot read: {exc.strerror or exc}", file=str(path), hint="check its permissions"
        ) from exc
    return parse_study(raw, file=path, check_paths=check_paths, explicit=explicit, allow=allow)


def parse_study(
    raw: Mapping[str, Any],
    *,
    file: str | Path | None = None,
    check_paths: bool = True,
    explicit: Collection[str] = (),
    allow: Collection[str | Path] = (),
) -> StudySpec:
    """Validate a study given as plain data (a parsed study file or :meth:`StudySpec.to_dict`).

    Args:
        raw: The study's tables.
        file: The file it came from; relative paths are resolved against its folder and
            errors name it.
        check_paths: Check that files the study refers to exist.
        explicit: Keys of :data:`OUTPUT_KEYS` the command line replaces, so not held to
            the study's folder.
        allow: Further folders output paths may lie in (``--allow-outside``).

    Returns:
        The validated spec.

    Raises:
        SpecError: Anything is invalid, or an output path leaves the allowed folders.
    """
    file_path = Path(file).resolve() if file is not None else None
    where = _Where(
        file=file_path,
        base=file_path.parent if file_path else Path.cwd(),
        check_paths=check_paths,
        explicit=frozenset(explicit),
        allow=tuple(allowed_outside(allow)),
    )
    try:
        return _STUDY.validate_python(raw, context=where)
    except ValidationError as exc:
        from networks.errors import explain

        issue = explain(exc, StudySpec, lambda loc: _key(loc, raw))
        raise SpecError(
            issue.message,
            file=str(file_path) if file_path else "<study>",
            key=_key(issue.loc, raw) or None,
            hint=issue.hint,
        ) from exc


def allowed_outside(extra: Collection[str | Path] = ()) -> list[Path]:
    """Folders outside the study's own that the user allows it to write into.

    The study file cannot widen them: they come from the command line
    (``--allow-outside``, passed as ``extra``) and the environment variable
    :data:`ALLOW_OUTSIDE_ENV` (folders separated by ``os.pathsep``).

    Args:
        extra: Folders given on the command line.

    Returns:
        Absolute folders (symbolic links not followed, as output paths are judged).
    """
    listed = [p for p in os.environ.get(ALLOW_OUTSIDE_ENV, "").split(os.pathsep) if p.strip()]
    return [Path(os.path.normpath(Path(p).expanduser().absolute())) for p in [*extra, *listed]]


def _check_model_config(spec: StudySpec) -> None:
    """Check parameter names and values against the network's config (every model has one).

    Raises:
        PydanticCustomError: A name the network does not know (naming the nearest), or a
            default, fixed value, choice or range end the network rejects.
    """
    from networks.config import ModelConfig
    from networks.errors import ConfigError, unknown_key

    valid = ModelConfig.param_names()
    named = [(("stages", i, "params", p), "a parameter of the fusion network")
             for i, stage in enumerate(spec.stages) for p in stage.params]
    named += [(("model", "fixed", p), "a network parameter") for p in spec.model.fixed]
    for key, what in named:
        if key[-1] not in valid:
            _, hint = unknown_key(key[-1], "", valid)
            raise _fail(f"{key[-1]!r} is not {what}",
                        hint if hint.startswith("did") else "see ModelConfig.param_names()", key)
    defaults = {p: ps.default for s in spec.stages for p, ps in s.params.items()}
    try:
        ModelConfig.from_params({**spec.model.fixed, **defaults})
    except ConfigError as exc:
        stage = next((i for i, s in enumerate(spec.stages) if exc.key in s.params), None)
        key = (
            ("stages", stage, "params", exc.key, "default")
            if stage is not None
            else ("model", "fixed", exc.key)
        )
        raise _fail(f"the network rejects it: {exc}", exc.hint or "fix the value",
                    key) from exc
    # Every value a trial can draw, not only the defaults: a bad choice or bound would
    # otherwise surface as failed trials mid-search. Ranges are checked at their ends (the
    # network's own checks are per field and monotone: a lower bound, an upper bound).
    base = ModelConfig.from_params(dict(spec.model.fixed))
    for i, stage in enumerate(spec.stages):
        for pname, p in stage.params.items():
            values = (
                [("choices", c) for c in p.choices]
                if p.type == "categorical"
                else [("low", p.low), ("high", p.high)]
            )
            for field_name, value in values:
                try:
                    ModelConfig.from_params({pname: value}, base)
                except ConfigError as exc:
                    shown = (f"{_written(value)!r}" if field_name == "choices"
                             else f"{field_name} = {value}")
                    raise _fail(
                        f"{shown}: the network rejects it ({exc})",
                        exc.hint
                        or (
                            "remove that choice"
                            if field_name == "choices"
                            else "narrow the range to values the network accepts"
                        ),
                        ("stages", i, "params", pname, field_name),
                    ) from exc


def _key(loc: Loc, raw: Any) -> str:
    """A location as a study file writes its key: ``stages.optim.params."optim.lr".low``.

    A stage is named by its name when it has a valid one (else ``stages[1]``); an array
    index is ``[i]``; a key that is not a bare TOML key is quoted.
    """
    text, node = "", raw
    for part in loc:
        stage = node[part] if text == "stages" and isinstance(node, list) \
            and isinstance(part, int) and part < len(node) else None
        name = stage.get("name") if isinstance(stage, Mapping) else None
        if isinstance(name, str) and name:
            text += f".{name}"
        elif isinstance(part, int):
            text += f"[{part}]"
        else:
            text = f"{text}.{_part(part)}" if text else _part(part)
        node = _get(node, part)
    return text


def _get(node: Any, part: str | int) -> Any:
    if isinstance(node, Mapping):
        return node.get(part)
    if isinstance(node, list) and isinstance(part, int) and part < len(node):
        return node[part]
    return None


def _part(name: str) -> str:
    """A key part as TOML writes it: dotted parameter names are quoted."""
    return name if re.fullmatch(r"[A-Za-z0-9_\-]+", name) else f'"{name}"'


def _resolve_path(base: Path, path: str) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else (base / p).resolve()


def _plain(value: Any) -> Any:
    """TOML-parsed data as plain dicts and lists (dates and times as ISO strings)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


_STUDY = TypeAdapter(StudySpec)


__all__ = [
    "EXPORT_FORMAT",
    "MAX_CYCLES",
    "METRICS",
    "MODELS",
    "OUTPUT_KEYS",
    "AshaSpec",
    "CategoricalParam",
    "ExportDoc",
    "FloatParam",
    "IntParam",
    "ModelSpec",
    "ParamSpec",
    "RefineSpec",
    "RunnerSpec",
    "StageSpec",
    "StudySpec",
    "TuningSpec",
    "check_export",
    "load_study_file",
    "parse_study",
]
