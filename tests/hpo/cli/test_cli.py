"""The ``hpo`` command line end to end on a tiny generated scene (real entry point)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import optuna
import pytest

from hpo.cli import main
from hpo.study.export import load_export
from tests.hpo.conftest import interruptible

pytest.importorskip("networks", reason="the networks package is not there yet")
pytest.importorskip("data.synthetic", reason="the data package is not there yet")

ROOT = Path(__file__).resolve().parents[3]

TINY_STUDY = """\
name = "tiny"
storage = "sqlite:///tiny.db"
seed = 0
metric = "f1"
sampler = "tpe"

[data]
scene = "scene/scene.toml"
patch_size = 16
fractions = [0.6, 0.2, 0.2]
cache_dir = "cubes"

[data.synthetic]
size = 64
n_dates = 2
seed = 0

[model.fixed]
"optim.epochs" = 1
"optim.batch_size" = 4
"temporal.conv_channels" = 4
"temporal.lstm_hidden" = 4
"temporal.downsample" = 2
"dbn.hidden" = "4"
"dbn.pretrain_epochs" = 1
"dbn.max_pixels" = 300
"dcnn.depth" = 1

[[stages]]
name = "optim"
n_random = 2
n_bayes = 1
[stages.params]
"optim.lr" = { type = "float", low = 1e-4, high = 1e-2, log = true, default = 1e-3 }

[[stages]]
name = "dcnn"
n_random = 2
n_bayes = 1
[stages.params]
"dcnn.width" = { type = "int", low = 2, high = 8, default = 4 }
"""


COMMANDS = (
    "tune", "status", "export", "dashboard", "train", "predict", "report", "synth", "compare"
)


def write_study(folder: Path, text: str = TINY_STUDY, name: str = "tiny.toml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def trial_counts(db: Path) -> dict[str, int]:
    storage = optuna.storages.RDBStorage(f"sqlite:///{db}")
    try:
        return {
            s.study_name: len(storage.get_all_trials(s._study_id, deepcopy=False))
            for s in storage.get_all_studies()
        }
    finally:
        storage.remove_session()
        storage.engine.dispose()


def ensure_tuned(study: Path) -> None:
    if not (study.parent / "tiny.db").exists():
        assert main(["tune", str(study), "--plain"]) == 0


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """The tiny study tuned once by ``hpo tune`` (scene generated on the way)."""
    folder = tmp_path_factory.mktemp("tiny")
    study = write_study(folder)
    return study


def test_tune_generates_scene_runs_every_stage_and_resumes(tuned, capsys):
    study = tuned
    assert main(["tune", str(study), "--plain"]) == 0
    out = capsys.readouterr().out
    assert (study.parent / "scene" / "scene.toml").is_file()
    assert "generating the synthetic scene" in out
    assert "hpo dashboard" in out and str(study) in out
    assert "stage 2/2 dcnn" in out
    assert f"hpo export {study} -o best.yaml" in out
    # a 64-px scene validates on a handful of landslides, one run a trial: said so
    assert "validation holds" in out and "note: validation holds" in out
    assert "[tuning] folds = 3" in out
    counts = trial_counts(study.parent / "tiny.db")
    assert counts == {"tiny.01.optim": 3, "tiny.02.dcnn": 3}

    # The same command again resumes: every stage finished, no new trial.
    assert main(["tune", str(study), "--plain"]) == 0
    out = capsys.readouterr().out
    assert "nothing to run" in out
    assert "generating" not in out
    assert trial_counts(study.parent / "tiny.db") == counts

    # --fresh would delete them: without a terminal to ask, it wants --yes.
    assert main(["tune", str(study), "--fresh"]) == 2
    assert "--yes" in capsys.readouterr().err
    assert trial_counts(study.parent / "tiny.db") == counts

    # --from-stage re-tunes that stage only.
    assert main(["tune", str(study), "--from-stage", "dcnn", "--plain"]) == 0
    assert "deleted tiny.02.dcnn" in capsys.readouterr().out
    assert trial_counts(study.parent / "tiny.db") == counts


def test_status_json_and_table(tuned, capsys):
    study = tuned
    ensure_tuned(study)
    capsys.readouterr()
    assert main(["status", str(study), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [s["name"] for s in doc["stages"]] == ["optim", "dcnn"]
    assert all(s["state"] == "finished" and s["complete"] == 3 for s in doc["stages"])
    assert doc["finished"] is True
    assert doc["stages"][1]["ledger"]["value"] == doc["best_value"]
    assert set(doc["best_params"]) == {"optim.lr", "dcnn.width"}

    # By storage URL: the only search in it is found without --study.
    url = f"sqlite:///{study.parent / 'tiny.db'}"
    assert main(["status", url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["search"] == "tiny"

    assert main(["status", str(study)]) == 0
    out = capsys.readouterr().out
    assert "finished (ledger written)" in out and "dcnn" in out


def test_export_writes_a_loadable_file(tuned, tmp_path, capsys):
    study = tuned
    ensure_tuned(study)
    target = tmp_path / "out" / "best.yaml"
    assert main(["export", str(study), "-o", str(target)]) == 0
    doc = load_export(target)
    assert doc["search"] == "tiny"
    assert doc["finished"] is True
    assert set(doc["model"]["params"]) >= {"optim.lr", "dcnn.width", "optim.epochs"}
    assert doc["provenance"]["data_hash"]
    assert "wrote" in capsys.readouterr().out


def test_dry_run_trains_and_stores_nothing(tmp_path, capsys):
    study = write_study(tmp_path)
    assert main(["tune", str(study), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "optim: 2 random + 1 tpe = 3 trials" in out
    assert "does not exist yet" in out
    assert "sqlite:///" in out
    assert not (tmp_path / "tiny.db").exists()
    assert not (tmp_path / "scene").exists()
    assert not (tmp_path / "cubes").exists()


def test_status_before_tuning_creates_no_storage(tmp_path, capsys):
    study = write_study(tmp_path)
    assert main(["status", str(study), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [s["state"] for s in doc["stages"]] == ["pending", "pending"]
    assert not (tmp_path / "tiny.db").exists()


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (TINY_STUDY.replace('name = "optim"', 'name = "optim"\nn_randon = 2'), "n_randon"),
        (TINY_STUDY.replace("[data.synthetic]\n", "[data.synthetic]\nsizes = 3\n"), "sizes"),
        (TINY_STUDY.replace('"dcnn.width"', '"dcnn.widht"'), "dcnn.widht"),
        ("name = [", "TOML"),
    ],
)
def test_bad_study_file_is_one_line_and_exit_2(tmp_path, capsys, text, needle):
    study = write_study(tmp_path, text)
    assert main(["tune", str(study)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("hpo: error: ") and needle in lines[0]
    assert "Traceback" not in captured.err + captured.out


def test_missing_study_file_and_usage_errors(tmp_path, capsys):
    assert main(["tune", str(tmp_path / "nope.toml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "study file not found" in err[0]
    assert main(["tune"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hpo: error: ")
    study = write_study(tmp_path)
    assert main(["tune", str(study), "--from-stage", "nope"]) == 2
    assert "not a stage" in capsys.readouterr().err
    assert main(["export", str(study), "-o", str(tmp_path / "b.yaml")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no layer-wise search" in err[0]


def test_synth_writes_a_scene(tmp_path, capsys):
    assert main(["synth", str(tmp_path / "s"), "--size", "32", "--dates", "2", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "s" / "scene.toml").is_file()
    assert str(tmp_path / "s" / "scene.toml") in out.replace("\n", "")
    assert "32 x 32 px" in out and "landslides" in out
    assert main(["synth", str(tmp_path / "t"), "--size", "3"]) == 2


def test_entry_point_in_a_subprocess(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run(
        [sys.executable, "-m", "hpo.cli", "--help"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    for command in COMMANDS:
        assert command in run.stdout
    bad = write_study(tmp_path, textwrap.dedent("name = 3\n"))
    run = subprocess.run(
        [sys.executable, "-m", "hpo.cli", "tune", str(bad)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert run.returncode == 2
    assert run.stderr.count("\n") == 1 and run.stderr.startswith("hpo: error: ")


@pytest.mark.parametrize("command", COMMANDS)
def test_every_subcommand_has_help(command, capsys):
    assert main([command, "--help"]) == 0
    assert f"usage: hpo {command}" in capsys.readouterr().out


def test_the_commands_parser_loads_no_heavy_library_of_its_own(tmp_path):
    # Every `hpo` command imports all command modules to build its parser: what only one
    # command needs (torch, matplotlib, GDAL, optuna-dashboard, Ray) is imported when it runs.
    heavy = ("torch", "matplotlib", "rasterio", "optuna_dashboard", "sklearn", "ray")
    code = (
        "import sys, hpo.study; before = set(sys.modules); import hpo.cli; "
        f"print(sorted((set(sys.modules) - before) & set({heavy!r})))"
    )
    run = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=tmp_path,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


def test_sigint_stops_cleanly_and_the_rerun_completes_the_budget(tmp_path, capsys):
    study = write_study(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "hpo.cli", "tune", str(study), "--plain"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
        preexec_fn=interruptible,
    )
    try:
        for line in proc.stdout:
            if "] trial 1:" in line:  # trial 0 is told, trial 1 told, trial 2 may run
                proc.send_signal(signal.SIGINT)
                break
        else:
            pytest.fail(f"no trial finished: {proc.stderr.read()}")
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "Resume with: hpo tune" in err
    assert "Traceback" not in err
    partial = trial_counts(tmp_path / "tiny.db")
    assert sum(partial.values()) < 6

    assert main(["tune", str(study), "--plain"]) == 0
    assert "resuming" in capsys.readouterr().out
    assert main(["status", str(study), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["finished"] is True
    assert [s["complete"] for s in doc["stages"]] == [3, 3]
    assert all(s["running"] == 0 for s in doc["stages"])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_dashboard_serves_every_stage_study(tuned, capsys):
    study = tuned
    ensure_tuned(study)
    capsys.readouterr()
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "hpo.cli", "dashboard", str(study), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        names = None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as r:
                    doc = json.loads(r.read())
                names = sorted(s["study_name"] for s in doc["study_summaries"])
                break
            except OSError:
                time.sleep(0.5)
        assert names == ["tiny.01.optim", "tiny.02.dcnn"], proc.poll()
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert f"http://127.0.0.1:{port}/" in out
    assert "--artifact-dir" in out

    # A finished stage's spec changed: a named error, one line, that says how to go on.
    study.write_text(study.read_text().replace("high = 8, default = 4", "high = 9, default = 4"))
    assert main(["tune", str(study), "--plain"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--from-stage dcnn" in err[0]


# ------------------------------------------------------------ new-user defects (issue 21)


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("hpo: error: ") and "Traceback" not in err
    return lines[0]


def test_data_path_that_is_empty_or_missing_is_a_named_error(tmp_path, capsys):
    # Regression: the override was dropped and the study's own (synthetic) data used, exit 0.
    study = write_study(tmp_path)
    assert main(["synth", str(tmp_path / "scene"), "--size", "16", "--dates", "2"]) == 0
    empty = tmp_path / "empty"
    empty.mkdir()
    for where in (empty, tmp_path / "missing"):
        status = main(["tune", str(study), "--dry-run", "--data-path", str(where)])
        line = one_error_line(capsys.readouterr().err)
        assert status == 2 and "--data-path" in line and str(where) in line, line
        assert "hint:" in line
    assert not (tmp_path / "tiny.db").exists()


def test_status_of_a_mistyped_sqlite_url_creates_nothing(tmp_path, capsys):
    # Regression: the folder and an empty database were created.
    url = f"sqlite:///{tmp_path}/mistyped/path.db"
    for command in (["status", url], ["report", url, "-o", str(tmp_path / "r")],
                    ["dashboard", url]):
        status = main(command)
        line = one_error_line(capsys.readouterr().err)
        assert status == 1 and "no storage file" in line and "hint:" in line, line
    assert not (tmp_path / "mistyped").exists()


def test_dry_run_opens_the_storage(tmp_path, capsys, pg_url):
    # Regression: `--storage postgresql://.../nosuchdb --dry-run` said all was well.
    study = write_study(tmp_path)
    bad = pg_url.rsplit("/", 1)[0] + "/nosuchdb_hpo_issue21"
    status = main(["tune", str(study), "--storage", bad, "--dry-run"])
    line = one_error_line(capsys.readouterr().err)
    assert status == 1 and "cannot open the storage" in line and "nosuchdb_hpo_issue21" in line
    assert main(["tune", str(study), "--storage", pg_url, "--dry-run"]) == 0
    assert "reachable" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("old", "new", "key", "needle"),
    [
        ('"dcnn.width" = { type = "int", low = 2,', '"dcnn.width" = { type = "int", low = 0,',
         '[stages.dcnn.params."dcnn.width".low]', "0"),
        ('"dcnn.width" = { type = "int", low = 2, high = 8, default = 4 }',
         '"dbn.hidden" = { type = "categorical", choices = ["4", "abc"], default = "4" }',
         '[stages.dcnn.params."dbn.hidden".choices]', "'abc'"),
    ],
    ids=["bound", "choice"],
)
def test_dry_run_checks_bounds_and_choices_against_the_network(
    tmp_path, capsys, old, new, key, needle
):
    # Regression: these failed only at trial time, as failed trials.
    text = TINY_STUDY.replace(old, new).replace('"dbn.hidden" = "4"\n', "")
    study = write_study(tmp_path, text)
    status = main(["tune", str(study), "--dry-run"])
    line = one_error_line(capsys.readouterr().err)
    assert status == 2 and key in line and needle in line and "hint:" in line, line


def test_hints_name_the_next_step(tmp_path, capsys):
    study = write_study(tmp_path)
    # an export is what `hpo train` takes; a study file is a step earlier
    status = main(["train", str(study)])
    line = one_error_line(capsys.readouterr().err)
    assert status == 2 and "hpo export" in line and "pass fmt" not in line, line
    # a file that is no checkpoint: the command that writes one, not an API name
    status = main(["predict", str(ROOT / "README.md"), "--scene", str(tmp_path)])
    line = one_error_line(capsys.readouterr().err)
    assert status == 2 and "hpo train" in line and "save_checkpoint" not in line, line
    status = main(["predict", str(tmp_path / "nope.pt"), "--scene", str(tmp_path)])
    line = one_error_line(capsys.readouterr().err)
    assert status == 2 and "no such checkpoint" in line and "hint:" in line, line
    status = main(["tune", str(study), "--from-stage", "nope"])
    line = one_error_line(capsys.readouterr().err)
    assert status == 2 and "hint:" in line and "optim" in line, line


def test_missing_files_on_the_command_line_exit_alike(tmp_path, capsys):
    # Regression: a missing study file gave 2, a missing export 1.
    statuses = {
        "study": main(["tune", str(tmp_path / "nope.toml")]),
        "export": main(["train", str(tmp_path / "nope.yaml")]),
        "checkpoint": main(["predict", str(tmp_path / "nope.pt"), "--scene", str(tmp_path)]),
    }
    capsys.readouterr()
    assert set(statuses.values()) == {2}, statuses


def test_permission_error_has_a_hint(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    # root ignores file modes; sysfs refuses new folders to everyone
    target = Path("/sys/hpo-test") if os.geteuid() == 0 else locked / "scene"
    try:
        status = main(["synth", str(target), "--size", "16", "--dates", "1"])
    finally:
        locked.chmod(0o700)
    line = one_error_line(capsys.readouterr().err)
    assert status == 1 and ("not permitted" in line or "ermission denied" in line), line
    assert "hint:" in line, line


def test_foreign_pickle_is_one_line_without_a_torch_warning(tmp_path):
    # Regression: torch's "Detected pickle protocol 5" warning came before the error.
    import pickle

    (tmp_path / "raw.pt").write_bytes(pickle.dumps([1, 2], protocol=5))
    run = subprocess.run(
        [sys.executable, "-m", "hpo.cli", "predict", "raw.pt", "--scene", "."],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert run.returncode == 2, run.stderr
    one_error_line(run.stderr)


def test_status_by_url_names_the_metric(tuned, capsys):
    # Regression: `hpo status URL` said "maximize value".
    study = tuned
    ensure_tuned(study)
    url = f"sqlite:///{study.parent / 'tiny.db'}"
    for summary in optuna.get_all_study_summaries(url):
        optuna.load_study(study_name=summary.study_name, storage=url).set_metric_names(["f1"])
    capsys.readouterr()
    assert main(["status", url]) == 0
    out = capsys.readouterr().out
    assert "maximize f1" in out and "best f1" in out, out
