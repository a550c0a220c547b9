"""Study files (``studies/*.toml``) and exported configurations as one typed (pydantic) schema.

The spec classes are frozen pydantic dataclasses: their fields' types, bounds and literals
validate a study file, ``extra="forbid"`` refuses a key they do not know, and the
``[data]`` section is checked against :class:`data.section.DataSection`. Every mistake a
user can make raises a :class:`~hpo.engine.errors.SpecError` that names the file, the dotted
key and a hint; an unknown key names the nearest valid one (one reading of pydantic's
errors: :func:`networks.errors.explain`). :class:`ExportDoc` is the exported best
configuration (``hpo export``), its ``data`` the same section.

This module holds :class:`StudySpec` (the whole file and what its tables mean together)
and reads study files (:func:`load_study_file`, :func:`parse_study`); the parts live in
their own modules, and every name is importable from here:

- :mod:`hpo.study.fields`: vocabularies (:data:`METRICS`, :data:`MODELS`), shared field
  types and the error of a rule;
- :mod:`hpo.study.params`: a tuned parameter (:data:`ParamSpec`) in its three forms;
- :mod:`hpo.study.sections`: the sections (:class:`StageSpec`, :class:`RunnerSpec`, ...);
- :mod:`hpo.study.paths`: reading the file, the paths it names and the folders it may
  write into (:data:`OUTPUT_KEYS`, :func:`allowed_outside`);
- :mod:`hpo.study.export_doc`: the exported configuration (:class:`ExportDoc`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import asdict, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    StrictStr,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.dataclasses import dataclass
from pydantic_core import ArgsKwargs, PydanticCustomError

from data.section import DataSection
from hpo.engine.errors import SpecError
from hpo.engine.samplers import SAMPLER_NAMES
from hpo.engine.space import fingerprint as _hash
from hpo.engine.stage import Stage
from hpo.engine.strategy import STRATEGIES
from hpo.study.export_doc import EXPORT_FORMAT, ExportDoc, ExportModel, check_export
from hpo.study.fields import (
    METRICS,
    MODELS,
    RUNNERS,
    STUDY_CONFIG,
    Checked,
    Float,
    Int,
    Loc,
    fail,
    named,
    toml_key,
)
from hpo.study.params import (
    PARAM_TYPES,
    CategoricalParam,
    Choice,
    FloatParam,
    IntParam,
    ParamSpec,
    check_with_network,
    optuna_value,
)
from hpo.study.paths import (
    ALLOW_OUTSIDE_ENV,
    OUTPUT_KEYS,
    StudyContext,
    allowed_outside,
    read_study_file,
    resolve_path,
)
from hpo.study.sections import (
    AshaSpec,
    CompareTable,
    ModelSpec,
    RefineSpec,
    RunnerSpec,
    StageSpec,
    TuningSpec,
)

MAX_CYCLES = 100
"""Most passes over the stages a study may ask for (more is surely a typo)."""

# Keys that never change what a search explores, so editing them keeps its fingerprint.
_NOT_FINGERPRINTED = ("storage", "artifacts", "runner", "description", "compare")

# `networks` is imported where it is used: the package imports torch (seconds), which
# `import hpo` (the engine's users, `hpo status`) must not pay for.


@dataclass(frozen=True, config=STUDY_CONFIG)
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

    name: Annotated[StrictStr, named("study")]
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
        """A study file's tables (validated with a context), its defaults filled in."""
        where = info.context
        if not isinstance(where, StudyContext) or isinstance(data, ArgsKwargs):
            return data
        from networks.errors import kind_of, unknown_key

        if not isinstance(data, Mapping):
            raise fail(f"expected a table, got {kind_of(data)}", "write the study in TOML")
        if "file" in data:  # the one field that is not a key of the file
            allowed = [f for f in cls.__dataclass_fields__ if f != "file"]
            raise fail(*unknown_key("file", "", allowed), ("file",))
        if "data" not in data:
            raise fail(
                "missing [data] section",
                'add [data] with scene = "path/to/scene.toml" or format = "geotiff" '
                "and the sources (see studies/quickstart.toml)",
                ("data",),
            )
        stages = data.get("stages", [])
        if stages == []:
            raise fail("no stages", "add at least one [[stages]] table with params",
                       ("stages",))
        if not isinstance(stages, list):
            raise fail(
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
        if not isinstance(where, StudyContext) or not isinstance(url, str | None):
            return url
        return where.storage_url(url, info.data.get("name"))

    @field_validator("artifacts", mode="before")
    @classmethod
    def _resolve_artifacts(cls, path: Any, info: ValidationInfo) -> Any:
        where = info.context
        if not isinstance(where, StudyContext):
            return path
        if path is None:
            path = f"artifacts/{info.data.get('name')}"
        if not isinstance(path, str):
            from networks.errors import kind_of

            raise fail(f"expected a string, got {kind_of(path)} {path!r}",
                       "write artifacts as a string")
        return where.output(path, "artifacts")

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> StudySpec:
        """What the tables mean together, for a study file (validated with a context)."""
        where = info.context
        if not isinstance(where, StudyContext):
            return self
        if self.direction != "maximize":
            raise fail(
                f"{self.metric} is better when higher, so minimizing it would find the worst "
                "model",
                "remove direction or set 'maximize'",
                ("direction",),
            )
        self._check_stages()
        self._check_data(where)
        if self.tuning.folds and "folds" in self.data and not self.outer_test_folds:
            # with fold_role = "test" the tuning folds nest inside the outer training folds
            raise fail(
                "[tuning] folds and [data] folds (validation folds) are both set",
                "keep [tuning] folds (every fold is a replicate of each trial) and drop "
                '[data] folds / fold, or set fold_role = "test" to tune on folds inside '
                "an outer test fold",
                ("tuning", "folds"),
            )
        check_with_network([stage.params for stage in self.stages], self.model.fixed)
        return self

    def _check_stages(self) -> None:
        owner: dict[str, str] = {}
        for i, stage in enumerate(self.stages):
            if any(s.name == stage.name for s in self.stages[:i]):
                raise fail(f"stage name {stage.name!r} is used twice",
                           "give every stage a unique name", ("stages", i))
            for pname in stage.params:
                key = ("stages", i, "params", pname)
                if pname in owner:
                    raise fail(
                        f"parameter {pname!r} is already tuned in stage {owner[pname]!r}",
                        "tune each parameter in one stage only",
                        key,
                    )
                if pname in self.model.fixed:
                    raise fail(f"parameter {pname!r} is also in [model.fixed]",
                               "a parameter is either tuned or fixed: remove one", key)
                owner[pname] = stage.name

    def _check_data(self, where: StudyContext) -> None:
        if "scene" in self.data:
            scene = resolve_path(where.base, self.data["scene"])
            if where.check_paths and not scene.is_file():
                raise fail(
                    f"scene file {str(scene)!r} does not exist",
                    f"generate it with `hpo synth {scene.parent}` or fix the path "
                    "(relative to the study file)",
                    ("data", "scene"),
                )
        if "cache_dir" in self.data:
            try:
                where.output(self.data["cache_dir"], "data.cache_dir", parent_ok=True)
            except PydanticCustomError as exc:
                raise fail(exc.message(), (exc.context or {}).get("hint"),
                           ("data", "cache_dir")) from exc

    @property
    def outer_test_folds(self) -> bool:
        """Whether ``[data]`` folds rotate the test split (``fold_role = "test"``).

        The study is then one outer fold, and ``[tuning] folds`` are dealt inside its
        training part.
        """
        return "folds" in self.data and self.data.get("fold_role") == "test"

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
        tuning = {"tuning": {k: v for k, v in asdict(self.tuning).items() if v is not None}
                  } if self.tuning != TuningSpec() else {}
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
                    p["choices"] = [optuna_value(c) for c in p["choices"]]
                    p["default"] = optuna_value(p["default"])
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
    raw = read_study_file(path)
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
    where = StudyContext(
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

        issue = explain(exc, StudySpec, lambda loc: toml_key(loc, raw))
        raise SpecError(
            issue.message,
            file=str(file_path) if file_path else "<study>",
            key=toml_key(issue.loc, raw) or None,
            hint=issue.hint,
        ) from exc


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
    "ALLOW_OUTSIDE_ENV",
    "EXPORT_FORMAT",
    "MAX_CYCLES",
    "METRICS",
    "MODELS",
    "OUTPUT_KEYS",
    "PARAM_TYPES",
    "RUNNERS",
    "AshaSpec",
    "CategoricalParam",
    "Checked",
    "Choice",
    "CompareTable",
    "ExportDoc",
    "ExportModel",
    "Float",
    "FloatParam",
    "Int",
    "IntParam",
    "Loc",
    "ModelSpec",
    "ParamSpec",
    "RefineSpec",
    "RunnerSpec",
    "StageSpec",
    "StudySpec",
    "TuningSpec",
    "allowed_outside",
    "check_export",
    "load_study_file",
    "parse_study",
]
