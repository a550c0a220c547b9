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

from hpo.study.prepare import (
    TRAIN_ON,
    FinalData,
    TuningData,
    prepare_data,
    prepare_final_data,
    validation_lines,
    validation_of,
)
from hpo.study.scene import (
    SYNTHETIC_KEY,
    check_data,
    data_section,
    describe_scene,
    ensure_scene,
    ensure_section_scene,
    load_study,
    open_scene,
    scene_file,
    synthetic_settings,
)
from hpo.study.tune import (
    check_runner,
    load_search,
    make_objective,
    make_pruner,
    make_refine,
    make_runner,
    make_search,
    plan,
    result_to_dict,
    search_names,
    set_threads,
    stage_names,
    storage_exists,
    storage_file,
    study_status,
)

__all__ = [
    "SYNTHETIC_KEY",
    "TRAIN_ON",
    "FinalData",
    "TuningData",
    "check_data",
    "check_runner",
    "data_section",
    "describe_scene",
    "ensure_scene",
    "ensure_section_scene",
    "load_search",
    "load_study",
    "make_objective",
    "make_pruner",
    "make_refine",
    "make_runner",
    "make_search",
    "open_scene",
    "plan",
    "prepare_data",
    "prepare_final_data",
    "result_to_dict",
    "scene_file",
    "search_names",
    "set_threads",
    "stage_names",
    "storage_exists",
    "storage_file",
    "study_status",
    "synthetic_settings",
    "validation_lines",
    "validation_of",
]
