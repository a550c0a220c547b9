"""Storage URLs -> Optuna storages, on the real backends."""

from __future__ import annotations

import pickle

import optuna
import pytest
from optuna.storages import InMemoryStorage, JournalStorage, RDBStorage

from hpo import LayerwiseSearch, StorageError, make_artifact_store, make_storage, mask_url
from hpo.storage import SQLiteStorage, describe_storage
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
