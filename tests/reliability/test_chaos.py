"""Chaos: a layer-wise search whose driver is SIGKILLed at random moments, restarted
each time until it completes, loses and duplicates nothing and corrupts no file.

The short CI version of ``benchmarks/reliability/chaos.py``; the harness and the audit (what counts
as lost, duplicated, corrupt) are in ``benchmarks/reliability/chaos_kit.py``.
"""

from __future__ import annotations

import random

import pytest

from benchmarks.reliability.chaos_kit import Plan, chaos_search, storage_url
from tests.hpo.conftest import pg_url  # noqa: F401 - the fixture

# Trials long enough that random kills land in them, short enough for CI.
PLAN = Plan(n_random=3, n_bayes=1, refine=None, sleep=0.15)
SEEDS = {"sqlite": 11, "journal": 12, "postgres": 13}
# Kills of a finished search while it exports (each life imports torch for the export's
# network config: seconds); one storage is enough in CI, benchmarks/reliability/chaos.py does more.
EXPORT_KILLS = {"sqlite": 1, "journal": 0, "postgres": 0}
MAX_SEARCHES = 4


@pytest.mark.parametrize(
    "backend", ["sqlite", "journal", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_a_search_survives_sigkills_at_random_moments(tmp_path, backend, request):
    pg = request.getfixturevalue("pg_url") if backend == "postgres" else None
    url = storage_url(backend, tmp_path, pg_url=pg)
    kills = 0
    # Where a kill lands is up to the machine's speed: a fast one can outrun the random
    # delays and finish a search after one kill. Another search (another seed) then goes
    # on until two kills have landed, each search audited as strictly as the first.
    for attempt in range(MAX_SEARCHES):
        rng = random.Random(SEEDS[backend] + 100 * attempt)
        tally = chaos_search(url, tmp_path, rng, PLAN, export_kills=EXPORT_KILLS[backend])
        assert tally.problems == [], tally.to_dict()
        assert (tally.lost, tally.duplicated, tally.corrupt) == (0, 0, 0)
        assert tally.complete == sum(PLAN.budgets())
        kills += tally.kills
        if kills >= 2:
            break
    assert kills >= 2, f"{kills} kill(s) landed in {MAX_SEARCHES} searches"
