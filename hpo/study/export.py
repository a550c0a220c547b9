"""The best configuration of a search, with provenance, as YAML or JSON.

The document's schema is :class:`hpo.study.export_doc.ExportDoc`; sizes (``dbn.hidden``) are
written as arrays, as a study file writes them.
"""

from __future__ import annotations

import json
import platform
import subprocess
from collections.abc import Mapping
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import yaml

from hpo.engine.atomic import write_text
from hpo.engine.context import HISTORY_ATTR
from hpo.engine.errors import ExportError
from hpo.engine.ledger import COPIED_ATTR
from hpo.engine.search import LayerwiseSearch, SearchResult
from hpo.engine.storage import mask_url
from hpo.study.objective import CURVE_ATTR
from hpo.study.schema import EXPORT_FORMAT, StudySpec, check_export
from networks.config import ModelConfig, parse_sizes
from networks.errors import ConfigError
from networks.metrics import pooled_threshold

FORMATS = {".yaml": "yaml", ".yml": "yaml", ".json": "json"}
_PACKAGES = ("landslide-hpo", "optuna", "torch", "scikit-optimize")


def export_best(
    search_or_result: LayerwiseSearch | SearchResult | StudySpec,
    path: str | Path,
    *,
    spec: StudySpec | None = None,
    fmt: str | None = None,
    data_hash: str | None = None,
) -> dict[str, Any]:
    """Write the merged best configuration of a search, ready to retrain, with provenance.

    The document holds the model section (name, the full ``networks`` config as a nested
    dict, and the flat best parameters), the data section and the folder its relative
    paths refer to, the metric and best value, and provenance: the search and stage
    study names, each stage's ledger trial number and value, the storage URL without its
    password, package versions, the data hash when given and the git commit of the code
    when it runs from a git checkout. It is written atomically (temporary file, then
    ``os.replace``), so a reader never sees half a file.

    Args:
        search_or_result: A :class:`~hpo.LayerwiseSearch` (its stored status is read), a
            search result, or a :class:`~hpo.study.schema.StudySpec` (its search is loaded from
            its storage).
        path: Output file; ``.yaml``/``.yml`` or ``.json`` choose the format.
        spec: The study file's spec, for the model and data sections (taken from
            ``search_or_result`` when that is a spec).
        fmt: ``"yaml"`` or ``"json"``, overriding the extension.
        data_hash: A hash of the prepared data (e.g. the cached cube's), recorded as is.

    Returns:
        The exported document.

    Raises:
        ExportError: Unknown format, or the file cannot be written.
    """
    path = Path(path)
    kind = _format(path, fmt)
    result, spec = _result_and_spec(search_or_result, spec)
    doc = _document(result, spec, data_hash)
    text = (
        json.dumps(doc, indent=2) + "\n"
        if kind == "json"
        else yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
    )
    try:
        write_text(path, text)
    except OSError as exc:
        raise ExportError(
            f"cannot write: {exc.strerror or exc}", path=str(path), hint="choose a writable folder"
        ) from exc
    return doc


def load_export(path: str | Path) -> dict[str, Any]:
    """Read a file written by :func:`export_best`.

    Args:
        path: The ``.yaml``/``.yml`` or ``.json`` file.

    Returns:
        The document; ``doc["model"]["config"]`` feeds
        ``networks.config.ModelConfig.from_dict``, ``doc["data"]`` and
        ``doc["data_base_dir"]`` feed the data preparation.

    Raises:
        ExportError: The file is missing, unreadable, not an export, or a key of it is
            invalid (:class:`~hpo.study.export_doc.ExportDoc`).
    """
    path = Path(path)
    if path.suffix.lower() == ".toml":
        # the step before: a study file holds ranges, an export the values tuning chose
        raise ExportError(
            "is a study file, not an export of its best configuration",
            path=str(path),
            hint=f"run `hpo export {path} -o best.yaml` first (after `hpo tune`), then "
            "`hpo train best.yaml`",
        )
    if path.suffix.lower() not in FORMATS:
        raise ExportError(
            f"cannot tell the format from {path.suffix or 'no extension'!r}",
            path=str(path),
            hint="pass the .yaml or .json file that `hpo export` writes",
        )
    try:
        text = path.read_text(encoding="utf-8")
        doc = json.loads(text) if _format(path, None) == "json" else yaml.safe_load(text)
    except OSError as exc:
        raise ExportError(
            f"cannot read: {exc.strerror or exc}",
            path=str(path),
            hint="check the path; `hpo export STUDY.toml -o best.yaml` writes one",
        ) from exc
    except (json.JSONDecodeError, yaml.YAMLError, UnicodeDecodeError) as exc:
        # safe_load refuses !!python/... tags, so a hostile export cannot run code here
        raise ExportError(
            f"not valid {_format(path, None).upper()}: {' '.join(str(exc).split())}",
            path=str(path),
            hint="re-export it with `hpo export`",
        ) from exc
    if not isinstance(doc, Mapping) or doc.get("format") != EXPORT_FORMAT:
        raise ExportError(
            f"not a best-configuration export (no format: {EXPORT_FORMAT})",
            path=str(path),
            hint="write one with `hpo export`",
        )
    check_export(doc, str(path))
    return dict(doc)


def _format(path: Path, fmt: str | None) -> str:
    if fmt is not None:
        if fmt not in ("yaml", "json"):
            raise ExportError(
                f"unknown format {fmt!r}", path=str(path), hint="use fmt='yaml' or fmt='json'"
            )
        return fmt
    if path.suffix.lower() not in FORMATS:
        raise ExportError(
            f"cannot tell the format from {path.suffix or 'no extension'!r}",
            path=str(path),
            hint="name it .yaml, .yml or .json, or pass fmt",
        )
    return FORMATS[path.suffix.lower()]


def _result_and_spec(source: Any, spec: StudySpec | None) -> tuple[SearchResult, StudySpec | None]:
    if isinstance(source, StudySpec):
        spec = spec or source
        source = LayerwiseSearch.load(source.storage, source.name)
    if isinstance(source, LayerwiseSearch):
        source = source.status()
    if not isinstance(source, SearchResult):
        raise ExportError(
            f"cannot export a {type(source).__name__}",
            hint="pass a LayerwiseSearch, its result, or a StudySpec",
        )
    return source, spec


def _document(result: SearchResult, spec: StudySpec | None, data_hash: str | None) -> dict:
    fixed = dict(spec.model.fixed) if spec is not None else {}
    params = {**fixed, **result.best_params}
    model: dict[str, Any] = {
        "name": spec.model.name if spec is not None else None,
        "params": _written(params),
    }
    config = _network_config(params)
    if config is not None:
        model["config"] = config
    spec_dict = spec.to_dict() if spec is not None else None
    decided = _threshold_decision(result)
    return {
        "format": EXPORT_FORMAT,
        "search": result.study_name,
        "metric": spec.metric if spec is not None else None,
        # the split and every trial's training used it; retraining needs the same one
        "seed": spec.seed if spec is not None else None,
        "direction": result.direction,
        "best_value": result.best_value,
        "estimate": _estimate(result),
        # what `hpo predict` would cut at for the tuned model
        "validation_threshold": _validation_threshold(result, decided),
        "threshold": decided,
        "finished": result.finished,
        "model": model,
        "data": spec_dict["data"] if spec_dict else None,
        "data_base_dir": str(spec.base_dir) if spec is not None else None,
        "provenance": {
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "study_file": str(spec.file) if spec is not None and spec.file else None,
            "spec_fingerprint": spec.fingerprint() if spec is not None else None,
            "storage": mask_url(result.storage),
            "stages": [_stage_entry(s) for s in result.stages],
            "data_hash": data_hash,
            "versions": _versions(),
            "git": _git_commit(Path(__file__).resolve().parent),
        },
    }


def _estimate(result: SearchResult) -> dict[str, Any] | None:
    """The best value as an estimate: mean, standard error, replicates, the stage's noise."""
    finished = [s.ledger for s in result.stages if s.ledger is not None]
    if not finished:
        return None
    ledger = finished[-1]
    return {
        "value": ledger.value,
        "se": ledger.se,
        "n": len(ledger.replicates),
        "replicates": list(ledger.replicates),
        "noise_sd": (ledger.noise or {}).get("sd"),
    }


def _threshold_decision(result: SearchResult) -> dict[str, Any] | None:
    """The decision threshold chosen on the best trial's replicates, kept only if it holds.

    See :func:`networks.metrics.pooled_threshold`; ``None`` unless the best trial has F1
    curves of two replicates or more (single runs, searches stored before curves were
    kept, custom objectives).
    """
    trial = _best_run_trial(result)
    curves = trial.user_attrs.get(CURVE_ATTR) if trial is not None else None
    if not curves or not isinstance(curves[0], list) or len(curves) < 2:
        # One run cannot show that its cut holds out of sample: the plain behaviour
        # (that run's validation threshold) stays, as before replicates existed.
        return None
    return pooled_threshold(curves)


def _best_run_trial(result: SearchResult) -> Any:
    """The best trial of the last finished stage, copies followed back to the trial that ran."""
    finished = [s for s in result.stages if s.ledger is not None]
    trial = finished[-1].best_trial if finished else None
    studies = {s.study_name: s.study for s in result.stages if s.study is not None}
    for _ in range(len(result.stages)):  # a copy chain is at most one step per stage
        copied = trial.user_attrs.get(COPIED_ATTR) if trial is not None else None
        if not copied:
            break
        study = studies.get(copied.get("study"))
        trials = study.get_trials(deepcopy=False) if study is not None else []
        trial = next((t for t in trials if t.number == copied.get("trial")), None)
    return trial


def _validation_threshold(result: SearchResult, decided: dict[str, Any] | None) -> float | None:
    """The threshold to cut at: the pooled decision, else the best trial's last epoch's.

    A stage's incumbent is a copy of the previous stage's best (``hpo:copied_from``)
    without a history of its own, so copies are followed back to the trial that ran.

    Args:
        result: The search.
        decided: :func:`_threshold_decision` of the search (``None`` for single runs).

    Returns:
        The threshold, or ``None`` when no finished stage's trial reported one.
    """
    if decided is not None:
        return float(decided["threshold"])
    trial = _best_run_trial(result)
    history = trial.user_attrs.get(HISTORY_ATTR) if trial is not None else None
    value = history[-1].get("threshold") if history else None
    return float(value) if isinstance(value, int | float) else None


def _network_config(params: Mapping[str, Any]) -> dict[str, Any] | None:
    """The full networks config for these parameters, or None when they are not one."""
    try:
        return ModelConfig.from_params(params).to_dict()
    except ConfigError:
        return None  # a search over a custom objective: its params are not a network's


def _stage_entry(stage: Any) -> dict[str, Any]:
    ledger = stage.ledger
    return {
        "name": stage.name,
        "study_name": stage.study_name,
        "cycle": stage.cycle,
        "state": stage.state,
        "trial_number": ledger.trial_number if ledger else None,
        "value": ledger.value if ledger else None,
        "params": _written(ledger.params) if ledger else None,
        "n_complete": stage.n_complete,
    }


def _versions() -> dict[str, str | None]:
    # Metadata only: importing torch just to read its version would cost seconds.
    found: dict[str, str | None] = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def _git_commit(where: Path) -> dict[str, Any] | None:
    """The commit of the checkout the code runs from, and whether it has local changes."""
    try:
        run = {"cwd": where, "capture_output": True, "text": True, "timeout": 10}
        head = subprocess.run(["git", "rev-parse", "HEAD"], check=True, **run).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain"], check=True, **run).stdout
    except (OSError, subprocess.SubprocessError):
        return None  # not a git checkout (an installed wheel) or no git: nothing to record
    return {"commit": head, "dirty": bool(status.strip())}


def _written(params: Mapping[str, Any]) -> dict[str, Any]:
    """Parameters as a study file writes them: sizes as arrays, not as a trial's ``"32,16"``."""
    sizes = ModelConfig.sequence_params()
    return {
        str(k): list(parse_sizes(v)) if k in sizes else _plain(v) for k, v in params.items()
    }


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


__all__ = ["EXPORT_FORMAT", "export_best", "load_export"]
