"""The sections of a study file: its stages, runner, model, refine stage and tuning.

Each is a frozen pydantic dataclass; :class:`~hpo.study.schema.StudySpec` composes them.
A stage's parameters are :data:`~hpo.study.params.ParamSpec` tables.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import field
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    StrictBool,
    StrictStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.dataclasses import dataclass

from hpo.engine.runners.local import default_workers
from hpo.engine.samplers import SAMPLER_NAMES
from hpo.engine.stage import Stage
from hpo.study.fields import MODELS, RUNNERS, STUDY_CONFIG, Float, Int, fail, named
from hpo.study.params import ParamSpec, optuna_value, sizes_as_lists


@dataclass(frozen=True, config=STUDY_CONFIG)
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

    name: Annotated[StrictStr, named("stage")]
    params: Mapping[str, ParamSpec]
    n_random: Annotated[Int, Field(ge=1)] = 8
    n_bayes: Annotated[Int, Field(ge=0)] = 16
    sampler: Literal[SAMPLER_NAMES] | None = None  # type: ignore[valid-type]
    max_fail: Annotated[Int, Field(ge=1)] | None = None

    @field_validator("params", mode="before")
    @classmethod
    def _some_params(cls, value: Any) -> Any:
        if not isinstance(value, Mapping) or not value:
            raise fail(
                "stage has no parameters",
                'add e.g. [stages.params."optim.lr"] with type, low, high, default',
            )
        return {name: sizes_as_lists(str(name), entry) for name, entry in value.items()}

    def to_stage(self) -> Stage:
        """The stage as the engine's :class:`~hpo.engine.stage.Stage`."""
        return Stage(
            self.name,
            {name: p.distribution() for name, p in self.params.items()},
            defaults={name: optuna_value(p.default) for name, p in self.params.items()},
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


@dataclass(frozen=True, config=STUDY_CONFIG)
class AshaSpec:
    """ASHA early stopping of the ray runner.

    Attributes:
        grace: Epochs every trial runs before it may be stopped.
        reduction_factor: Share of trials kept at each rung is ``1 / reduction_factor``.
    """

    grace: Annotated[Int, Field(ge=1)] = 1
    reduction_factor: Annotated[Float, Field(ge=2)] = 3.0


@dataclass(frozen=True, config=STUDY_CONFIG)
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


@dataclass(frozen=True, config=STUDY_CONFIG)
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


@dataclass(frozen=True, config=STUDY_CONFIG)
class RefineSpec:
    """The optional joint refine stage after the last stage.

    Attributes:
        enabled: Run it.
        n_trials: Its budget of COMPLETE trials.
    """

    enabled: StrictBool = False
    n_trials: Annotated[Int, Field(ge=1)] = 10


@dataclass(frozen=True, config=STUDY_CONFIG)
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
        max_repeats: Intensification (left out: ``repeats``): the incumbent runs this many
            replicates, and a configuration that beats it, but not yet by ``switch_z``,
            runs more than ``repeats``, up to this many, until the comparison is decided
            (in a confirmation run after the stage's budget, when it ran beside the
            incumbent and had nothing to pair with then).
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
    max_repeats: Annotated[Int, Field(ge=1, le=100)] | None = None

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
            raise fail(f"folds = {folds}",
                       "use 0 (the fixed validation split) or 2 or more folds")
        return folds

    @field_validator("max_repeats")
    @classmethod
    def _most_at_least_repeats(cls, most: int | None, info: ValidationInfo) -> int | None:
        repeats = info.data.get("repeats", 1)
        if most is not None and most < repeats:
            raise fail(f"max_repeats = {most} < repeats = {repeats}",
                       f"at least repeats, e.g. {2 * repeats}; leave it out for none")
        return most

    def replication(self) -> dict[str, Any]:
        """The engine's :class:`~hpo.Replication` fields."""
        return {"repeats": self.repeats, "racing": self.racing, "z": self.z,
                "switch_z": self.switch_z, "max_repeats": self.max_repeats}


@dataclass(frozen=True, config=STUDY_CONFIG)
class CompareTable:
    """The keys of ``[compare]``; ``hpo compare`` checks their values (``compare_settings``)."""

    variants: Any = None
    trials: Any = None
    seeds: Any = None
    splits: Any = None
    folds: Any = None
    ensemble: Any = None
    epochs: Any = None


__all__ = [
    "AshaSpec",
    "CompareTable",
    "ModelSpec",
    "RefineSpec",
    "RunnerSpec",
    "StageSpec",
    "TuningSpec",
]
