"""The exported best configuration (``hpo export``) as a typed schema.

:class:`ExportDoc` is the document :mod:`hpo.study.export` writes and
:func:`~hpo.study.export.load_export` reads; its ``data`` is the study's ``[data]``
section, checked as a study file's is, and its ``model.config`` the network's
configuration (:class:`networks.config.ModelConfig`).
Errors name the key at fault as :func:`~hpo.study.fields.toml_key` writes it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from data.section import DataSection
from hpo.engine.errors import ExportError
from hpo.study.fields import METRICS, MODELS, Checked, fail, toml_key

EXPORT_FORMAT = "landslide-hpo/best-config/1"
"""The ``format`` of an exported best configuration."""

# `networks` is imported where it is used: the package imports torch (seconds), which
# `import hpo` (the engine's users, `hpo status`) must not pay for.


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
                raise fail(exc.message, exc.hint or "re-export it with `hpo export`",
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
        raise ExportError(f"[{toml_key(issue.loc, doc)}] {issue.message}", path=source,
                          hint=issue.hint or "re-export it with `hpo export`") from exc



__all__ = ["EXPORT_FORMAT", "ExportDoc", "ExportModel", "check_export"]
