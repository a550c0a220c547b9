"""Storage URLs -> Optuna storages: SQLite (default), PostgreSQL, Redis journal, journal file."""

from __future__ import annotations

import importlib.util
import logging
import os
import sqlite3
import threading
import time
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import optuna
import sqlalchemy
from optuna.artifacts import FileSystemArtifactStore
from optuna.storages import (
    BaseStorage,
    InMemoryStorage,
    JournalStorage,
    RDBStorage,
    _CachedStorage,
)
from optuna.storages.journal import JournalFileBackend, JournalRedisBackend
from optuna.storages.journal._file import BaseJournalFileLock  # the lock's interface
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

from hpo.engine.errors import StorageError
from hpo.engine.urls import expand_bare_name, file_of, mask_url, scheme_of

try:
    import fcntl
except ImportError:  # not POSIX: journal files keep Optuna's own lock
    fcntl = None

_log = logging.getLogger(__name__)

SCHEMES = ("sqlite", "postgresql", "redis", "journal")

StorageLike = str | BaseStorage | None
"""A storage URL, an Optuna storage, or ``None`` for an in-memory storage."""


class SQLiteStorage(RDBStorage):
    """An ``RDBStorage`` on SQLite in WAL mode with ``synchronous=NORMAL``.

    A trial costs a handful of commits; with SQLite's defaults each commit syncs the
    rollback journal, which dominates the cost of a cheap trial. WAL with NORMAL
    synchronization keeps the database consistent across crashes (a power cut may lose
    the last commits, a killed process loses nothing).
    """

    def __init__(self, url: str, **kwargs: Any) -> None:
        engine_kwargs = kwargs.pop("engine_kwargs", None) or {}
        # Several drivers (or a driver and a dashboard) may wait for the write lock.
        engine_kwargs.setdefault("connect_args", {"timeout": 60})
        super().__init__(url, engine_kwargs=engine_kwargs, **kwargs)
        _tune_sqlite(self.engine)

    def __setstate__(self, state: dict[Any, Any]) -> None:
        # Unpickling (e.g. in a Ray worker) builds a new engine: tune that one too.
        super().__setstate__(state)
        _tune_sqlite(self.engine)


def _tune_sqlite(engine: Any) -> None:
    def on_connect(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    sqlalchemy.event.listen(engine, "connect", on_connect)
    # Connections opened while creating the tables predate the listener.
    engine.dispose()


def make_storage(
    url: StorageLike,
    *,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
) -> BaseStorage:
    """Open an Optuna storage from a URL.

    Supported: ``sqlite:///path.db`` (parent folders created; a bare ``name.db`` goes under
    ``studies/``), ``postgresql://user:pw@host/db``, ``redis://host:port/db`` (Optuna's
    journal on Redis; ``?prefix=...`` keeps several searches apart in one database),
    ``journal:///path.log`` (journal file, e.g. on a shared file system) and ``None``
    (in memory). An Optuna storage object is returned unchanged.

    Args:
        url: The storage URL, an Optuna storage or ``None``.
        heartbeat_interval: Seconds between trial heartbeats on SQL storages; the engine
            fails RUNNING trials whose heartbeat is older than ``grace_period``.
            ``None`` turns the heartbeat off.
        grace_period: Seconds without a heartbeat after which a trial's driver counts as
            gone; Optuna's default is twice the interval.

    Returns:
        An Optuna storage.

    Raises:
        StorageError: Unknown scheme, or the server cannot be reached.
    """
    if url is None:
        return InMemoryStorage()
    if isinstance(url, BaseStorage):
        return url
    if not isinstance(url, str) or not url:
        raise StorageError(
            f"storage must be a URL string, got {url!r}",
            hint="e.g. sqlite:///studies/demo.db or postgresql://user@host/db",
        )
    url = expand_bare_name(url)
    scheme = scheme_of(url)
    try:
        with warnings.catch_warnings():
            # Optuna flags the heartbeat arguments as experimental; the engine relies on them.
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            storage = _open(url, scheme, heartbeat_interval, grace_period)
    except StorageError:
        raise
    except ImportError as exc:
        raise StorageError(
            f"the driver for {scheme} is not installed ({exc})",
            url=url,
            hint="pip install 'landslide-hpo[postgres]' or 'landslide-hpo[redis]'",
        ) from exc
    except Exception as exc:  # noqa: BLE001 - drivers raise their own types; name the URL
        raise StorageError(
            f"cannot open the storage: {type(exc).__name__}: {_first_line(exc)}",
            url=url,
            hint="check that the server runs and the URL (user, host, port, database) is right",
        ) from exc
    if storage is None:
        raise StorageError(
            f"unknown storage scheme {scheme!r}",
            url=url,
            hint=f"use one of {', '.join(s + '://' for s in SCHEMES)}",
        )
    return storage


def _open(
    url: str, scheme: str, heartbeat_interval: int | None, grace_period: int | None
) -> BaseStorage | None:
    heartbeat = {"heartbeat_interval": heartbeat_interval, "grace_period": grace_period}
    if scheme == "sqlite":
        _make_parent(url.split(":///", 1)[-1], url)
        return _schema_retry(lambda: SQLiteStorage(url, **heartbeat))
    if scheme in ("postgresql", "postgres", "mysql"):
        return _rdb_storage(_with_postgres_driver(url), heartbeat)
    if scheme in ("redis", "rediss"):
        return _redis_storage(url)
    if scheme == "journal":
        # journal:///abs/path -> "/abs/path"; journal://rel/path -> "rel/path".
        path = url[len("journal://") :]
        _make_parent(path, url)
        return JournalStorage(JournalFileBackend(path, lock_obj=_journal_lock(path)))
    return None


_SCHEMA_TRIES = 5
"""Attempts to open a relational storage whose schema another driver is creating."""


def _rdb_storage(url: str, heartbeat: dict[str, Any]) -> RDBStorage:
    """``RDBStorage``, opened again when another driver creates the same schema meanwhile.

    Two drivers opening a new database at one moment both run ``CREATE TABLE``; PostgreSQL
    lets one win and fails the other on a unique index of its catalogue
    (``pg_type_typname_nsp_index``) or on the table that now exists. The schema is then
    complete, and the second attempt opens it.
    """
    return _schema_retry(
        lambda: RDBStorage(url, engine_kwargs={"pool_pre_ping": True}, **heartbeat)
    )


def _schema_retry(open_storage: Any) -> Any:
    """``open_storage()``, again when another driver was creating the same schema.

    SQLite has the same race as PostgreSQL: drivers started together on a new file each
    see no tables, and all but one fail on ``table ... already exists`` or on the
    ``alembic_version`` row the winner wrote. The schema is complete on the next try.
    """
    attempt = 1
    while True:
        try:
            return open_storage()
        except (IntegrityError, ProgrammingError, OperationalError) as exc:
            racing = not isinstance(exc, OperationalError) or "already exists" in str(exc)
            if not racing or attempt == _SCHEMA_TRIES:
                raise
        time.sleep(0.2 * attempt)
        attempt += 1


class FlockJournalLock(BaseJournalFileLock):
    """A journal file's lock that the operating system drops when its holder dies.

    Optuna's default lock is a link file: a driver killed while holding it leaves the file
    behind, and every later driver waits out a 30 s grace period before it breaks the
    lock. An ``flock`` on ``<journal>.flock`` ends with the process that holds it, so a
    restart after a kill writes at once. Every acquisition opens its own descriptor, so
    threads of one process exclude each other as processes do; Linux NFS clients map
    ``flock`` onto the server's byte-range locks.

    Args:
        path: The journal file.
    """

    def __init__(self, path: str) -> None:
        self._path = path + ".flock"
        self._held = threading.local()

    def __getstate__(self) -> dict[str, Any]:
        # a lock held here is not held in the process that unpickles it
        return {"_path": self._path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._path = state["_path"]
        self._held = threading.local()

    def acquire(self) -> bool:
        """Block until this thread holds the lock.

        Returns:
            True.
        """
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        self._held.fd = fd
        return True

    def release(self) -> None:
        """Give the lock up (closing the descriptor would too)."""
        fd = self._held.fd
        del self._held.fd
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


def _journal_lock(path: str) -> BaseJournalFileLock | None:
    """``FlockJournalLock`` where ``flock`` exists; None (Optuna's default) elsewhere."""
    return FlockJournalLock(path) if fcntl is not None else None


def _with_postgres_driver(url: str) -> str:
    """Name an installed PostgreSQL driver when the URL names none.

    SQLAlchemy 2.1 defaults ``postgresql://`` to psycopg 3, while the toolkit's
    ``[postgres]`` extra installs psycopg2; ``postgres://`` (Heroku style) is not
    accepted by SQLAlchemy at all.
    """
    scheme, sep, rest = url.partition("://")
    if scheme not in ("postgresql", "postgres"):
        return url
    if importlib.util.find_spec("psycopg") is not None:
        return f"postgresql+psycopg{sep}{rest}"
    return f"postgresql+psycopg2{sep}{rest}"


def _make_parent(path: str, url: str) -> None:
    if path in ("", ":memory:"):
        return
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(
            f"cannot create the folder of {path}: {exc}",
            url=url,
            hint="choose a writable location",
        ) from exc


def require_stored(url: str) -> None:
    """Refuse a file storage that does not exist, before anything creates it.

    Commands that only read a search (status, report, dashboard) must not leave a folder
    and an empty database behind a mistyped path.

    Args:
        url: A storage URL.

    Raises:
        StorageError: ``url`` names a SQLite or journal file that does not exist.
    """
    path = file_of(expand_bare_name(url))
    if path is not None and not path.exists():
        raise StorageError(
            f"no storage file {path}",
            url=url,
            hint="check the path (sqlite:///relative.db, sqlite:////absolute.db); "
            "`hpo tune STUDY.toml` creates it",
        )


def probe_storage(url: str) -> str:
    """Open a storage as ``hpo tune`` will, without creating a file storage (a dry run).

    Args:
        url: A storage URL.

    Returns:
        What was found, for the user: ``"reachable"``, ``"exists"`` or that a new file
        will be created.

    Raises:
        StorageError: The server cannot be reached, the database or file cannot be
            opened, or a new file could not be created.
    """
    url = expand_bare_name(url)
    path = file_of(url)
    if path is None:
        make_storage(url)
        return "reachable"
    if path.exists():
        make_storage(url)
        return "exists"
    folder = path.absolute().parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise StorageError(
            f"cannot create {path}: {folder} is not a writable folder",
            url=url,
            hint="choose a writable location",
        )
    return "a new file, created when tuning starts"


def _redis_storage(url: str) -> JournalStorage:
    import redis  # the optional [redis] extra: absent, make_storage names it

    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    prefix = query.pop("prefix", "")
    clean = urlunsplit(parts._replace(query=urlencode(query)))
    client = redis.Redis.from_url(clean, socket_connect_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise StorageError(
            f"cannot reach Redis: {exc}",
            url=url,
            hint="start redis-server or fix host/port in the URL",
        ) from exc
    finally:
        client.close()
    return JournalStorage(JournalRedisBackend(clean, prefix=prefix))


def unwrap(storage: BaseStorage) -> BaseStorage:
    """The storage inside Optuna's cache wrapper (studies wrap RDB storages in one)."""
    return storage._backend if isinstance(storage, _CachedStorage) else storage


def describe_storage(storage: BaseStorage) -> str:
    """A printable name of a storage (its URL with the password masked).

    Args:
        storage: An Optuna storage.

    Returns:
        The masked URL, a journal file path, or ``in-memory``.
    """
    inner = unwrap(storage)
    if isinstance(inner, RDBStorage):
        return mask_url(inner.url)
    if isinstance(inner, JournalStorage):
        backend = inner._backend
        if isinstance(backend, JournalFileBackend):
            return f"journal:///{Path(backend._file_path).resolve()}"
        if isinstance(backend, JournalRedisBackend):
            return mask_url(backend._url)
        return "journal"
    if isinstance(inner, InMemoryStorage):
        return "in-memory"
    return type(inner).__name__


def make_artifact_store(
    location: str | Path | Any | None,
) -> Any:
    """Open an artifact store (e.g. for pretrained DBN weights) from a folder.

    Args:
        location: A folder (created when missing), an existing Optuna artifact store, or
            ``None`` for none.

    Returns:
        An Optuna artifact store or ``None``.

    Raises:
        StorageError: The folder cannot be created.
    """
    if location is None:
        return None
    if not isinstance(location, str | Path):
        return location
    path = Path(location)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(
            f"cannot create the artifact folder {path}: {exc}", hint="choose a writable folder"
        ) from exc
    return FileSystemArtifactStore(path)


def _first_line(exc: BaseException) -> str:
    return mask_url(str(exc).strip().splitlines()[0]) if str(exc).strip() else ""


def heartbeat_enabled(storage: BaseStorage) -> bool:
    """Whether the storage runs Optuna's RDB heartbeat (else the engine uses leases).

    Args:
        storage: An Optuna storage.

    Returns:
        True for an RDB storage with a heartbeat interval.
    """
    interval = getattr(storage, "get_heartbeat_interval", None)
    return interval is not None and interval() is not None


__all__ = [
    "SQLiteStorage",
    "StorageLike",
    "describe_storage",
    "heartbeat_enabled",
    "make_artifact_store",
    "make_storage",
    "mask_url",
    "probe_storage",
    "require_stored",
    "unwrap",
]
