"""Study files (``studies/*.toml``) -> validated, immutable dataclasses.

Every mistake a user can make in a study file raises a :class:`~hpo.engine.errors.SpecError`
that names the file, the dotted key and a hint; unknown keys name the nearest valid one.

A study file is data only (TOML: no includes, no code). The files it makes the toolkit
write (the storage file, the artifact folder, the cube cache) must stay inside the study
file's folder or the working folder; see :data:`OUTPUT_KEYS`. A path given on the command
line (``--storage``, ``-o``) is the user's own choice and may point anywhere.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import tomllib
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from hpo.engine.errors import SpecError
from hpo.engine.samplers import SAMPLER_NAMES
from hpo.engine.space import fingerprint as _hash
from hpo.engine.stage import Stage
from hpo.engine.strategy import STRATEGIES

METRICS = ("f1", "miou", "auc", "f1_best", "miou_best")
MODELS = ("fusion", "segnet", "deeplabv3", "pspnet", "unet", "hgb")
RUNNERS = ("local", "ray")
PARAM_TYPES = ("float", "int", "categorical")
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]*$")
_REQUIRED = object()
# TOML integers are 64-bit; Python's parser reads longer ones, which overflow numpy and torch.
_INT_RANGE = (-(2**63), 2**63 - 1)
# numpy's and optuna's seeds are unsigned 32-bit integers.
_SEED_RANGE = (0, 2**32 - 1)
MAX_CYCLES = 100
"""Most passes over the stages a study may ask for (more is surely a typo)."""
ALLOW_OUTSIDE_ENV = "HPO_ALLOW_OUTSIDE"
"""Environment variable: folders (``os.pathsep``-separated) a study file may also write into."""
OUTPUT_KEYS = ("storage", "artifacts", "data.cache_dir")
"""Study-file keys naming where the toolkit writes; each must stay inside the study's folder
or the working folder (``data.cache_dir`` may also use the study folder's parent, where the
shipped studies share ``../.cache/cubes``)."""
_TOML_ONLY = {".yaml": "YAML", ".yml": "YAML", ".json": "JSON"}

_TOP_KEYS = (
    "name",
    "description",
    "storage",
    "artifacts",
    "seed",
    "direction",
    "metric",
    "sampler",
    "cycles",
    "strategy",
    "runner",
    "data",
    "model",
    "stages",
    "refine",
    "compare",
    "tuning",
)
_RUNNER_KEYS = (
    "kind", "cpu", "gpu", "max_concurrent", "address", "max_retries", "asha",
    "trial_timeout", "isolate",
)
_ASHA_KEYS = ("grace", "reduction_factor")
_MODEL_KEYS = ("name", "fixed")
_REFINE_KEYS = ("enabled", "n_trials")
_TUNING_KEYS = ("repeats", "folds", "racing", "z", "switch_z", "prune")
_COMPARE_KEYS = ("variants", "trials", "seeds", "splits", "folds", "ensemble")
_STAGE_KEYS = ("name", "n_random", "n_bayes", "sampler", "max_fail", "params")
_PARAM_KEYS = {
    "float": ("type", "low", "high", "log", "step", "default"),
    "int": ("type", "low", "high", "log", "step", "default"),
    "categorical": ("type", "choices", "default"),
}
# Keys that never change what a search explores, so editing them keeps its fingerprint.
_NOT_FINGERPRINTED = ("storage", "artifacts", "runner", "description", "compare")


@dataclass(frozen=True)
class ParamSpec:
    """One tuned parameter of a stage.

    Attributes:
        name: The parameter's name; for the network objective a dotted config key
            (``"optim.lr"``).
        type: ``"float"``, ``"int"`` or ``"categorical"``.
        default: Its value until its stage is tuned.
        low: Lower bound (float and int).
        high: Upper bound, inclusive (float and int).
        log: Sample on a log scale.
        step: Discretisation step (not with ``log``).
        choices: The values of a categorical parameter.
    """

    name: str
    type: str
    default: Any
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Any, ...] | None = None

    def distribution(self) -> BaseDistribution:
        """The parameter as an Optuna distribution."""
        if self.type == "categorical":
            return CategoricalDistribution(self.choices)
        if self.type == "int":
            return IntDistribution(self.low, self.high, log=self.log, step=self.step or 1)
        return FloatDistribution(self.low, self.high, log=self.log, step=self.step)

    def to_dict(self) -> dict[str, Any]:
        """The parameter as its study-file table (unset optional keys left out)."""
        keys = _PARAM_KEYS[self.type]
        data = {k: v for k, v in asdict(self).items() if k in keys and v is not None}
        if "choices" in data:
            data["choices"] = list(data["choices"])
        if not self.log:
            data.pop("log", None)
        return data


@dataclass(frozen=True)
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

    name: str
    params: Mapping[str, ParamSpec]
    n_random: int = 8
    n_bayes: int = 16
    sampler: str | None = None
    max_fail: int | None = None

    def to_stage(self) -> Stage:
        """The stage as the engine's :class:`~hpo.engine.stage.Stage`."""
        return Stage(
            self.name,
            {name: p.distribution() for name, p in self.params.items()},
            defaults={name: p.default for name, p in self.params.items()},
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


@dataclass(frozen=True)
class AshaSpec:
    """ASHA early stopping of the ray runner.

    Attributes:
        grace: Epochs every trial runs before it may be stopped.
        reduction_factor: Share of trials kept at each rung is ``1 / reduction_factor``.
    """

    grace: int = 1
    reduction_factor: float = 3.0


@dataclass(frozen=True)
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

    kind: str = "local"
    cpu: float = 1.0
    gpu: float = 0.0
    max_concurrent: int = 1
    address: str | None = None
    max_retries: int = 0
    asha: AshaSpec | None = None
    trial_timeout: float | None = None
    isolate: bool = False


@dataclass(frozen=True)
class ModelSpec:
    """The model that every trial trains.

    Attributes:
        name: ``"fusion"`` (the paper's network), a baseline network (``"segnet"``,
            ``"deeplabv3"``, ``"pspnet"``) or the per-pixel gradient-boosting floor
            ``"hgb"`` (tuned through the ``boost.*`` parameters).
        fixed: Dotted config key -> value, overriding the base configuration in every trial.
    """

    name: str = "fusion"
    fixed: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RefineSpec:
    """The optional joint refine stage after the last stage.

    Attributes:
        enabled: Run it.
        n_trials: Its budget of COMPLETE trials.
    """

    enabled: bool = False
    n_trials: int = 10


@dataclass(frozen=True)
class TuningSpec:
    """How noisy trials are scored (``[tuning]``).

    Attributes:
        repeats: Replicates per configuration: the trial's value is their mean (1: one
            training run, the plain behaviour).
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

    repeats: int = 1
    folds: int = 0
    racing: bool = True
    z: float = 1.0
    switch_z: float = 2.0
    prune: bool = False

    def replication(self) -> dict[str, Any]:
        """The engine's :class:`~hpo.Replication` fields."""
        return {"repeats": self.repeats, "racing": self.racing, "z": self.z,
                "switch_z": self.switch_z}


@dataclass(frozen=True)
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
        data: The ``[data]`` section, unchanged; its paths are relative to ``base_dir``.
        model: The model and its fixed configuration.
        stages: The stages, in tuning order.
        refine: The optional refine stage.
        cycles: Passes over the stages.
        strategy: How stages are modelled: ``shared`` (one surrogate over all trials) or
            ``stagewise`` (the paper's method); see :mod:`hpo.engine.strategy`. ``None`` (left
            out): ``shared`` for a new search, while a search stored before strategies
            existed goes on stage-wise.
        description: Free text.
        compare: The ``[compare]`` table of ``hpo compare`` (validated there).
        tuning: Replicates, folds and racing of noisy trials (``[tuning]``).
    """

    name: str
    file: Path | None
    storage: str
    artifacts: Path
    seed: int
    direction: str
    metric: str
    sampler: str
    runner: RunnerSpec
    data: Mapping[str, Any]
    model: ModelSpec
    stages: tuple[StageSpec, ...]
    refine: RefineSpec = field(default_factory=RefineSpec)
    cycles: int = 1
    strategy: str | None = None
    description: str = ""
    compare: Mapping[str, Any] = field(default_factory=dict)
    tuning: TuningSpec = field(default_factory=TuningSpec)

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
        if runner["asha"] is None:
            del runner["asha"]
        if runner["address"] is None:
            del runner["address"]
        if runner["trial_timeout"] is None:
            del runner["trial_timeout"]
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

        Returns:
            16 hex digits; equal for study files that define the same search.
        """
        data = {k: v for k, v in self.to_dict().items() if k not in _NOT_FINGERPRINTED}
        return _hash(data)


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
    base = file_path.parent if file_path else Path.cwd()
    r = _Reader(str(file_path) if file_path else "<study>", base, explicit, allow)
    top = r.table(raw, "", _TOP_KEYS)
    default_name = file_path.stem if file_path else _REQUIRED
    name = r.get(top, "name", "", str, default_name)
    r.check(
        bool(_NAME.match(name)),
        "name",
        f"invalid study name {name!r}",
        "start with a letter; use letters, digits, '_' or '-'",
    )
    metric = r.choice(top, "metric", "", METRICS, "f1")
    direction = r.choice(top, "direction", "", ("maximize", "minimize"), "maximize")
    r.check(
        direction == "maximize",
        "direction",
        f"{metric} is better when higher, so minimizing it would find the worst model",
        "remove direction or set 'maximize'",
    )
    sampler = r.choice(top, "sampler", "", SAMPLER_NAMES, "gp")
    model = _parse_model(r, top.get("model", {}))
    spec = StudySpec(
        name=name,
        file=file_path,
        storage=_resolve_storage(r, r.get(top, "storage", "", str, None), base, name),
        artifacts=r.output(r.get(top, "artifacts", "", str, f"artifacts/{name}"), "artifacts"),
        seed=r.number(top, "seed", "", 0, _within(_SEED_RANGE), _range_rule(_SEED_RANGE), int),
        direction=direction,
        metric=metric,
        sampler=sampler,
        runner=_parse_runner(r, top.get("runner", {})),
        data=_parse_data(r, top.get("data", _REQUIRED), base, check_paths),
        model=model,
        stages=_parse_stages(r, top.get("stages", _REQUIRED), model),
        refine=_parse_refine(r, top.get("refine", {})),
        cycles=r.get(top, "cycles", "", int, 1),
        strategy=r.choice(top, "strategy", "", STRATEGIES) if "strategy" in top else None,
        description=r.get(top, "description", "", str, ""),
        compare=r.table(top.get("compare", {}), "compare", _COMPARE_KEYS),
        tuning=_parse_tuning(r, top.get("tuning", {}), top.get("data")),
    )
    r.check(
        1 <= spec.cycles <= MAX_CYCLES,
        "cycles",
        f"cycles = {spec.cycles}",
        f"use 1 or more passes, at most {MAX_CYCLES}",
    )
    _check_model_config(r, spec)
    return spec


class _Reader:
    """Reads tables of a study file, raising SpecErrors that name the file and key.

    Args:
        file: The study file, as errors name it.
        base: The folder its relative paths refer to.
        explicit: Output keys the command line replaces (not confined).
        allow: Further folders output paths may lie in.
    """

    def __init__(
        self,
        file: str,
        base: Path,
        explicit: Collection[str] = (),
        allow: Collection[str | Path] = (),
    ) -> None:
        self.file = file
        self.base = base
        self.explicit = frozenset(explicit)
        self.allow = allowed_outside(allow)

    def fail(self, key: str, message: str, hint: str) -> SpecError:
        return SpecError(message, file=self.file, key=key or None, hint=hint)

    def check(self, ok: bool, key: str, message: str, hint: str) -> None:
        if not ok:
            raise self.fail(key, message, hint)

    def table(self, raw: Any, key: str, allowed: Iterable[str]) -> dict[str, Any]:
        allowed = list(allowed)
        if not isinstance(raw, Mapping):
            raise self.fail(
                key,
                f"expected a table, got {_kind(raw)}",
                f"write it as [{key}] with keys {', '.join(allowed)}",
            )
        for name in raw:
            if name not in allowed:
                near = difflib.get_close_matches(str(name), allowed, n=1, cutoff=0.6)
                where = f" in [{key}]" if key else ""
                hint = f"did you mean {near[0]!r}?" if near else f"valid keys: {', '.join(allowed)}"
                # quoted as TOML writes it, so an empty or dotted key still names a key
                raise self.fail(_join(key, _part(str(name))), f"unknown key {name!r}{where}", hint)
        return dict(raw)

    def get(
        self,
        table: Mapping[str, Any],
        name: str,
        key: str,
        kind: type | tuple[type, ...],
        default: Any = _REQUIRED,
    ) -> Any:
        dotted = _join(key, name)
        if name not in table:
            if default is _REQUIRED:
                raise self.fail(
                    dotted, f"missing required key {name!r}", f"add {name} = <{_type_name(kind)}>"
                )
            return default
        return self.value(table[name], dotted, kind)

    def value(self, value: Any, key: str, kind: type | tuple[type, ...]) -> Any:
        kinds = kind if isinstance(kind, tuple) else (kind,)
        # bool is an int subclass, but `n_random = true` is a mistake, not 1.
        ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
        if not ok and float in kinds and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if not ok:
            raise self.fail(
                key,
                f"expected {_type_name(kind)}, got {_kind(value)} {value!r}",
                f"write {key.rsplit('.', 1)[-1]} as {_type_name(kind)}",
            )
        self.check_number(value, key)
        return value

    def check_number(self, value: Any, key: str) -> None:
        """Refuse NaN, infinities and integers beyond 64 bits (TOML allows the first two)."""
        if isinstance(value, float) and not math.isfinite(value):
            raise self.fail(key, f"{key.rsplit('.', 1)[-1]} = {value}", "use a finite number")
        if isinstance(value, int) and not _within(_INT_RANGE)(value):
            raise self.fail(
                key,
                f"{key.rsplit('.', 1)[-1]} = {value} does not fit in 64 bits",
                f"use {_range_rule(_INT_RANGE)}",
            )

    def output(self, path: str, key: str, *, parent_ok: bool = False) -> Path:
        """Resolve an output path of the study file, held to the allowed folders.

        Args:
            path: The path as written (relative to the study file's folder).
            key: Its dotted key.
            parent_ok: Also allow the folder above the study's (the cube cache).

        Returns:
            The absolute path.

        Raises:
            SpecError: It leaves the study's folder and the working folder, through ``..``,
                ``~`` or an absolute path, and the command line did not give it.
        """
        resolved = _resolve_path(self.base, path)
        if key in self.explicit:
            return resolved
        # Judged on the path as written, before symbolic links: a link the user made inside
        # the study's folder is the user's choice, not the study file's.
        lexical = Path(os.path.normpath(self.base / Path(path).expanduser()))
        roots = [self.base, Path.cwd()] + ([self.base.parent] if parent_ok else [])
        if not any(lexical.is_relative_to(root) for root in roots + self.allow):
            where = " or ".join(dict.fromkeys(str(root) for root in roots))
            raise self.fail(
                key,
                f"{path!r} resolves to {lexical}, outside {where}",
                "a study file may only write inside its own folder or the working folder: "
                "use a relative path without '..', run hpo from a folder that contains it"
                + (", pass it on the command line (--storage)" if key == "storage" else "")
                + f", or allow the folder with --allow-outside {lexical.parent} (or "
                f"{ALLOW_OUTSIDE_ENV})",
            )
        return resolved

    def choice(
        self,
        table: Mapping[str, Any],
        name: str,
        key: str,
        choices: Iterable[str],
        default: Any = _REQUIRED,
    ) -> str:
        choices = list(choices)
        value = self.get(table, name, key, str, default)
        if value not in choices:
            near = difflib.get_close_matches(value, choices, n=1, cutoff=0.5)
            hint = f"did you mean {near[0]!r}?" if near else f"use one of {', '.join(choices)}"
            raise self.fail(_join(key, name), f"{value!r} is not one of {', '.join(choices)}", hint)
        return value

    def number(
        self,
        table: Mapping[str, Any],
        name: str,
        key: str,
        default: Any,
        ok: Callable[[float], bool],
        rule: str,
        kind: type | tuple[type, ...] = (int, float),
    ) -> Any:
        value = self.get(table, name, key, kind, default)
        if value is not None:
            self.check(ok(value), _join(key, name), f"{name} = {value}", f"use {rule}")
        return value


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


def _parse_runner(r: _Reader, raw: Any) -> RunnerSpec:
    t = r.table(raw, "runner", _RUNNER_KEYS)
    asha = None
    if "asha" in t:
        a = r.table(t["asha"], "runner.asha", _ASHA_KEYS)
        grace = r.get(a, "grace", "runner.asha", int, 1)
        r.check(grace >= 1, "runner.asha.grace", f"grace = {grace}", "use 1 or more epochs")
        rf = r.number(a, "reduction_factor", "runner.asha", 3.0, lambda v: v >= 2, "2 or more")
        asha = AshaSpec(grace, float(rf))
    kind = r.choice(t, "kind", "runner", RUNNERS, "local")
    cpu = r.number(t, "cpu", "runner", 1.0, lambda v: v > 0, "a number > 0")
    # Left out: the local runner fills this machine (its cores / cpu per trial); Ray
    # keeps one trial at a time unless told.
    max_concurrent = r.get(t, "max_concurrent", "runner", int, None)
    if max_concurrent is None:
        max_concurrent = _local_workers(cpu) if kind == "local" else 1
    max_retries = r.get(t, "max_retries", "runner", int, 0)
    r.check(
        max_concurrent >= 1,
        "runner.max_concurrent",
        f"max_concurrent = {max_concurrent}",
        "use 1 or more",
    )
    r.check(max_retries >= 0, "runner.max_retries", f"max_retries = {max_retries}", "use 0 or more")
    return RunnerSpec(
        kind=kind,
        cpu=float(cpu),
        gpu=float(
            r.number(t, "gpu", "runner", 0.0, lambda v: v >= 0, "0 or more (fractions share a GPU)")
        ),
        max_concurrent=max_concurrent,
        address=r.get(t, "address", "runner", str, None),
        max_retries=max_retries,
        asha=asha,
        trial_timeout=_float_or_none(
            r.number(t, "trial_timeout", "runner", None, lambda v: v > 0, "a number of seconds > 0")
        ),
        isolate=r.get(t, "isolate", "runner", bool, False),
    )


def _local_workers(cpu: Any) -> int:
    from hpo.engine.runners.local import default_workers

    ok = isinstance(cpu, int | float) and not isinstance(cpu, bool) and math.isfinite(cpu) \
        and cpu > 0
    return default_workers(float(cpu)) if ok else 1


def _float_or_none(value: float | None) -> float | None:
    return None if value is None else float(value)


def _parse_data(r: _Reader, raw: Any, base: Path, check_paths: bool) -> dict[str, Any]:
    if raw is _REQUIRED:
        raise r.fail(
            "data",
            "missing [data] section",
            'add [data] with scene = "path/to/scene.toml" or format = "geotiff" '
            "and the sources (see studies/quickstart.toml)",
        )
    if not isinstance(raw, Mapping):
        raise r.fail("data", f"expected a table, got {_kind(raw)}", "write it as [data]")
    if "scene" in raw:
        scene = _resolve_path(base, r.value(raw["scene"], "data.scene", str))
        if check_paths and not scene.is_file():
            raise r.fail(
                "data.scene",
                f"scene file {str(scene)!r} does not exist",
                f"generate it with `hpo synth {scene.parent}` or fix the path "
                "(relative to the study file)",
            )
    elif "format" in raw:
        fmt = r.value(raw["format"], "data.format", str)
        formats = _data_formats()
        if formats and fmt not in formats:
            r.choice(raw, "format", "data", formats)
    else:
        raise r.fail(
            "data",
            "[data] has neither 'scene' nor 'format'",
            'point at a scene file (scene = "scene.toml") or describe the sources '
            '(format = "geotiff", dates, [[data.sources]])',
        )
    if "cache_dir" in raw:
        r.output(r.value(raw["cache_dir"], "data.cache_dir", str), "data.cache_dir", parent_ok=True)
    return dict(raw)


def _data_formats() -> tuple[str, ...]:
    """The adapters the data package knows, or () when it is not importable."""
    try:
        from data.scene import FORMATS
    except ImportError:
        return ()
    return tuple(FORMATS)


def _parse_model(r: _Reader, raw: Any) -> ModelSpec:
    t = r.table(raw, "model", _MODEL_KEYS)
    fixed = r.get(t, "fixed", "model", dict, {})
    return ModelSpec(name=r.choice(t, "name", "model", MODELS, "fusion"), fixed=dict(fixed))


def _parse_tuning(r: _Reader, raw: Any, data: Any) -> TuningSpec:
    t = r.table(raw, "tuning", _TUNING_KEYS)
    folds = r.get(t, "folds", "tuning", int, 0)
    r.check(folds == 0 or folds >= 2, "tuning.folds", f"folds = {folds}",
            "use 0 (the fixed validation split) or 2 or more folds")
    r.check(not (folds and isinstance(data, Mapping) and "folds" in data), "tuning.folds",
            "[tuning] folds and [data] folds are both set",
            "keep [tuning] folds (every fold is a replicate of each trial) and drop "
            "[data] folds / fold")
    # Folds are the natural replicates: one per fold unless told otherwise.
    repeats = r.get(t, "repeats", "tuning", int, folds or 1)
    r.check(1 <= repeats <= 100, "tuning.repeats", f"repeats = {repeats}",
            "use 1 (one training run per trial) to 100; 3-5 is typical")
    z = r.number(t, "z", "tuning", 1.0, lambda v: 0 < v <= 10, "a number in (0, 10]")
    switch_z = r.number(t, "switch_z", "tuning", 2.0, lambda v: 0 < v <= 10,
                        "a number in (0, 10]")
    return TuningSpec(repeats=repeats, folds=folds,
                      racing=r.get(t, "racing", "tuning", bool, True), z=float(z),
                      switch_z=float(switch_z), prune=r.get(t, "prune", "tuning", bool, False))


def _parse_refine(r: _Reader, raw: Any) -> RefineSpec:
    t = r.table(raw, "refine", _REFINE_KEYS)
    n = r.get(t, "n_trials", "refine", int, 10)
    r.check(n >= 1, "refine.n_trials", f"n_trials = {n}", "use 1 or more")
    return RefineSpec(enabled=r.get(t, "enabled", "refine", bool, False), n_trials=n)


def _parse_stages(r: _Reader, raw: Any, model: ModelSpec) -> tuple[StageSpec, ...]:
    if raw is _REQUIRED or (isinstance(raw, list) and not raw):
        raise r.fail("stages", "no stages", "add at least one [[stages]] table with params")
    if not isinstance(raw, list):
        raise r.fail(
            "stages",
            f"expected an array of tables, got {_kind(raw)}",
            "write each stage as [[stages]] (double brackets)",
        )
    stages: list[StageSpec] = []
    owner: dict[str, str] = {}
    for i, item in enumerate(raw):
        stage = _parse_stage(r, item, i)
        if any(s.name == stage.name for s in stages):
            raise r.fail(
                f"stages.{stage.name}",
                f"stage name {stage.name!r} is used twice",
                "give every stage a unique name",
            )
        for pname in stage.params:
            where = f"stages.{stage.name}.params.{_part(pname)}"
            if pname in owner:
                raise r.fail(
                    where,
                    f"parameter {pname!r} is already tuned in stage {owner[pname]!r}",
                    "tune each parameter in one stage only",
                )
            if pname in model.fixed:
                raise r.fail(
                    where,
                    f"parameter {pname!r} is also in [model.fixed]",
                    "a parameter is either tuned or fixed: remove one",
                )
            owner[pname] = stage.name
        stages.append(stage)
    return tuple(stages)


def _parse_stage(r: _Reader, raw: Any, index: int) -> StageSpec:
    name = raw.get("name") if isinstance(raw, Mapping) else None
    key = f"stages.{name}" if isinstance(name, str) and name else f"stages[{index}]"
    t = r.table(raw, key, _STAGE_KEYS)
    name = r.get(t, "name", key, str)
    r.check(
        bool(_NAME.match(name)),
        f"{key}.name",
        f"invalid stage name {name!r}",
        "start with a letter; use letters, digits, '_' or '-'",
    )
    n_random = r.get(t, "n_random", key, int, 8)
    n_bayes = r.get(t, "n_bayes", key, int, 16)
    r.check(
        n_random >= 1,
        f"{key}.n_random",
        f"n_random = {n_random}",
        "use 1 or more (the first trial measures the incumbent)",
    )
    r.check(n_bayes >= 0, f"{key}.n_bayes", f"n_bayes = {n_bayes}", "use 0 or more")
    max_fail = r.get(t, "max_fail", key, int, None)
    r.check(
        max_fail is None or max_fail >= 1,
        f"{key}.max_fail",
        f"max_fail = {max_fail}",
        "use 1 or more, or leave it out",
    )
    sampler = r.choice(t, "sampler", key, SAMPLER_NAMES, None) if "sampler" in t else None
    params_raw = t.get("params")
    if not isinstance(params_raw, Mapping) or not params_raw:
        raise r.fail(
            f"{key}.params",
            "stage has no parameters",
            f'add e.g. [{key}.params."optim.lr"] with type, low, high, default',
        )
    params = {
        str(p): _parse_param(r, v, str(p), f"{key}.params.{_part(str(p))}")
        for p, v in params_raw.items()
    }
    spec = StageSpec(name, params, n_random, n_bayes, sampler, max_fail)
    try:
        spec.to_stage()  # the engine's own checks, now, with the file and key in the message
    except SpecError as exc:
        raise r.fail(exc.key or key, exc.message, exc.hint or "fix the stage's parameters") from exc
    return spec


def _parse_param(r: _Reader, raw: Any, name: str, key: str) -> ParamSpec:
    if not isinstance(raw, Mapping):
        raise r.fail(
            key,
            f"expected a table, got {_kind(raw)}",
            'e.g. { type = "float", low = 1e-4, high = 1e-2, log = true, default = 1e-3 }',
        )
    ptype = r.choice(raw, "type", key, PARAM_TYPES)
    t = r.table(raw, key, _PARAM_KEYS[ptype])
    if "default" not in t:
        raise r.fail(
            f"{key}.default",
            f"parameter {name!r} has no default",
            "every parameter needs a default, used until its stage is tuned",
        )
    if ptype == "categorical":
        return _parse_categorical(r, t, name, key)
    kind: type | tuple[type, ...] = int if ptype == "int" else (int, float)
    low, high = r.get(t, "low", key, kind), r.get(t, "high", key, kind)
    log = r.get(t, "log", key, bool, False)
    step = r.get(t, "step", key, kind, None)
    default = r.get(t, "default", key, kind)
    r.check(low <= high, f"{key}.low", f"low = {low} > high = {high}", "swap low and high")
    r.check(
        math.isfinite(high - low),
        f"{key}.high",
        f"the range [{low}, {high}] is too wide to sample",
        "narrow it, or use log = true with low > 0",
    )
    r.check(
        not log or low > 0,
        f"{key}.low",
        f"log scale needs low > 0, got {low}",
        "raise low above 0 or remove log = true",
    )
    if step is not None:
        r.check(step > 0, f"{key}.step", f"step = {step}", "use a step > 0")
        r.check(
            step <= high - low or low == high,
            f"{key}.step",
            f"step = {step} is larger than the range [{low}, {high}]",
            "use a step that divides high - low",
        )
        r.check(
            not log, f"{key}.step", "step and log cannot be combined", "remove step or log = true"
        )
        r.check(
            _on_grid(high - low, step),
            f"{key}.high",
            f"high - low = {high - low} is not a multiple of step = {step}",
            f"set high to low + a multiple of {step}",
        )
    on_grid = step is None or _on_grid(default - low, step)
    r.check(
        low <= default <= high and on_grid,
        f"{key}.default",
        f"default {default} is outside [{low}, {high}]"
        if on_grid
        else f"default {default} is not on the step grid low + k * {step}",
        "choose a default inside the range (and on the step grid)",
    )
    if ptype == "float":  # `low = 0` in TOML is an integer; a float parameter wants floats
        low, high, default = float(low), float(high), float(default)
        step = float(step) if step is not None else None
    return ParamSpec(name, ptype, default, low, high, log, step)


def _parse_categorical(r: _Reader, t: Mapping[str, Any], name: str, key: str) -> ParamSpec:
    choices = r.get(t, "choices", key, list)
    r.check(bool(choices), f"{key}.choices", "empty choices", "list at least one choice")
    for i, c in enumerate(choices):
        r.value(c, f"{key}.choices[{i}]", (str, int, float, bool))
    r.check(
        len({(type(c), c) for c in choices}) == len(choices),
        f"{key}.choices",
        f"choices repeat: {choices}",
        "list each choice once",
    )
    default = t["default"]
    r.check(
        any(type(default) is type(c) and default == c for c in choices),
        f"{key}.default",
        f"default {default!r} is not one of the choices {choices}",
        'use one of the choices (same type: 32 and "32" differ)',
    )
    return ParamSpec(name, "categorical", default, choices=tuple(choices))


def _check_model_config(r: _Reader, spec: StudySpec) -> None:
    """Check parameter names and values against ``networks.config``, when importable.

    Every model (the baselines too) is trained from a ``ModelConfig``.
    """
    try:
        from networks.config import ModelConfig
        from networks.errors import ConfigError
    except ImportError:
        return
    valid = ModelConfig.param_names()
    for stage in spec.stages:
        for pname in stage.params:
            if pname not in valid:
                near = difflib.get_close_matches(pname, valid, n=1, cutoff=0.6)
                raise r.fail(
                    f"stages.{stage.name}.params.{_part(pname)}",
                    f"{pname!r} is not a parameter of the fusion network",
                    f"did you mean {near[0]!r}?"
                    if near
                    else "see networks.config.ModelConfig.param_names()",
                )
    for pname in spec.model.fixed:
        if pname not in valid:
            near = difflib.get_close_matches(pname, valid, n=1, cutoff=0.6)
            raise r.fail(
                f"model.fixed.{_part(pname)}",
                f"{pname!r} is not a network parameter",
                f"did you mean {near[0]!r}?" if near else "see ModelConfig.param_names()",
            )
    defaults = {p: ps.default for s in spec.stages for p, ps in s.params.items()}
    try:
        ModelConfig.from_params({**spec.model.fixed, **defaults})
    except ConfigError as exc:
        where = "model.fixed" if exc.key in spec.model.fixed else "stages"
        stage = next((s.name for s in spec.stages if exc.key in s.params), None)
        key = (
            f"stages.{stage}.params.{_part(exc.key)}.default"
            if stage
            else f"{where}.{_part(exc.key)}"
        )
        raise r.fail(key, f"the network rejects it: {exc}", exc.hint or "fix the value") from exc
    # Every value a trial can draw, not only the defaults: a bad choice or bound would
    # otherwise surface as failed trials mid-search. Ranges are checked at their ends (the
    # network's own checks are per field and monotone: a lower bound, an upper bound).
    base = ModelConfig.from_params(dict(spec.model.fixed))
    for stage in spec.stages:
        for pname, p in stage.params.items():
            where = f"stages.{stage.name}.params.{_part(pname)}"
            values = (
                [("choices", c) for c in p.choices]
                if p.type == "categorical"
                else [("low", p.low), ("high", p.high)]
            )
            for field_name, value in values:
                try:
                    ModelConfig.from_params({pname: value}, base)
                except ConfigError as exc:
                    shown = f"{value!r}" if field_name == "choices" else f"{field_name} = {value}"
                    raise r.fail(
                        f"{where}.{field_name}",
                        f"{shown}: the network rejects it ({exc})",
                        exc.hint
                        or (
                            "remove that choice"
                            if field_name == "choices"
                            else "narrow the range to values the network accepts"
                        ),
                    ) from exc


def _resolve_storage(r: _Reader, url: str | None, base: Path, name: str) -> str:
    """Default to ``<study dir>/<name>.db``; resolve relative file paths against the study."""
    if url is None:
        return f"sqlite:///{base / f'{name}.db'}"
    if "://" not in url:  # a bare file name, as make_storage accepts too
        path = r.output(url, "storage")
        if path.suffix in (".log", ".jsonl", ".journal"):
            return f"journal://{path}"
        return f"sqlite:///{path}"
    scheme = url.split("://", 1)[0].split("+", 1)[0]
    known = ("sqlite", "postgresql", "postgres", "mysql", "redis", "rediss", "journal")
    if scheme not in known:
        raise r.fail(
            "storage",
            f"unknown storage scheme {scheme!r}",
            "use sqlite:///file.db, postgresql://user@host/db, redis://host:6379/0 "
            "or journal:///file.log",
        )
    if scheme == "sqlite":
        path = url.split(":///", 1)[-1]
        if path in ("", ":memory:"):
            return url
        return f"{url.split(':///', 1)[0]}:///{r.output(path, 'storage')}"
    if scheme == "journal":
        # journal://rel/path is relative, journal:///abs/path absolute (as make_storage reads it)
        return f"journal://{r.output(url[len('journal://') :], 'storage')}"
    return url


def _resolve_path(base: Path, path: str) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else (base / p).resolve()


def _within(bounds: tuple[int, int]) -> Callable[[float], bool]:
    return lambda v: bounds[0] <= v <= bounds[1]


def _range_rule(bounds: tuple[int, int]) -> str:
    return f"an integer from {bounds[0]} to {bounds[1]}"


def _on_grid(span: float, step: float) -> bool:
    k = span / step
    return math.isclose(k, round(k), rel_tol=0, abs_tol=1e-8)


def _part(name: str) -> str:
    """A key part as TOML writes it: dotted parameter names are quoted."""
    return name if re.fullmatch(r"[A-Za-z0-9_\-]+", name) else f'"{name}"'


def _join(key: str, name: str) -> str:
    return f"{key}.{name}" if key else name


def _kind(value: Any) -> str:
    return {
        dict: "a table",
        list: "an array",
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
    }.get(type(value), type(value).__name__)


def _type_name(kind: type | tuple[type, ...]) -> str:
    names = {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "true or false",
        dict: "a table",
        list: "an array",
    }
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if set(kinds) == {int, float}:
        return "a number"
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _plain(value: Any) -> Any:
    """TOML-parsed data as plain dicts and lists (dates and times as ISO strings)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


__all__ = [
    "MAX_CYCLES",
    "METRICS",
    "MODELS",
    "OUTPUT_KEYS",
    "AshaSpec",
    "ModelSpec",
    "ParamSpec",
    "RefineSpec",
    "RunnerSpec",
    "StageSpec",
    "StudySpec",
    "load_study_file",
    "parse_study",
]
