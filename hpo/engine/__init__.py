"""The layer-wise engine: stages tuned in order on Optuna, random search then Bayesian.

Generic: it knows trials, stages, storages and runners, never landslides, rasters or
networks (an import contract checks that it imports neither ``networks`` nor ``data``
nor the application in :mod:`hpo.study`)::

    from hpo.engine import LayerwiseSearch, Stage

    search = LayerwiseSearch(stages=[Stage("a", {...}, defaults={...})], objective=f)
    result = search.run()
"""

from hpo.engine.context import TrialContext
from hpo.engine.errors import (
    ExportError,
    HPOError,
    SearchNotFoundError,
    SpecError,
    StageChangedError,
    StageFailedError,
    StorageError,
    TrialFaultError,
)
from hpo.engine.ledger import Ledger
from hpo.engine.runners import LocalRunner, Runner, make_runner
from hpo.engine.samplers import make_sampler
from hpo.engine.search import LayerwiseSearch, SearchResult, StageResult
from hpo.engine.stage import Refine, Stage
from hpo.engine.storage import make_artifact_store, make_storage, mask_url

__all__ = [
    "ExportError",
    "HPOError",
    "LayerwiseSearch",
    "Ledger",
    "LocalRunner",
    "Refine",
    "Runner",
    "SearchNotFoundError",
    "SearchResult",
    "SpecError",
    "Stage",
    "StageChangedError",
    "StageFailedError",
    "StageResult",
    "StorageError",
    "TrialContext",
    "TrialFaultError",
    "make_artifact_store",
    "make_runner",
    "make_sampler",
    "make_storage",
    "mask_url",
]
