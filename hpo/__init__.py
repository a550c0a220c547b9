"""Layer-wise hyperparameter optimization: stages tuned in order, random then Bayesian.

The public API::

    from hpo import Stage, LayerwiseSearch, TrialContext
"""

from typing import Any

from hpo.context import TrialContext
from hpo.errors import (
    ExportError,
    HPOError,
    SearchNotFoundError,
    SpecError,
    StageChangedError,
    StageFailedError,
    StorageError,
    TrialFaultError,
)
from hpo.layerwise import LayerwiseSearch, SearchResult, StageResult
from hpo.ledger import Ledger
from hpo.objective import NetworkObjective
from hpo.runners import LocalRunner, Runner, make_runner
from hpo.samplers import make_sampler
from hpo.spec import StudySpec, load_study_file
from hpo.stage import Refine, Stage
from hpo.storage import make_artifact_store, make_storage, mask_url

# Imported on first use: they pull in scikit-optimize, torch or matplotlib, which commands
# such as `hpo status` never need.
_LAZY = {
    "SkoptSampler": "hpo.samplers.skopt",
    "export_best": "hpo.export",
    "load_export": "hpo.export",
    "train_export": "hpo.retrain",
    "predict_scene": "hpo.predict",
    "outside_training": "hpo.shift",
    "write_report": "hpo.report",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hpo' has no attribute {name!r}")


__all__ = [
    "ExportError",
    "HPOError",
    "LayerwiseSearch",
    "Ledger",
    "LocalRunner",
    "NetworkObjective",
    "Refine",
    "Runner",
    "SearchNotFoundError",
    "SearchResult",
    "SpecError",
    "Stage",
    "StageChangedError",
    "StageFailedError",
    "StageResult",
    "SkoptSampler",
    "StorageError",
    "StudySpec",
    "TrialContext",
    "TrialFaultError",
    "export_best",
    "load_export",
    "load_study_file",
    "make_artifact_store",
    "make_runner",
    "make_sampler",
    "make_storage",
    "mask_url",
    "outside_training",
    "predict_scene",
    "train_export",
    "write_report",
]
