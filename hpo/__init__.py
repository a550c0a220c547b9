"""Layer-wise hyperparameter optimization: stages tuned in order, random then Bayesian.

The public API::

    from hpo import Stage, LayerwiseSearch, TrialContext
"""

from hpo.context import TrialContext
from hpo.errors import (
    HPOError,
    SearchNotFoundError,
    SpecError,
    StageChangedError,
    StageFailedError,
    StorageError,
)
from hpo.layerwise import LayerwiseSearch, SearchResult, StageResult
from hpo.ledger import Ledger
from hpo.objective import NetworkObjective
from hpo.runners import LocalRunner, Runner, make_runner
from hpo.samplers import make_sampler
from hpo.stage import Refine, Stage
from hpo.storage import make_artifact_store, make_storage, mask_url

__all__ = [
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
    "StorageError",
    "TrialContext",
    "make_artifact_store",
    "make_runner",
    "make_sampler",
    "make_storage",
    "mask_url",
]
