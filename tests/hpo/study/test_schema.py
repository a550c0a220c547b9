"""Study files: validation errors name file, key and hint; valid files round-trip."""

from __future__ import annotations

import dataclasses
import shutil
import tomllib
from pathlib import Path

import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from hpo.engine.errors import SpecError
from hpo.study.schema import FloatParam, StudySpec, load_study_file, parse_study
from networks.config import ModelConfig

REPO = Path(__file__).resolve().parents[3]

BASE = """\
name = "demo"
seed = 3
sampler = "gp"

[runner]
kind = "local"
cpu = 1

[data]
format = "geotiff"
dates = ["2008", "2011"]

[model]
name = "fusion"

[model.fixed]
"optim.epochs" = 2

[[stages]]
name = "optim"
n_random = 2
n_bayes = 1

[stages.params."optim.lr"]
type = "float"
low = 1e-4
high = 1e-2
log = true
default = 1e-3

[[stages]]
name = "temporal"
n_random = 2
n_bayes = 2
sampler = "tpe"

[stages.params."temporal.lstm_hidden"]
type = "int"
low = 8
high = 64
step = 8
default = 32

[stages.params."temporal.conv_layers"]
type = "categorical"
choices = [1, 2]
default = 1
"""


def _write(tmp_path: Path, text: str, name: str = "demo.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _edit(old: str, new: str) -> str:
    assert old in BASE, old
    return BASE.replace(old, new, 1)


# (replace this, with that) -> (dotted key, message fragment, hint fragment)
ERRORS = {
    "misspelled stage key": (
        ("n_random = 2\nn_bayes = 2", "n_randon = 2\nn_bayes = 2"),
        "stages.temporal.n_randon",
        "unknown key 'n_randon' in [stages.temporal]",
        "did you mean 'n_random'?",
    ),
    "misspelled top key": (
        ('sampler = "gp"', 'samplr = "gp"'),
        "samplr",
        "unknown key 'samplr'",
        "did you mean 'sampler'?",
    ),
    "misspelled runner key": (
        ("cpu = 1", "cpus = 1"),
        "runner.cpus",
        "unknown key 'cpus' in [runner]",
        "did you mean 'cpu'?",
    ),
    "wrong type": (
        ("n_random = 2\nn_bayes = 1", 'n_random = "2"\nn_bayes = 1'),
        "stages.optim.n_random",
        "expected an integer, got a string",
        "write n_random as an integer",
    ),
    "bool is not an int": (
        ("n_random = 2\nn_bayes = 1", "n_random = true\nn_bayes = 1"),
        "stages.optim.n_random",
        "expected an integer",
        "integer",
    ),
    "low above high": (
        ("low = 8\nhigh = 64", "low = 80\nhigh = 64"),
        'stages.temporal.params."temporal.lstm_hidden".low',
        "low = 80 > high = 64",
        "swap low and high",
    ),
    "log with low <= 0": (
        ("low = 1e-4", "low = 0.0"),
        'stages.optim.params."optim.lr".low',
        "log scale needs low > 0",
        "remove log = true",
    ),
    "default outside range": (
        ("default = 1e-3", "default = 0.5"),
        'stages.optim.params."optim.lr".default',
        "default 0.5 is outside [0.0001, 0.01]",
        "inside the range",
    ),
    "default off the step grid": (
        ("default = 32", "default = 30"),
        'stages.temporal.params."temporal.lstm_hidden".default',
        "not on the step grid",
        "step grid",
    ),
    "high not on the step grid": (
        ("high = 64\nstep = 8", "high = 60\nstep = 8"),
        'stages.temporal.params."temporal.lstm_hidden".high',
        "not a multiple of step = 8",
        "set high to low + a multiple of 8",
    ),
    "float bounds for an int": (
        ("low = 8\nhigh = 64", "low = 8.5\nhigh = 64"),
        'stages.temporal.params."temporal.lstm_hidden".low',
        "expected an integer, got a number",
        "integer",
    ),
    "empty choices": (
        ("choices = [1, 2]", "choices = []"),
        'stages.temporal.params."temporal.conv_layers".choices',
        "empty choices",
        "at least one choice",
    ),
    "default not a choice": (
        ("choices = [1, 2]\ndefault = 1", 'choices = [1, 2]\ndefault = "1"'),
        'stages.temporal.params."temporal.conv_layers".default',
        "is not one of the choices",
        '32 and "32" differ',
    ),
    "unknown parameter type": (
        ('type = "float"', 'type = "flaot"'),
        'stages.optim.params."optim.lr".type',
        "'flaot' is not one of float, int, categorical",
        "did you mean 'float'?",
    ),
    "choices on a numeric parameter": (
        ("default = 1e-3", "default = 1e-3\nchoices = [1]"),
        'stages.optim.params."optim.lr".choices',
        "unknown key 'choices'",
        "valid keys",
    ),
    "no default": (
        ("log = true\ndefault = 1e-3\n", "log = true\n"),
        'stages.optim.params."optim.lr".default',
        "has no default",
        "every parameter needs a default",
    ),
    "duplicate stage names": (
        ('name = "temporal"', 'name = "optim"'),
        "stages.optim",
        "stage name 'optim' is used twice",
        "unique name",
    ),
    "parameter tuned twice": (
        ('[stages.params."temporal.conv_layers"]', '[stages.params."optim.lr"]'),
        'stages.temporal.params."optim.lr"',
        "already tuned in stage 'optim'",
        "one stage only",
    ),
    "parameter tuned and fixed": (
        ('"optim.epochs" = 2', '"optim.lr" = 0.01'),
        'stages.optim.params."optim.lr"',
        "also in [model.fixed]",
        "either tuned or fixed",
    ),
    "unknown metric": (
        ("seed = 3", 'seed = 3\nmetric = "f2"'),
        "metric",
        "'f2' is not one of f1, miou, auc",
        "did you mean 'f1'?",
    ),
    "minimizing a score": (
        ("seed = 3", 'seed = 3\ndirection = "minimize"'),
        "direction",
        "better when higher",
        "remove direction",
    ),
    "unknown sampler": (
        ('sampler = "tpe"', 'sampler = "tpee"'),
        "stages.temporal.sampler",
        "'tpee' is not one of",
        "did you mean 'tpe'?",
    ),
    "unknown runner kind": (
        ('kind = "local"', 'kind = "rey"'),
        "runner.kind",
        "'rey' is not one of local, ray",
        "did you mean 'ray'?",
    ),
    "non-positive cpu": (
        ("cpu = 1", "cpu = 0"),
        "runner.cpu",
        "cpu = 0",
        "a number > 0",
    ),
    "data without format or scene": (
        ('format = "geotiff"\n', ""),
        "data",
        "neither 'scene' nor 'format'",
        "scene.toml",
    ),
    "missing scene file": (
        ('format = "geotiff"', 'scene = "scenes/none.toml"'),
        "data.scene",
        "does not exist",
        "hpo synth",
    ),
    "unknown storage scheme": (
        ("seed = 3", 'seed = 3\nstorage = "mongodb://host/db"'),
        "storage",
        "unknown storage scheme 'mongodb'",
        "sqlite:///file.db",
    ),
    "bad cycles": (
        ("seed = 3", "seed = 3\ncycles = 0"),
        "cycles",
        "cycles = 0",
        "1 or more",
    ),
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_error_names_file_key_and_hint(tmp_path: Path, case: str) -> None:
    (old, new), key, message, hint = ERRORS[case]
    path = _write(tmp_path, _edit(old, new))
    with pytest.raises(SpecError) as info:
        load_study_file(path)
    err = info.value
    assert err.file == str(path.resolve())
    assert err.key == key
    assert message in str(err)
    assert hint in err.hint
    assert str(path.resolve()) in str(err) and f"[{key}]" in str(err)  # the one-line form


def test_unknown_network_parameter_suggests_the_nearest(tmp_path: Path) -> None:
    path = _write(tmp_path, BASE.replace('"optim.lr"', '"optim.lrr"'))
    with pytest.raises(SpecError) as info:
        load_study_file(path)
    assert info.value.key == 'stages.optim.params."optim.lrr"'
    assert info.value.hint == "did you mean 'optim.lr'?"


def test_default_the_network_rejects_is_named(tmp_path: Path) -> None:
    text = BASE + '\n[stages.params."dcnn.kernel_size"]\ntype = "int"\nlow = 1\nhigh = 7\n'
    path = _write(tmp_path, text + "default = 4\n")  # kernel sizes must be odd
    with pytest.raises(SpecError) as info:
        load_study_file(path)
    assert info.value.key == 'stages.temporal.params."dcnn.kernel_size".default'
    assert "the network rejects it" in str(info.value)


def test_unknown_data_format_suggests_the_nearest(tmp_path: Path) -> None:
    path = _write(tmp_path, _edit('format = "geotiff"', 'format = "geotif"'))
    with pytest.raises(SpecError) as info:
        load_study_file(path)
    assert info.value.key == "data.format"
    assert info.value.hint == "did you mean 'geotiff'?"


def test_stages_must_be_an_array_of_tables(tmp_path: Path) -> None:
    raw = {"data": {"format": "geotiff"}, "stages": {"name": "optim"}}
    with pytest.raises(SpecError) as info:
        parse_study(raw, file=tmp_path / "s.toml")
    assert info.value.key == "stages" and "double brackets" in info.value.hint
    assert info.value.file == str((tmp_path / "s.toml").resolve())


def test_missing_file_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="study file not found"):
        load_study_file(tmp_path / "nope.toml")
    with pytest.raises(SpecError, match="not valid TOML") as info:
        load_study_file(_write(tmp_path, "name = \n"))
    assert info.value.file == str((tmp_path / "demo.toml").resolve())


def test_valid_file_defaults_and_stages(tmp_path: Path) -> None:
    spec = load_study_file(_write(tmp_path, BASE))
    assert (spec.name, spec.seed, spec.metric, spec.direction) == ("demo", 3, "f1", "maximize")
    assert spec.storage == f"sqlite:///{tmp_path.resolve() / 'demo.db'}"
    assert spec.artifacts == tmp_path.resolve() / "artifacts" / "demo"
    assert spec.runner.kind == "local" and spec.runner.asha is None
    assert spec.refine.enabled is False and spec.cycles == 1
    assert spec.data == {"format": "geotiff", "dates": ["2008", "2011"]}
    assert spec.model.fixed == {"optim.epochs": 2}
    optim, temporal = spec.to_stages()
    assert optim.space == {"optim.lr": FloatDistribution(1e-4, 1e-2, log=True)}
    assert optim.defaults == {"optim.lr": 1e-3} and optim.budget == 3 and optim.sampler is None
    assert temporal.space["temporal.lstm_hidden"] == IntDistribution(8, 64, step=8)
    assert temporal.space["temporal.conv_layers"] == CategoricalDistribution([1, 2])
    assert temporal.sampler == "tpe" and temporal.budget == 4


def test_round_trip_through_to_dict(tmp_path: Path) -> None:
    spec = load_study_file(_write(tmp_path, BASE))
    again = parse_study(spec.to_dict(), file=spec.file)
    assert again == spec
    assert again.to_dict() == spec.to_dict()


def test_fingerprint_ignores_where_and_how_but_not_what(tmp_path: Path) -> None:
    spec = load_study_file(_write(tmp_path, BASE))
    moved = _edit("cpu = 1", "cpu = 4").replace(
        "seed = 3", 'seed = 3\nstorage = "postgresql://u@db/x"\nartifacts = "elsewhere"'
    )
    assert load_study_file(_write(tmp_path, moved, "b.toml")).fingerprint() == spec.fingerprint()
    bigger = _edit("n_random = 2\nn_bayes = 1", "n_random = 2\nn_bayes = 5")
    assert load_study_file(_write(tmp_path, bigger, "c.toml")).fingerprint() != spec.fingerprint()
    assert spec.fingerprint() == load_study_file(spec.file).fingerprint()  # stable


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///runs/x.db", "sqlite:///{base}/runs/x.db"),
        ("sqlite:///{base}/abs/x.db", "sqlite:///{base}/abs/x.db"),
        ("x.db", "sqlite:///{base}/x.db"),
        ("journal://logs/x.log", "journal://{base}/logs/x.log"),
        ("journal://{base}/abs/x.log", "journal://{base}/abs/x.log"),
        ("postgresql://user:secret@host/db", "postgresql://user:secret@host/db"),
        ("redis://localhost:6379/0", "redis://localhost:6379/0"),
    ],
)
def test_storage_paths_resolve_against_the_study_file(
    tmp_path: Path, url: str, expected: str
) -> None:
    url = url.format(base=tmp_path.resolve())  # absolute paths must stay in the study's folder
    spec = load_study_file(_write(tmp_path, _edit("seed = 3", f'seed = 3\nstorage = "{url}"')))
    assert spec.storage == expected.format(base=tmp_path.resolve())


def test_runner_section_with_asha(tmp_path: Path) -> None:
    text = _edit(
        'kind = "local"\ncpu = 1',
        'kind = "ray"\ncpu = 2\ngpu = 0.25\nmax_concurrent = 4\naddress = "ray://head:10001"\n'
        "max_retries = 1\n[runner.asha]\ngrace = 2\nreduction_factor = 4",
    )
    runner = load_study_file(_write(tmp_path, text)).runner
    assert (runner.kind, runner.cpu, runner.gpu, runner.max_concurrent) == ("ray", 2.0, 0.25, 4)
    assert runner.address == "ray://head:10001" and runner.max_retries == 1
    assert (runner.asha.grace, runner.asha.reduction_factor) == (2, 4.0)


def test_quickstart_loads(tmp_path: Path) -> None:
    spec = load_study_file(REPO / "studies" / "quickstart.toml", check_paths=False)
    assert isinstance(spec, StudySpec) and spec.name == "quickstart"
    # What the README promises of it (issue 7): the fusion network's layer-wise search,
    # at least 5 stages of at least 4 random + 4 Bayesian trials, optimizer first.
    stages = spec.to_stages()
    assert spec.model.name == "fusion" and len(stages) >= 5
    assert all(s.n_random >= 4 and s.n_bayes >= 4 for s in stages)
    assert all(name.startswith("optim.") for name in stages[0].space)
    assert spec.storage == f"sqlite:///{REPO / 'studies' / 'quickstart.db'}"
    # With its scene in place (relative to the study file) it loads with path checks on.
    (tmp_path / "studies").mkdir()
    copy = tmp_path / "studies" / "quickstart.toml"
    shutil.copy(REPO / "studies" / "quickstart.toml", copy)
    scene = tmp_path / ".cache" / "quickstart-scene" / "scene.toml"
    scene.parent.mkdir(parents=True)
    scene.write_text('[data]\nformat = "geotiff"\n')
    assert load_study_file(copy).to_dict()["data"] == spec.to_dict()["data"]


# The fingerprints of the shipped studies as the hand-written validator computed them
# (before the typed schema, when the files wrote sizes as strings such as "32,16"; they now
# write lists): stored searches compare them to tell a changed study, so the same study
# file must keep its fingerprint. Comments may change; the searches may not.
# compare-synthetic changed on purpose (issue 19: [model.fixed] "segnet.levels" = 2, then
# "backbone.stride" = 4), so its stored comparisons start again; it was "9b265ee0f2c30f4d",
# then "05929f961b68ee3b". So did the quickstarts
# (issue 18: the optim stage tunes optim.epochs, 8 epochs left the network half trained);
# they were "cd75357355d1e980" and "5d3b9bc2401e97cd" (Ray).
SHIPPED_FINGERPRINTS = {
    "compare-synthetic.toml": "837fe6082b840c93",
    "kashmir.toml": "0917b4fdf53fa896",
    "l4s-patches.toml": "ed27250343732bec",
    "l4s.toml": "01f2e337184d2855",
    "paper.toml": "07a855127fb6016b",
    "quickstart-ray.toml": "7604822608a83207",
    "quickstart.toml": "6d995061b3e24ab7",
}


@pytest.mark.parametrize("name", sorted(SHIPPED_FINGERPRINTS))
def test_shipped_studies_keep_their_fingerprints(name: str) -> None:
    spec = load_study_file(REPO / "studies" / name, check_paths=False)
    assert spec.fingerprint() == SHIPPED_FINGERPRINTS[name]
    again = parse_study(spec.to_dict(), file=spec.file, check_paths=False)
    assert again == spec and again.fingerprint() == spec.fingerprint()


@pytest.mark.parametrize("name", sorted(SHIPPED_FINGERPRINTS))
def test_shipped_studies_write_sizes_as_lists(name: str) -> None:
    raw = tomllib.loads((REPO / "studies" / name).read_text(encoding="utf-8"))
    sizes = [p for stage in raw["stages"] for n, p in stage["params"].items()
             if n in ModelConfig.sequence_params()]
    sizes += [v for n, v in raw["model"].get("fixed", {}).items()
              if n in ModelConfig.sequence_params()]
    values = [v for p in sizes for v in
              ([*p["choices"], p["default"]] if isinstance(p, dict) else [p])]
    assert all(isinstance(v, list) for v in values), values


SIZES_AS_LISTS = """
[stages.params."dbn.hidden"]
type = "categorical"
choices = [[32, 16], [64, 32], [32]]
default = [32, 16]
"""
SIZES_AS_STRINGS = """
[stages.params."dbn.hidden"]
type = "categorical"
choices = ["32,16", "64,32", "32"]
default = "32,16"
"""


def test_sizes_are_lists_and_the_string_form_of_older_files_still_loads(tmp_path: Path) -> None:
    spec = load_study_file(_write(tmp_path, BASE + SIZES_AS_LISTS))
    old = load_study_file(_write(tmp_path, BASE + SIZES_AS_STRINGS, "old.toml"))
    hidden = spec.stages[1].params["dbn.hidden"]
    assert hidden.choices == ((32, 16), (64, 32), (32,)) and hidden.default == (32, 16)
    assert old.stages == spec.stages and old.fingerprint() == spec.fingerprint()
    # the study file writes lists; Optuna holds one plain value per choice, as before
    assert hidden.to_dict() == {"type": "categorical", "choices": [[32, 16], [64, 32], [32]],
                                "default": [32, 16]}
    stage = spec.to_stages()[1]
    assert stage.space["dbn.hidden"] == CategoricalDistribution(["32,16", "64,32", "32"])
    assert stage.defaults["dbn.hidden"] == "32,16"
    assert parse_study(spec.to_dict(), file=spec.file) == spec


@pytest.mark.parametrize(
    ("entry", "key", "message"),
    [
        ('choices = ["32,a"]\ndefault = "32,a"', "choices", "expected integers, got '32,a'"),
        ("choices = [[32, 16]]\ndefault = [16, 32]", "default", "is not one of the choices"),
        ("choices = [[32, 16], [32, 16]]\ndefault = [32, 16]", "choices", "choices repeat"),
        ("choices = [[32, 0]]\ndefault = [32, 0]", "default", "the network rejects it"),
    ],
)
def test_bad_sizes_are_named(tmp_path: Path, entry: str, key: str, message: str) -> None:
    text = BASE + f'\n[stages.params."dbn.hidden"]\ntype = "categorical"\n{entry}\n'
    with pytest.raises(SpecError) as info:
        load_study_file(_write(tmp_path, text))
    assert info.value.key == f'stages.temporal.params."dbn.hidden".{key}'
    assert message in str(info.value) and info.value.hint


@pytest.mark.parametrize(
    ("old", "new", "key", "message", "hint"),
    [
        ('format = "geotiff"', 'format = "geotiff"\npatch_sise = 16', "data.patch_sise",
         "unknown key 'patch_sise' in [data]", "did you mean 'patch_size'?"),
        ('format = "geotiff"', 'format = "geotiff"\npatch_size = "16"', "data.patch_size",
         "expected an integer, got a string", "write patch_size as an integer"),
        ('format = "geotiff"', 'format = "geotiff"\nsplit = "blockd"', "data.split",
         "'blockd' is not one of random, blocked, paper", "did you mean 'blocked'?"),
        ('format = "geotiff"', 'format = "geotiff"\noverlap = -1', "data.overlap",
         "overlap = -1", "use 0 or more"),
        ("[model]", "[compare]\ntrails = 3\n\n[model]", "compare.trails",
         "unknown key 'trails' in [compare]", "did you mean 'trials'?"),
        ("[runner]", "[tuning]\nfolds = 1\n\n[runner]", "tuning.folds", "folds = 1", "2 or more"),
    ],
)
def test_data_compare_and_tuning_keys_are_typed(
    tmp_path: Path, old: str, new: str, key: str, message: str, hint: str
) -> None:
    with pytest.raises(SpecError) as info:
        load_study_file(_write(tmp_path, _edit(old, new)))
    assert info.value.key == key
    assert message in str(info.value) and hint in info.value.hint


def test_data_section_knows_every_key_the_data_package_reads() -> None:
    from data.scene import OPTION_KEYS, SCENE_KEYS
    from data.section import DataSection
    from data.sources import patches

    adapters = {"path", "grid", "dates", "derive", "tpi_radii", "ids"}  # kashmir, l4s, hokkaido
    known = SCENE_KEYS | OPTION_KEYS | patches._KEYS | adapters
    assert known == set(DataSection.model_fields)


def test_spec_objects_are_frozen_dataclasses_that_validate(tmp_path: Path) -> None:
    spec = load_study_file(_write(tmp_path, BASE))
    # what the rest of the toolkit does with them
    moved = dataclasses.replace(spec, runner=dataclasses.replace(spec.runner, kind="ray"))
    assert moved.runner.kind == "ray" and dataclasses.asdict(moved.runner)["cpu"] == 1.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.seed = 4  # type: ignore[misc]
    with pytest.raises(ValueError, match="greater than 0"):
        dataclasses.replace(spec.runner, cpu=0)
    # a comparison's split override: the data package checks it when it reads it
    override = dataclasses.replace(spec, data={**spec.data, "split": "spatial"})
    assert override.data["split"] == "spatial"
    assert FloatParam(1e-3, 1e-4, 1e-2, log=True).distribution() == FloatDistribution(
        1e-4, 1e-2, log=True
    )


def test_unknown_fixed_parameter_suggests_the_nearest(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as info:
        load_study_file(_write(tmp_path, _edit('"optim.epochs" = 2', '"optim.epoch" = 2')))
    assert info.value.key == 'model.fixed."optim.epoch"'
    assert "is not a network parameter" in str(info.value)
    assert info.value.hint == "did you mean 'optim.epochs'?"
