"""Storage URLs -> Optuna storages, on the real backends."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import threading
from pathlib import Path

import optuna
import pytest
from optuna.storages import InMemoryStorage, JournalStorage, RDBStorage

from hpo import LayerwiseSearch, StorageError, make_artifact_store, make_storage, mask_url
from hpo.engine.storage import FlockJournalLock, SQLiteStorage, describe_storage
from tests.hpo.conftest import quadratic, two_stages


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql://bob:s3cret@db:5432/hpo", "postgresql://bob:***@db:5432/hpo"),
        ("redis://:pw@cache:6379/0", "redis://:***@cache:6379/0"),
        ("postgresql+psycopg2://u:p%40ss@h/db", "postgresql+psycopg2://u:***@h/db"),
        ("sqlite:///studies/a.db", "sqlite:///studies/a.db"),
        ("postgresql://bob@db/hpo", "postgresql://bob@db/hpo"),
    ],
)
def test_mask_url_hides_only_the_password(url, masked):
    assert mask_url(url) == masked


def _pragma(storage: SQLiteStorage, name: str):
    with storage.engine.connect() as conn:
        return conn.exec_driver_sql(f"PRAGMA {name}").scalar()


def test_sqlite_creates_folders_and_uses_wal_with_normal_sync(tmp_path):
    storage = make_storage(f"sqlite:///{tmp_path}/deep/er/s.db")
    assert isinstance(storage, SQLiteStorage)
    assert (tmp_path / "deep" / "er" / "s.db").exists()
    assert _pragma(storage, "journal_mode") == "wal"
    assert _pragma(storage, "synchronous") == 1  # NORMAL
    # A pickled storage (e.g. sent to a Ray worker) is tuned the same way.
    again = pickle.loads(pickle.dumps(storage))
    assert _pragma(again, "synchronous") == 1


def test_bare_names_go_under_studies(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert isinstance(make_storage("demo.db"), SQLiteStorage)
    assert (tmp_path / "studies" / "demo.db").exists()
    assert isinstance(make_storage("demo.log"), JournalStorage)
    assert (tmp_path / "studies" / "demo.log").exists()


def test_journal_none_and_objects(tmp_path):
    storage = make_storage(f"journal:///{tmp_path}/j/s.log")
    assert isinstance(storage, JournalStorage)
    assert describe_storage(storage) == f"journal:///{tmp_path}/j/s.log"
    assert isinstance(make_storage(None), InMemoryStorage)
    assert make_storage(storage) is storage


def test_bad_urls_are_storage_errors_with_masked_passwords():
    with pytest.raises(StorageError, match="unknown storage scheme 'mongodb'"):
        make_storage("mongodb://x")
    with pytest.raises(StorageError) as info:
        make_storage("postgresql://bob:s3cret@127.0.0.1:1/test")
    assert "s3cret" not in str(info.value) and "bob:***@" in str(info.value)
    assert "hint" in str(info.value)
    with pytest.raises(StorageError, match="redis"):
        make_storage("redis://127.0.0.1:1/0")


def test_artifact_store_from_a_folder(tmp_path):
    assert make_artifact_store(None) is None
    store = make_artifact_store(tmp_path / "a" / "b")
    assert (tmp_path / "a" / "b").is_dir()
    assert isinstance(store, optuna.artifacts.FileSystemArtifactStore)
    assert make_artifact_store(store) is store


@pytest.mark.postgres
def test_postgres_url_opens_with_the_installed_driver(pg_url, name):
    storage = make_storage(pg_url, heartbeat_interval=1, grace_period=2)
    assert isinstance(storage, RDBStorage) and storage.get_heartbeat_interval() == 1
    search = LayerwiseSearch(two_stages(2, 1), quadratic, storage=pg_url, study_name=name)
    try:
        assert search.run().finished
    finally:
        search.reset()


@pytest.mark.redis
def test_redis_journal_runs_a_search_and_loads_it_back(redis_url, name):
    result = LayerwiseSearch(
        two_stages(2, 1), quadratic, storage=redis_url, study_name=name
    ).run()
    again = LayerwiseSearch.load(redis_url, name).status()
    assert again.finished and again.best_params == result.best_params
    assert describe_storage(make_storage(redis_url)).startswith("redis://127.0.0.1")


_HOLD_LOCK = """
import sys, time
from hpo.engine.storage import FlockJournalLock
FlockJournalLock(sys.argv[1]).acquire()
print("held", flush=True)
time.sleep(120)
"""


def _lock_is_free(path: Path) -> bool:
    fcntl = pytest.importorskip("fcntl")
    fd = os.open(f"{path}.flock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # closing drops the lock this probe may have taken
    return True


def test_a_driver_killed_holding_the_journal_lock_leaves_no_lock_behind(tmp_path):
    pytest.importorskip("fcntl")
    path = tmp_path / "s.log"
    storage = make_storage(f"journal:///{path}")
    study = optuna.create_study(storage=storage, study_name="s")
    root = Path(__file__).resolve().parents[3]
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(path)],
                              stdout=subprocess.PIPE, text=True, cwd=root)
    writer = threading.Thread(
        target=lambda: study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2))
    try:
        assert holder.stdout.readline().strip() == "held"
        before = path.read_bytes()
        writer.start()
        writer.join(0.5)
        assert writer.is_alive() and path.read_bytes() == before  # it waits for the lock
    finally:
        holder.kill()
        holder.wait()
    # Optuna's link-file lock would stay behind here and hold writers off for 30 s
    writer.join(20)
    assert not writer.is_alive() and len(study.trials) == 2
    assert _lock_is_free(path)


def test_the_journal_lock_excludes_threads_of_one_process(tmp_path):
    pytest.importorskip("fcntl")
    lock = pickle.loads(pickle.dumps(FlockJournalLock(str(tmp_path / "s.log"))))
    lock.acquire()
    got = threading.Event()
    other = threading.Thread(target=lambda: (lock.acquire(), got.set(), lock.release()))
    other.start()
    assert not got.wait(0.3)
    lock.release()
    assert got.wait(10)
    other.join()


@pytest.mark.postgres
def test_drivers_opening_a_new_postgresql_database_at_once_all_get_it(pg_url):
    """Concurrent CREATE TABLE on a fresh database: one wins, the others open its schema."""
    import uuid

    import psycopg2

    name = f"hpo_race_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(pg_url)
    admin.autocommit = True
    admin.cursor().execute(f"CREATE DATABASE {name}")
    fresh = pg_url.rsplit("/", 1)[0] + "/" + name
    try:
        start, errors, opened = threading.Barrier(4), [], []

        def open_it():
            start.wait()
            try:
                opened.append(make_storage(fresh))
            except Exception as exc:  # noqa: BLE001 - collected for the assertion
                errors.append(exc)

        threads = [threading.Thread(target=open_it) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert errors == [] and len(opened) == 4
        assert all(isinstance(s, RDBStorage) for s in opened)
        for storage in opened:
            storage.engine.dispose()
    finally:
        admin.cursor().execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()
