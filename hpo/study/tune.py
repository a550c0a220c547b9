"""A study file, end to end: spec -> data -> datasets -> objective -> layer-wise search.

This is the one place that joins :mod:`hpo.study.schema`, :mod:`data`, :mod:`networks` and the
engine; the ``hpo`` command line is a thin layer over it::

    from hpo.study import load_study, ensure_scene, prepare_data, make_objective, make_search

    spec = load_study("studies/quickstart.toml")
    ensure_scene(spec)                     # generates a [data.synthetic] scene if missing
    tuning = prepare_data(spec)            # the cube once; train / val only, no test
    search = make_search(spec, make_objective(spec, tuning))
    result = search.run()                  # resumes whatever the storage holds
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import optuna

from hpo.engine.errors import HPOError, SearchNotFoundError
from hpo.engine.runners import RunPlan
from hpo.engine.search import SEARCH_ATTR, LayerwiseSearch
from hpo.engine.stage import Refine
from hpo.engine.storage import make_storage, mask_url
from hpo.study.objective import NetworkObjective
from hpo.study.prepare import TuningData, validation_of
from hpo.study.scene import data_section, scene_file, synthetic_settings
from hpo.study.schema import RunnerSpec, StudySpec

# ---------------------------------------------------------------------- objective, search


def set_threads(spec: StudySpec) -> int:
    """Give torch as many threads as a trial has CPUs (``[runner] cpu``), for local runs.

    Returns:
        The thread count set.
    """
    import torch  # here: torch costs seconds that `hpo status` never needs

    threads = max(1, int(math.floor(spec.runner.cpu)))
    threads = min(threads, os.cpu_count() or threads)
    torch.set_num_threads(threads)
    return threads


def make_objective(spec: StudySpec, tuning: TuningData, *, device: str | None = None) -> Any:
    """The network objective: merged params -> networks config -> ``networks.train`` -> metric.

    Args:
        spec: The study (model name, ``[model.fixed]``, metric, seed).
        tuning: The prepared data.
        device: Where to train (default: CUDA when available).

    Returns:
        A :class:`hpo.NetworkObjective`, wrapped as ``[runner]`` plans it
        (:meth:`~hpo.engine.runners.RunPlan.objective`: in a child process per trial when
        local trials run isolated one at a time; wrapped here, so what the command line
        wraps around it for its progress display stays in this process).
    """
    from networks.config import ModelConfig  # here: networks imports torch (seconds)

    objective = NetworkObjective(
        tuning.train_set,
        tuning.val_set,
        model=spec.model.name,
        metric=spec.metric,
        base_config=ModelConfig.from_params(dict(spec.model.fixed)),
        device=device,
        seed=spec.seed,
        folds=tuning.folds,
    )
    return RunPlan.of(spec.runner).objective(objective)


def make_refine(spec: StudySpec) -> Any:
    """The engine's :class:`~hpo.Refine` for ``[refine]`` (``None`` when disabled).

    ``n_trials`` counts every refine trial: the incumbent plus ``n_trials - 1`` Bayesian
    ones (at least one).
    """
    if not spec.refine.enabled:
        return None
    return Refine(n_random=1, n_bayes=max(1, spec.refine.n_trials - 1))


def make_runner(runner: RunnerSpec) -> Any:
    """The runner ``[runner]`` asks for: ``"local"``, a configured local runner, or Ray."""
    return RunPlan.of(runner).runner()


def make_search(
    spec: StudySpec,
    objective: Any = None,
    *,
    callbacks: Sequence[Callable[..., None]] = (),
    storage: Any = None,
) -> Any:
    """The :class:`~hpo.LayerwiseSearch` of a study.

    Args:
        spec: The study.
        objective: The objective; ``None`` for a search only inspected (status, export).
        callbacks: ``callback(study, frozen_trial)`` after every finished trial.
        storage: Overrides ``spec.storage`` (a URL or an Optuna storage).

    Returns:
        The search.
    """
    return LayerwiseSearch(
        spec.to_stages(),
        objective,
        direction=spec.direction,
        storage=spec.storage if storage is None else storage,
        study_name=spec.name,
        sampler=spec.sampler,
        runner=make_runner(spec.runner) if objective is not None else "local",
        seed=spec.seed,
        refine=make_refine(spec),
        artifact_store=spec.artifacts if objective is not None else None,
        callbacks=callbacks,
        metric=spec.metric,
        spec_fingerprint=spec.fingerprint(),
        replication=spec.tuning.replication(),
        strategy=spec.strategy,
        pruner=make_pruner(spec),
        cycles=spec.cycles,
    )


def make_pruner(spec: StudySpec) -> Any:
    """``[tuning] prune``: Optuna's median rule on the trials' learning curves, or ``None``.

    Trials may stop after half their epochs (``optim.epochs`` of ``[model.fixed]``, else
    the network's default) once the stage has as many finished trials as its random
    phase; earlier, there is no median worth the name.
    """
    if not spec.tuning.prune:
        return None
    from networks.config import ModelConfig  # here: networks imports torch (seconds)

    epochs = ModelConfig.from_params(dict(spec.model.fixed)).optim.epochs
    startup = min(stage.n_random for stage in spec.stages)
    return optuna.pruners.MedianPruner(n_startup_trials=startup,
                                       n_warmup_steps=max(1, epochs // 2))


def stage_names(spec: StudySpec) -> list[str]:
    """The search's stage labels in run order (later passes, refine included)."""
    return list(make_search(spec, storage=optuna.storages.InMemoryStorage()).stage_names)


# ---------------------------------------------------------------------- reading results


def storage_exists(url: str) -> bool:
    """Whether a file storage already exists (server storages always count as existing)."""
    path = storage_file(url)
    return path is None or path.exists()


def storage_file(url: str) -> Path | None:
    """The file behind a ``sqlite:///`` or ``journal://`` URL, else ``None``."""
    if url.startswith("sqlite:///"):
        rest = url[len("sqlite:///") :].split("?", 1)[0]
        return None if rest in ("", ":memory:") else Path(rest)
    if url.startswith("journal://"):
        return Path(url[len("journal://") :])
    return None


def study_status(spec: StudySpec) -> Any:
    """The stored state of a study's search, without creating a storage that is not there.

    Returns:
        A :class:`~hpo.SearchResult`; every stage ``pending`` when nothing was run yet.
    """
    if not storage_exists(spec.storage):
        memory = optuna.storages.InMemoryStorage()
        result = make_search(spec, storage=memory).status()  # nothing stored: all pending
        result.storage = mask_url(spec.storage)
        return result
    return make_search(spec).status()


def search_names(url: str) -> list[str]:
    """The names of the layer-wise searches stored in a storage."""
    storage = make_storage(url)
    names = {(s.user_attrs.get(SEARCH_ATTR) or {}).get("name") for s in storage.get_all_studies()}
    return sorted(n for n in names if n)


def load_search(url: str, study_name: str | None = None) -> Any:
    """A stored search by storage URL (and name, needed when the storage holds several).

    Raises:
        SearchNotFoundError: No such search.
        HPOError: The storage holds several searches and no name was given.
    """
    if study_name is None:
        names = search_names(url)
        if not names:
            raise SearchNotFoundError("<any>", mask_url(url))
        if len(names) > 1:
            raise HPOError(
                f"{mask_url(url)} holds several searches: {', '.join(names)} "
                f"(hint: pick one with --study NAME)"
            )
        study_name = names[0]
    return LayerwiseSearch.load(url, study_name)


def result_to_dict(result: Any) -> dict[str, Any]:
    """A :class:`~hpo.SearchResult` as JSON-able data (``hpo status --json``)."""
    stages = []
    for s in result.stages:
        best = s.best_trial
        ledger = s.ledger
        stages.append(
            {
                "index": s.index,
                "name": s.name,
                "study_name": s.study_name,
                "state": s.state,
                "budget": s.budget,
                "complete": s.n_complete,
                "failed": s.n_fail,
                "pruned": s.n_pruned,
                "running": s.n_running,
                "best_value": best.value if best is not None else None,
                "best_trial": best.number if best is not None else None,
                "best_params": dict(best.params) if best is not None else None,
                "ledger": ledger.to_dict() if ledger is not None else None,
            }
        )
    return _jsonable(
        {
            "search": result.study_name,
            "storage": mask_url(result.storage),
            "direction": result.direction,
            "finished": result.finished,
            "best_value": result.best_value,
            "best_params": result.best_params,
            "stages": stages,
        }
    )


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


# ---------------------------------------------------------------------------- the plan


def plan(spec: StudySpec) -> dict[str, Any]:
    """What ``hpo tune`` would do, as plain data (``hpo tune --dry-run``)."""
    stages = []
    for stage in spec.stages:
        stages.append(
            {
                "name": stage.name,
                "n_random": stage.n_random,
                "n_bayes": stage.n_bayes,
                "budget": stage.n_random + stage.n_bayes,
                "sampler": stage.sampler or spec.sampler,
                "max_fail": stage.max_fail,
                "params": {name: p.to_dict() for name, p in stage.params.items()},
            }
        )
    refine = make_refine(spec)
    memory = optuna.storages.InMemoryStorage()
    runs = [
        {"name": s.name, "study_name": s.study_name, "budget": s.budget}
        for s in make_search(spec, storage=memory).status().stages
    ]
    total = sum(r["budget"] for r in runs)
    scene = scene_file(spec)
    return {
        "study": spec.name,
        "file": str(spec.file) if spec.file else None,
        "fingerprint": spec.fingerprint(),
        "storage": mask_url(spec.storage),
        "artifacts": str(spec.artifacts),
        "metric": spec.metric,
        "direction": spec.direction,
        "seed": spec.seed,
        "sampler": spec.sampler,
        "cycles": spec.cycles,
        "model": {"name": spec.model.name, "fixed": dict(spec.model.fixed)},
        "runner": dataclasses.asdict(spec.runner),
        "data": {
            "scene": str(scene) if scene else None,
            "scene_exists": scene.is_file() if scene else None,
            "synthetic": synthetic_settings(spec),
            **{k: v for k, v in data_section(spec).items() if k != "scene"},
        },
        "stages": stages,
        "refine": {"n_trials": refine.n_random + refine.n_bayes} if refine else None,
        "runs": runs,
        "total_trials": total,
        "validation": validation_of(spec),
        "tuning": dataclasses.asdict(spec.tuning),
    }


__all__ = [
    "load_search",
    "make_objective",
    "make_pruner",
    "make_refine",
    "make_runner",
    "make_search",
    "plan",
    "result_to_dict",
    "search_names",
    "set_threads",
    "stage_names",
    "storage_exists",
    "storage_file",
    "study_status",
]
