"""The landslide application: a study file joined to the engine, the networks and the data.

``hpo.engine`` knows nothing of landslides; this package reads a study file and its scene
(:mod:`~hpo.study.schema`, :mod:`~hpo.study.scene`), prepares its data
(:mod:`~hpo.study.prepare`), builds and runs the layer-wise search
(:mod:`~hpo.study.tune`, :mod:`~hpo.study.objective`), and exports, retrains, predicts,
compares and reports (one module each)::

    from hpo import study

    spec = study.load_study("studies/quickstart.toml")
    study.ensure_scene(spec)
    search = study.make_search(spec, study.make_objective(spec, study.prepare_data(spec)))
    result = search.run()
"""

# The package's names are its modules' public names (each module's __all__).
from hpo.study import prepare, scene, tune
from hpo.study.prepare import *  # noqa: F403
from hpo.study.scene import *  # noqa: F403
from hpo.study.tune import *  # noqa: F403

__all__ = [*prepare.__all__, *scene.__all__, *tune.__all__]
