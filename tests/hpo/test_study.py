"""hpo.study: the one place that joins the spec, the data, the networks and the engine."""

from __future__ import annotations

import pytest

from hpo import SpecError
from hpo.study import (
    data_section,
    ensure_scene,
    load_study,
    make_refine,
    make_search,
    plan,
    prepare_data,
    result_to_dict,
    storage_file,
    study_status,
)

from .test_cli import TINY_STUDY, write_study

pytest.importorskip("data.synthetic", reason="the data package is not there yet")


def test_synthetic_table_makes_a_missing_scene_acceptable(tmp_path):
    study = write_study(tmp_path)
    spec = load_study(study)  # the scene does not exist yet, but can be generated
    assert "synthetic" not in data_section(spec)
    assert plan(spec)["total_trials"] == 6
    assert plan(spec)["data"]["synthetic"] == {"size": 64, "n_dates": 2, "seed": 0}

    without = write_study(
        tmp_path / "b",
        TINY_STUDY.replace("[data.synthetic]\nsize = 64\nn_dates = 2\nseed = 0\n", ""),
    )
    with pytest.raises(SpecError, match="hpo synth"):
        load_study(without)
    load_study(without, check_paths=False)  # status and export do not need the data


@pytest.mark.parametrize(
    ("table", "match"),
    [("size = 64.5", "size"), ("n_dates = 0", "n_dates"), ("colour = 1", "colour")],
)
def test_bad_synthetic_table(tmp_path, table, match):
    text = TINY_STUDY.replace("size = 64\nn_dates = 2\nseed = 0\n", table + "\n")
    with pytest.raises(SpecError, match=match):
        load_study(write_study(tmp_path, text))


def test_overrides_resolve_against_the_working_folder(tmp_path, monkeypatch):
    study = write_study(tmp_path / "s")
    monkeypatch.chdir(tmp_path)
    spec = load_study(study, storage="other.db", runner="ray", check_paths=False)
    assert storage_file(spec.storage) == tmp_path / "other.db"
    assert spec.runner.kind == "ray"
    assert load_study(study, check_paths=False).storage.endswith("/s/tiny.db")
    with pytest.raises(SpecError):
        load_study(study, runner="slurm", check_paths=False)


def test_prepare_data_withholds_test_and_normalizes_on_train_only(tmp_path, capsys):
    spec = load_study(write_study(tmp_path))
    assert ensure_scene(spec) == tmp_path / "scene" / "scene.toml"
    assert "generating" in capsys.readouterr().out
    assert ensure_scene(spec) is None  # already there
    tuning = prepare_data(spec)
    assert len(tuning.train_set) == len(tuning.splits.train) > 0
    assert len(tuning.val_set) == len(tuning.splits.val) > 0
    with pytest.raises(Exception, match="withheld"):
        tuning.splits.test  # noqa: B018 - the property raises
    assert tuning.norm == tuning.cube.norm_stats(tuning.splits.train)
    assert tuning.norm != tuning.cube.norm_stats(tuning.splits.val)
    x, y, valid = tuning.train_set[0]
    assert x.shape[-2:] == (16, 16) and y.shape == valid.shape == (16, 16)


def test_refine_and_status_of_a_search_not_started(tmp_path):
    text = TINY_STUDY + "\n[refine]\nenabled = true\nn_trials = 3\n"
    spec = load_study(write_study(tmp_path, text), check_paths=False)
    refine = make_refine(spec)
    assert refine.n_random + refine.n_bayes == 3
    doc = result_to_dict(study_status(spec))
    assert [s["state"] for s in doc["stages"]] == ["pending"] * 3
    assert not (tmp_path / "tiny.db").exists()  # status creates no storage
    assert make_search(spec).stage_names == ["optim", "dcnn", "refine"]
