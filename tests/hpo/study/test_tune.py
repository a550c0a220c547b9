"""hpo.study.tune: the one place that joins the spec, the data, the networks and the engine."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpo import SpecError
from hpo.cli.main import main
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
from tests.hpo.cli.test_cli import ROOT, TINY_STUDY, write_study


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
    ("runner", "key"),
    [('kind = "slurm"', "runner.kind"), ("trial_timeout = 0", "runner.trial_timeout"),
     ("trial_timeout = inf", "runner.trial_timeout")],
)
def test_bad_runner_fails_before_the_data_are_prepared(tmp_path, capsys, runner, key):
    # The study file's schema holds [runner] to what the run plan accepts, so `hpo tune`
    # stops at loading the file: no scene generated, no cube cached, nothing stored.
    study = write_study(tmp_path, TINY_STUDY + f"\n[runner]\n{runner}\n")
    assert main(["tune", str(study), "--plain"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and f"[{key}]" in error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.toml"]


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


STUDIES = sorted((ROOT / "studies").glob("*.toml"))
SHARED_DATA = ROOT.parent / "shared" / "data"


def uses_shared_data(study: Path) -> bool:
    return "shared/data" in study.read_text(encoding="utf-8")


def test_the_shipped_studies_are_the_ones_the_readme_names():
    names = {s.stem for s in STUDIES}
    assert {"quickstart", "quickstart-ray", "l4s", "kashmir", "paper"} <= names


@pytest.mark.parametrize("study", STUDIES, ids=[s.stem for s in STUDIES])
def test_every_shipped_study_passes_a_dry_run(study, capsys, tmp_path):
    if uses_shared_data(study) and not SHARED_DATA.is_dir():
        pytest.skip(f"{study.name} reads ../shared/data, which is not there")
    # --dry-run opens the storage: a study naming a database server is checked on a
    # storage of its own here (test_paper_study_... checks the server's refusal)
    server = not load_study(study, check_paths=False).storage.startswith("sqlite")
    storage = ["--storage", f"sqlite:///{tmp_path / 'dry.db'}"] if server else []
    assert main(["tune", str(study), "--dry-run", *storage]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "dry run: nothing trained, nothing stored" in out
    assert "stages (" in out


def test_paper_study_is_the_papers_setting(capsys, tmp_path):
    spec = load_study(ROOT / "studies" / "paper.toml", check_paths=False)
    fixed = dict(spec.model.fixed)
    assert (fixed["optim.lr"], fixed["optim.batch_size"]) == (1e-4, 68)
    assert spec.data["patch_size"] == 512 and spec.data["split"] == "paper"
    assert spec.data["synthetic"]["n_dates"] == 5
    assert spec.runner.kind == "ray" and spec.runner.gpu >= 1
    assert spec.storage.startswith("postgresql://")
    # The pre-flight check opens the study's server: here there is no database "hpo" with
    # a role "hpo", so the dry run says so in one line, naming the URL.
    study = str(ROOT / "studies" / "paper.toml")
    assert main(["tune", study, "--dry-run"]) == 1
    error = capsys.readouterr().err
    assert "postgresql://hpo@localhost:5432/hpo" in error and "cannot open the storage" in error
    assert main(["tune", study, "--dry-run", "--storage", f"sqlite:///{tmp_path / 'p.db'}"]) == 0
    assert "1 gpu per trial" in capsys.readouterr().out


def test_quickstart_ray_is_quickstart_on_ray():
    quick = load_study(ROOT / "studies" / "quickstart.toml", check_paths=False).to_dict()
    ray = load_study(ROOT / "studies" / "quickstart-ray.toml", check_paths=False).to_dict()
    differ = {k for k in quick if quick[k] != ray[k]}
    assert differ == {"name", "storage", "artifacts", "runner"}, (
        "quickstart-ray.toml must stay quickstart.toml on Ray; copy the changed keys over"
    )
    assert ray["runner"]["kind"] == "ray" and ray["runner"]["max_concurrent"] == 2


def test_data_path_overrides_the_data_folder_or_scene(tmp_path, capsys):
    l4s = ROOT / "studies" / "l4s.toml"
    spec = load_study(l4s, check_paths=False, data_path=tmp_path / "mine")
    assert spec.data["path"] == str(tmp_path / "mine")
    # a missing file named on the command line: exit 2, as a missing study file (issue 21)
    assert main(["tune", str(l4s), "--dry-run", "--data-path", str(tmp_path / "mine")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "mine" in err[0] and "not found" in err[0]

    # A scene-based study: --data-path names the scene file or the folder holding it.
    study = write_study(tmp_path / "s")
    spec = load_study(study, check_paths=False, data_path=tmp_path)
    assert spec.data["scene"] == str(tmp_path / "scene.toml")
    assert "synthetic" not in spec.data  # the user's data: nothing to generate
    with pytest.raises(SpecError, match="does not exist"):
        load_study(study, data_path=tmp_path / "nope.toml")


@pytest.mark.parametrize("data", ["", 'fold_role = "test"\n',
                                  'folds = 3\nfold = 1\nfold_role = "test"\nstratify = true\n'])
def test_tuning_folds_replicate_over_folds_and_never_read_the_test_split(tmp_path, data):
    # A [data] fold_role of "test" (for outer cross-validation) must not turn the tuning
    # folds into test folds: their training would then hold the plain split's test tiles.
    # With outer folds ([data] folds) the tuning folds nest inside the outer training part.
    text = TINY_STUDY.replace('sampler = "tpe"\n', 'sampler = "tpe"\n\n[tuning]\nfolds = 3\n')
    text = text.replace('cache_dir = "cubes"\n', f'cache_dir = "cubes"\n{data}')
    spec = load_study(write_study(tmp_path, text))
    assert spec.tuning.folds == 3 and spec.tuning.repeats == 3  # one replicate per fold
    ensure_scene(spec)
    tuning = prepare_data(spec)
    full = tuning.cube.splits(seed=spec.seed)
    test = {tuple(t) for t in full.test}
    seen_val: list[set] = []
    for train_set, val_set in tuning.folds:
        train = {tuple(t) for t in train_set.tiles}
        val = {tuple(t) for t in val_set.tiles}
        assert train and val and not train & val
        assert not (train | val) & test  # the test split is never part of a fold
        seen_val.append(val)
    assert all(not a & b for i, a in enumerate(seen_val) for b in seen_val[i + 1:])
    assert set().union(*seen_val) == {tuple(t) for t in (*full.train, *full.val)}
    # A search of this study scores each trial over the three folds.
    assert make_search(spec).replication.repeats == 3


@pytest.mark.parametrize(
    ("table", "match"),
    [("folds = 1", "tuning.folds"), ("repeats = 0", "tuning.repeats"),
     ("z = -1", "tuning.z"), ("rounds = 2", "rounds"),
     ("repeats = 3\nmax_repeats = 2", "tuning.max_repeats")],
)
def test_bad_tuning_table_is_a_named_error(tmp_path, table, match):
    text = TINY_STUDY.replace('sampler = "tpe"\n', f'sampler = "tpe"\n\n[tuning]\n{table}\n')
    with pytest.raises(SpecError, match=match):
        load_study(write_study(tmp_path, text))


def test_tuning_folds_beside_validation_folds_is_a_named_error(tmp_path):
    text = TINY_STUDY.replace('sampler = "tpe"\n', 'sampler = "tpe"\n\n[tuning]\nfolds = 3\n')
    text = text.replace('cache_dir = "cubes"\n', 'cache_dir = "cubes"\nfolds = 3\n')
    with pytest.raises(SpecError, match=r"\[data\] folds \(validation folds\).*fold_role"):
        load_study(write_study(tmp_path, text))


def test_max_repeats_reaches_the_search_and_leaves_other_studies_as_they_were(tmp_path):
    plain = TINY_STUDY.replace('sampler = "tpe"\n', 'sampler = "tpe"\n\n[tuning]\nrepeats = 3\n')
    before = load_study(write_study(tmp_path / "a", plain), check_paths=False)
    assert "max_repeats" not in before.to_dict()["tuning"]  # its fingerprint is unchanged
    assert make_search(before).replication.most == 3
    more = plain.replace("repeats = 3\n", "repeats = 3\nmax_repeats = 6\n")
    spec = load_study(write_study(tmp_path / "b", more), check_paths=False)
    assert spec.tuning.max_repeats == 6 and spec.to_dict()["tuning"]["max_repeats"] == 6
    assert spec.fingerprint() != before.fingerprint()
    search = make_search(spec)
    assert search.replication.intensifies and search.replication.most == 6
