"""Layer-wise hyperparameter optimization: stages tuned in order, random then Bayesian.

Two parts: :mod:`hpo.engine`, the generic layer-wise search on Optuna, and
:mod:`hpo.study`, the landslide application that joins it to ``networks`` and ``data``;
:mod:`hpo.cli` is the ``hpo`` command.

The public API::

    from hpo import Stage, LayerwiseSearch, TrialContext
"""

import importlib
from typing import Any

from hpo import engine
from hpo.engine import *  # noqa: F403 - the engine's public names, listed in hpo.engine.__all__
from hpo.study.objective import NetworkObjective
from hpo.study.schema import StudySpec, load_study_file

# Imported on first use: they pull in scikit-optimize, torch or matplotlib, which commands
# such as `hpo status` never need.
_LAZY = {
    "SkoptSampler": "hpo.engine.samplers.skopt",
    "export_best": "hpo.study.export",
    "load_export": "hpo.study.export",
    "train_export": "hpo.study.retrain",
    "predict_scene": "hpo.study.predict",
    "outside_training": "data.shift",
    "write_report": "hpo.study.report",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hpo' has no attribute {name!r}")


__all__ = [*engine.__all__, "NetworkObjective", "StudySpec", "load_study_file", *_LAZY]
