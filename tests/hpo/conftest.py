"""Fixtures of the engine tests: real SQLite / PostgreSQL / Redis storages, cheap objectives."""

from __future__ import annotations

import socket
import uuid

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from hpo import Stage

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
REDIS_URL = "redis://127.0.0.1:6379/0"

optuna.logging.set_verbosity(optuna.logging.WARNING)


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


def two_stages(n_random: int = 3, n_bayes: int = 2, sampler: str | None = "tpe") -> list[Stage]:
    """Two small stages: a float and an int, then a log float and a categorical."""
    return [
        Stage(
            "first",
            {"x": FloatDistribution(-5.0, 5.0), "n": IntDistribution(1, 9)},
            defaults={"x": 0.0, "n": 5},
            n_random=n_random,
            n_bayes=n_bayes,
            sampler=sampler,
        ),
        Stage(
            "second",
            {
                "lr": FloatDistribution(1e-4, 1.0, log=True),
                "act": CategoricalDistribution(["relu", "tanh", "gelu"]),
            },
            defaults={"lr": 0.01, "act": "relu"},
            n_random=n_random,
            n_bayes=n_bayes,
            sampler=sampler,
        ),
    ]


def quadratic(params: dict) -> float:
    """A separable quadratic with its maximum 1.0 at x=1, n=3, lr=0.1, act=tanh."""
    import math

    return (
        -((params["x"] - 1.0) ** 2)
        - 0.1 * (params["n"] - 3) ** 2
        - (math.log10(params["lr"]) + 1.0) ** 2
        + (1.0 if params["act"] == "tanh" else 0.0)
    )
