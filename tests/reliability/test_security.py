"""Security: study files are data only, outputs stay where the user allows, passwords never
leave the process, the dashboard listens on this machine only, files are replaced atomically.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from hpo.engine.errors import ExportError, SpecError, StorageError
from hpo.engine.storage import make_storage
from hpo.study.schema import OUTPUT_KEYS, load_study_file
from tests.reliability._inputs import STUDY, assert_one_line_error, run_cli, write_study

ROOT = Path(__file__).resolve().parents[2]
SECRET = "s3cr3t-pw"


def _closed_port() -> int:
    """A local TCP port nothing listens on (bound, then released), so connecting fails fast."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ============================================================== study files are data only


def test_study_file_strings_are_never_run(tmp_path: Path) -> None:
    """Strings that look like code stay strings: TOML has no tags, includes or evaluation."""
    marker = tmp_path / "code_ran"
    payload = f"__import__('os').mkdir('{marker}')"
    text = STUDY.replace('name = "hostile"', f'name = "hostile"\ndescription = "{payload}"')
    spec = load_study_file(write_study(tmp_path, text), check_paths=False)
    assert spec.description == payload
    # as a choice of an integer parameter it is refused by name (the network's type check,
    # run on every choice since issue 21), quoted as text, never run
    text = text.replace("choices = [1, 2], default = 1", f'choices = [1, "{payload}"], default = 1')
    status, _, err = run_cli("tune", str(write_study(tmp_path, text)), "--dry-run")
    assert_one_line_error(status, err, payload, "expected an integer")
    assert not marker.exists()


def test_export_file_is_read_with_safe_yaml(tmp_path: Path) -> None:
    from hpo.study.export import load_export

    marker = tmp_path / "code_ran"
    path = tmp_path / "best.yaml"
    path.write_text(f'format: !!python/object/apply:os.mkdir ["{marker}"]\n')
    with pytest.raises(ExportError, match="not valid YAML"):
        load_export(path)
    assert not marker.exists()


# ============================================================== output paths are confined

# (key, value in the study file) -> escapes the study's folder and the working folder
ESCAPING = [
    ("storage", "sqlite:///{outside}/x.db"),
    ("storage", "sqlite:///../../x.db"),
    ("storage", "../x.db"),
    ("storage", "journal://{outside}/x.log"),
    ("storage", "~/x.db"),
    ("artifacts", "{outside}/artifacts"),
    ("artifacts", "../artifacts"),
    ("data.cache_dir", "../../cubes"),
    ("data.cache_dir", "{outside}/cubes"),
]


def _with_output(key: str, value: str) -> str:
    if key == "data.cache_dir":
        return STUDY.replace("[data]\n", f'[data]\ncache_dir = "{value}"\n')
    return STUDY.replace("seed = 0", f'seed = 0\n{key} = "{value}"')


@pytest.fixture
def nested(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A study folder two levels below ``tmp_path``, run from an unrelated working folder."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    study_dir = tmp_path / "project" / "studies"
    study_dir.mkdir(parents=True)
    return study_dir


@pytest.mark.parametrize(("key", "value"), ESCAPING)
def test_output_path_escaping_the_study_folder_is_a_spec_error(
    nested: Path, tmp_path: Path, key: str, value: str
) -> None:
    outside = tmp_path / "elsewhere"
    path = write_study(nested, _with_output(key, value.format(outside=outside)))
    with pytest.raises(SpecError) as info:
        load_study_file(path, check_paths=False)
    err = info.value
    assert err.key == key and err.file == str(path)
    assert "outside" in str(err) and "may only write inside its own folder" in err.hint
    assert key in OUTPUT_KEYS


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("storage", "sqlite:///runs/x.db"),
        ("storage", "sqlite:///{study}/abs.db"),  # absolute, but inside the study's folder
        ("storage", "sqlite:///{cwd}/x.db"),  # the working folder
        ("storage", "postgresql://user@db.example/hpo"),  # not a file
        ("artifacts", "out/./artifacts"),
        ("data.cache_dir", "../.cache/cubes"),  # the shipped studies' shared cache
    ],
)
def test_output_paths_inside_the_allowed_folders_are_accepted(
    nested: Path, key: str, value: str
) -> None:
    text = _with_output(key, value.format(study=nested, cwd=Path.cwd()))
    load_study_file(write_study(nested, text), check_paths=False)


def test_explicit_command_line_output_may_go_anywhere(nested: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    hostile = _with_output("storage", f"sqlite:///{elsewhere}/x.db")
    path = write_study(nested, hostile)
    # the study file's own value is replaced, so it is not held to the study's folder
    load_study_file(path, check_paths=False, explicit=("storage",))
    status, out, err = run_cli(
        "tune", str(write_study(nested)), "--dry-run", "--storage", f"{elsewhere}/cli.db"
    )
    assert status == 0, err
    assert f"sqlite:///{elsewhere}/cli.db" in out


@pytest.mark.parametrize(("key", "value"), [c for c in ESCAPING if "{outside}" in c[1]])
def test_output_outside_is_allowed_when_the_user_says_so(
    nested: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key: str, value: str
) -> None:
    # The refusal is a good default against hostile study files; a user who keeps runs on
    # another disk allows that folder explicitly (issue 21): the command line or the env.
    outside = tmp_path / "elsewhere"
    path = write_study(nested, _with_output(key, value.format(outside=outside)))
    with pytest.raises(SpecError) as info:
        load_study_file(path, check_paths=False, allow=[tmp_path / "other"])
    assert "--allow-outside" in info.value.hint
    load_study_file(path, check_paths=False, allow=[outside])
    monkeypatch.setenv("HPO_ALLOW_OUTSIDE", f"{tmp_path / 'other'}{os.pathsep}{outside}")
    load_study_file(path, check_paths=False)


def test_allow_outside_on_the_command_line(nested: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    path = write_study(nested, _with_output("storage", f"sqlite:///{outside}/x.db"))
    status, _, err = run_cli("tune", str(path), "--dry-run")
    assert_one_line_error(status, err, "outside", "--allow-outside")
    status, out, err = run_cli("tune", str(path), "--dry-run", "--allow-outside", str(outside))
    assert status == 0, err
    assert f"sqlite:///{outside}/x.db" in out and not outside.exists()
    # every command that reads the study takes it
    status, _, err = run_cli("status", str(path), "--allow-outside", str(outside))
    assert status == 0, err
    for command in (["report", "-o", str(nested / "r")], ["export", "-o", str(nested / "b.yaml")],
                    ["dashboard"]):
        status, _, err = run_cli(command[0], str(path), *command[1:],
                                 "--allow-outside", str(outside))
        assert_one_line_error(status, err, "no layer-wise search")
    assert not outside.exists()


def test_export_cache_dir_is_held_to_the_same_folders(tmp_path: Path) -> None:
    # Regression: an edited export could write its cube anywhere.
    from hpo.study.retrain import _check_cache_dir, train_export
    from networks import ModelConfig

    outside = tmp_path / "elsewhere"
    study_dir = tmp_path / "project" / "studies"
    doc = {
        "format": "landslide-hpo/export/1",
        "seed": 0,
        "model": {"name": "fusion", "config": ModelConfig().to_dict()},
        "data": {"scene": "scene/scene.toml", "cache_dir": str(outside / "cubes")},
        "data_base_dir": str(study_dir),
    }
    with pytest.raises(ExportError) as info:
        train_export(doc, tmp_path / "run")
    assert "cache_dir" in str(info.value) and "--allow-outside" in info.value.hint
    assert not outside.exists() and not (tmp_path / "run").exists()
    _check_cache_dir(doc["data"], study_dir, None, [outside])  # allowed: no error
    for fine in ("../.cache/cubes", "cubes"):
        _check_cache_dir({"cache_dir": fine}, study_dir, None, [])
    # a base at the file system's root does not open every folder
    with pytest.raises(ExportError):
        _check_cache_dir({"cache_dir": "etc/cubes"}, Path("/"), None, [])


def test_outputs_follow_the_umask(tmp_path: Path) -> None:
    # Regression: every atomically written output was mode 0600 (the temporary file's), so
    # a GIS server or a colleague could not read map.tif, model.pt, metrics.json, ...
    from hpo.engine.atomic import atomic_path, write_text

    old = os.umask(0o022)
    try:
        write_text(tmp_path / "report.md", "x")
        with atomic_path(tmp_path / "map.png") as tmp:
            tmp.write_bytes(b"png")
        os.umask(0o077)
        write_text(tmp_path / "private.md", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "report.md").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "map.png").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "private.md").stat().st_mode & 0o777 == 0o600


def test_checkpoint_follows_the_umask(tmp_path: Path) -> None:
    # Regression (issue 21): model.pt was mode 0600 too (networks' own atomic write).
    from networks import ModelConfig, build_model, save_checkpoint

    config = ModelConfig.from_params({"dcnn.depth": 1, "dcnn.width": 2, "dbn.hidden": "2",
                                      "temporal.conv_channels": 2, "temporal.lstm_hidden": 2})
    model = build_model("fusion", 1, 1, config)
    old = os.umask(0o022)
    try:
        save_checkpoint(tmp_path / "model.pt", model, model_name="fusion", config=config,
                        source_names=["a"])
    finally:
        os.umask(old)
    assert (tmp_path / "model.pt").stat().st_mode & 0o777 == 0o644


def test_symlink_made_by_the_user_inside_the_study_folder_is_allowed(
    nested: Path, tmp_path: Path
) -> None:
    (tmp_path / "big-disk").mkdir()
    (nested / "runs").symlink_to(tmp_path / "big-disk")
    spec = load_study_file(
        write_study(nested, _with_output("storage", "sqlite:///runs/x.db")), check_paths=False
    )
    assert spec.storage == f"sqlite:///{tmp_path / 'big-disk' / 'x.db'}"


# ============================================================== passwords never leak


def _secret_url(port: int, user: str = "hpo") -> str:
    return f"postgresql://{user}:{SECRET}@127.0.0.1:{port}/test"


def _chain(exc: BaseException | None) -> list[str]:
    """The messages of an exception and everything it was raised from or during."""
    seen = []
    while exc is not None and len(seen) < 10:
        seen.append(f"{exc!r} {exc}")
        exc = exc.__cause__ or exc.__context__
    return seen


def _assert_no_secret(*texts: str) -> None:
    for text in texts:
        assert SECRET not in text, text


def test_failed_connection_masks_the_password_everywhere(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    url = _secret_url(_closed_port())
    with pytest.raises(StorageError) as info:
        make_storage(url)
    assert "hpo:***@127.0.0.1" in str(info.value)
    _assert_no_secret(*_chain(info.value), *(r.getMessage() for r in caplog.records))


def test_cli_never_prints_the_password(tmp_path: Path) -> None:
    url = _secret_url(_closed_port())
    study = write_study(tmp_path)
    broken = write_study(tmp_path / "broken")
    (tmp_path / "broken" / "scene" / "dem.tif").unlink()
    runs = {
        "status url": run_cli("status", url),
        "status study": run_cli("status", str(study), "--storage", url),
        "status json": run_cli("status", str(study), "--storage", url, "--json"),
        "dashboard": run_cli("dashboard", url, "--port", str(_closed_port())),
        "report": run_cli("report", url, "-o", str(tmp_path / "report")),
        "export": run_cli("export", str(study), "--storage", url, "-o", str(tmp_path / "b.yaml")),
        "dry run": run_cli("tune", str(study), "--dry-run", "--storage", url),
        # fails preparing the data, after printing the storage and the dashboard command
        "tune": run_cli("tune", str(broken), "--storage", url, "--plain"),
    }
    for name, (status, out, err) in runs.items():
        _assert_no_secret(out, err)
        if name == "tune":
            assert "hpo:***@127.0.0.1" in out  # the storage is shown, masked
        if name == "dry run":  # it opens the storage (issue 21): the error names it, masked
            assert_one_line_error(status, err, "hpo:***@127.0.0.1", "cannot open the storage")
        else:
            assert_one_line_error(status, err)
    assert "hpo:***@" in runs["status url"][2]
    assert not (tmp_path / "b.yaml").exists() and not (tmp_path / "report").exists()


@pytest.fixture
def pg_search(tmp_path: Path) -> Any:
    """A finished tiny search on the local PostgreSQL, opened through a URL with a password.

    The test server trusts local connections, so the password is accepted and ignored:
    what matters is that it never comes out again.
    """
    port = 5432
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        pytest.skip("no PostgreSQL server at 127.0.0.1:5432")
    pytest.importorskip("psycopg2", reason="psycopg2 is not installed")
    from hpo import study as st

    name = f"sec{uuid.uuid4().hex[:8]}"
    path = write_study(tmp_path, STUDY.replace('name = "hostile"', f'name = "{name}"'))
    spec = st.load_study(path, storage=_secret_url(port, "postgres"), check_paths=False)

    def objective(params: dict[str, Any]) -> float:
        return -abs(math.log10(params["optim.lr"]) + 2.5) - params["temporal.lstm_hidden"] / 1e3

    search = st.make_search(spec, objective)
    result = search.run()
    yield path, spec.storage, result
    search.reset()


def test_search_on_a_password_url_leaks_it_nowhere(
    pg_search: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.INFO, logger="matplotlib")  # font lookups: noise, no URLs
    study, url, result = pg_search
    assert SECRET in url and result.finished
    outputs = [
        run_cli("status", str(study), "--storage", url),
        run_cli("status", str(study), "--storage", url, "--json"),
        run_cli("tune", str(study), "--dry-run", "--storage", url),
        run_cli("export", str(study), "--storage", url, "-o", str(tmp_path / "best.yaml")),
        run_cli("report", str(study), "--storage", url, "-o", str(tmp_path / "report")),
    ]
    for status, out, err in outputs:
        assert status == 0, err
        _assert_no_secret(out, err)
    export = (tmp_path / "best.yaml").read_text()
    report = (tmp_path / "report" / "report.md").read_text()
    _assert_no_secret(export, report, result.storage, *(r.getMessage() for r in caplog.records))
    assert "postgres:***@127.0.0.1:5432/test" in export and "***" in report


# ============================================================== the dashboard is local


def _listening_addresses(port: int) -> set[str]:
    """The local addresses with a socket LISTENing on ``port`` (Linux /proc/net/tcp*)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A = LISTEN
                found.add(address)
    return found


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads Linux /proc/net/tcp")
def test_dashboard_listens_on_loopback_only_by_default(tmp_path: Path) -> None:
    import optuna

    db = tmp_path / "dash.db"
    optuna.create_study(storage=f"sqlite:///{db}", study_name="dash")
    port = _closed_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "hpo.cli", "dashboard", f"sqlite:///{db}", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + 60
        while not _listening_addresses(port) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()[0]
            time.sleep(0.2)
        assert _listening_addresses(port) == {"0100007F"}  # 127.0.0.1, little-endian hex
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert f"http://127.0.0.1:{port}/" in out
    assert "listening on 127.0.0.1 only (this machine" in out


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0"])
def test_dashboard_says_where_it_listens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, host: str
) -> None:
    import optuna
    import optuna_dashboard

    db = tmp_path / "dash.db"
    optuna.create_study(storage=f"sqlite:///{db}", study_name="dash")
    served: dict[str, Any] = {}
    monkeypatch.setattr(
        optuna_dashboard, "run_server", lambda storage, **kw: served.update(kw)
    )  # no real server
    argv = ["dashboard", f"sqlite:///{db}", "--port", "8123"]
    status, out, err = run_cli(*(argv if host == "127.0.0.1" else [*argv, "--host", host]))
    assert status == 0 and served["host"] == host and served["port"] == 8123
    if host == "127.0.0.1":
        assert "listening on 127.0.0.1 only" in out and err == ""
    else:
        assert "listening on 0.0.0.0 (set by --host)" in out
        assert "anyone who can reach this machine" in err


# ============================================================== atomic replacement


class _Crash(OSError):
    """The disk filled up (or the process died) half way through a write."""


def _half_writer(monkeypatch: pytest.MonkeyPatch, module: Any) -> None:
    """Make ``open()`` in ``module`` return files that write half of the data, then crash."""
    real_open = open

    class Half:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self.file = real_open(*args, **kwargs)

        def write(self, data: Any) -> int:
            self.file.write(data[: len(data) // 2])
            self.file.flush()
            raise _Crash(28, "No space left on device")

        def __getattr__(self, name: str) -> Any:
            return getattr(self.file, name)

        def __enter__(self) -> Half:
            return self

        def __exit__(self, *exc: object) -> None:
            self.file.close()

    monkeypatch.setattr(module, "open", Half, raising=False)


def _only(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_export_crash_mid_write_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hpo.engine.atomic
    from hpo.engine.search import LayerwiseSearch
    from hpo.study.export import export_best
    from hpo.study.schema import parse_study

    spec = parse_study(
        json.loads(json.dumps(_study_dict())), file=tmp_path / "s.toml", check_paths=False
    )
    search = LayerwiseSearch(
        spec.to_stages(),
        lambda p: -p["optim.lr"],
        storage=None,
        study_name=spec.name,
        sampler="random",
        seed=0,
    )
    result = search.run()
    out = tmp_path / "out"
    out.mkdir()
    (out / "best.yaml").write_text("old: export\n")
    _half_writer(monkeypatch, hpo.engine.atomic)
    with pytest.raises(ExportError, match="No space left"):
        export_best(result, out / "best.yaml", spec=spec)
    assert (out / "best.yaml").read_text() == "old: export\n"
    assert _only(out) == ["best.yaml"]  # no temporary half file left behind


@pytest.mark.parametrize("crash", [_Crash, KeyboardInterrupt])
def test_atomic_text_write_crash_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, crash: type[BaseException]
) -> None:
    """The helper every report, metrics file and export goes through; Ctrl-C included."""
    import hpo.engine.atomic

    target = tmp_path / "report.md"
    target.write_text("old report\n")

    def crashing_fsync(fd: int) -> None:
        raise crash()

    monkeypatch.setattr(hpo.engine.atomic.os, "fsync", crashing_fsync)
    with pytest.raises(crash):
        hpo.engine.atomic.write_json(target, {"new": "report" * 1000})
    assert target.read_text() == "old report\n"
    assert _only(tmp_path) == ["report.md"]


def test_checkpoint_crash_mid_write_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    from networks import ModelConfig, build_model, load_checkpoint, save_checkpoint

    model = build_model("segnet", 2, 1)
    kwargs = {"model_name": "segnet", "config": ModelConfig(), "source_names": ["a", "b"]}
    path = save_checkpoint(tmp_path / "model.pt", model, **kwargs)
    before = path.read_bytes()
    real_save = torch.save

    def half_save(obj: Any, file: Any, *args: Any, **kw: Any) -> None:
        real_save(obj, file, *args, **kw)
        file.truncate(file.tell() // 2)
        raise _Crash(28, "No space left on device")

    monkeypatch.setattr(torch, "save", half_save)
    with pytest.raises(_Crash):
        save_checkpoint(path, model, **kwargs)
    assert path.read_bytes() == before and _only(tmp_path) == ["model.pt"]
    monkeypatch.undo()
    assert load_checkpoint(path).source_names == ["a", "b"]


def test_cube_cache_crash_mid_build_leaves_no_partial_cube(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cube cache (arrays + meta.json) appears whole under its hash, or not at all."""
    import data
    import data.store
    from tests.reliability._inputs import scene_section, write_scene

    write_scene(tmp_path / "scene")
    cache = tmp_path / "cache"
    real_finish = data.store.CubeWriter.finish

    def crash_after_arrays(self: Any, meta: dict[str, Any]) -> Any:
        real_finish(self, meta)  # every array and meta.json written...
        raise _Crash(28, "No space left on device")  # ...then the process dies

    monkeypatch.setattr(data.store.CubeWriter, "finish", crash_after_arrays)
    with pytest.raises(_Crash):
        data.build_cube(scene_section(), base_dir=tmp_path / "scene", cache_dir=cache)
    assert list(cache.iterdir()) == []  # neither the cube nor its temporary folder
    monkeypatch.undo()
    cube = data.build_cube(scene_section(), base_dir=tmp_path / "scene", cache_dir=cache)
    assert cube.shape[-2:] == (16, 16) and len(list(cache.iterdir())) == 1


def _study_dict() -> dict[str, Any]:
    import tomllib

    raw = tomllib.loads(STUDY)
    for stage in raw["stages"]:
        stage["n_random"], stage["n_bayes"] = 2, 0
    return raw
