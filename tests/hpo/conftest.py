"""Fixtures of the engine tests: real SQLite / PostgreSQL / Redis storages, cheap objectives."""

from __future__ import annotations

import signal
import socket
import uuid

import optuna
import pytest

# The engine tests' search, shared with the chaos kit's driver (re-exported for the tests).
from benchmarks.reliability.chaos_kit import quadratic as quadratic
from benchmarks.reliability.chaos_kit import two_stages as two_stages

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
REDIS_URL = "redis://127.0.0.1:6379/0"

optuna.logging.set_verbosity(optuna.logging.WARNING)


def interruptible() -> None:
    """``preexec_fn`` of a child a test sends Ctrl-C: SIGINT at its default.

    A shell without job control starts background commands with SIGINT ignored, and a
    child inherits that; a test run started so would see its drivers ignore the signal.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _reachable(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture
def pg_url() -> str:
    """The local PostgreSQL test database (skipped when there is none)."""
    if not _reachable(5432):
        pytest.skip("no PostgreSQL server at 127.0.0.1:5432")
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        pytest.skip("psycopg2 is not installed (pip install 'landslide-hpo[postgres]')")
    return PG_URL


@pytest.fixture
def redis_url():
    """A Redis journal URL with a fresh key prefix, cleaned up after the test."""
    if not _reachable(6379):
        pytest.skip("no Redis server at 127.0.0.1:6379")
    redis = pytest.importorskip("redis", reason="redis client not installed")
    prefix = f"hpo-test-{uuid.uuid4().hex[:8]}"
    yield f"{REDIS_URL}?prefix={prefix}"
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(f"{prefix}*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def name() -> str:
    """A unique search name (server storages are shared between tests and people)."""
    return f"t{uuid.uuid4().hex[:10]}"
