"""Resume after SIGKILL, and several drivers on one search (real subprocesses)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from optuna.trial import TrialState

from benchmarks.reliability.chaos_kit import DRIVER
from hpo import LayerwiseSearch
from hpo.engine.leases import DRIVER_GONE, FAIL_KIND_ATTR
from hpo.engine.ledger import COPIED_ATTR

BUDGET = 6  # two_stages(n_random=3, n_bayes=3) in the driver


def start_driver(url: str, name: str, calls: Path, sleep: float, lease: float = 2):
    return subprocess.Popen(
        [sys.executable, str(DRIVER), url, name, str(calls), str(sleep), str(lease)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def lines(calls: Path) -> list[list[str]]:
    if not calls.exists():
        return []
    return [line.split() for line in calls.read_text().splitlines() if line]


def wait_for(predicate, proc, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"driver exited early: {proc.communicate()[1][-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("timed out waiting for the driver")
        time.sleep(0.02)


def finish(proc, timeout: float = 120.0) -> dict:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def measured_trials(search: LayerwiseSearch) -> dict[tuple[str, int], TrialState]:
    """(stage, number) -> state of every trial that was not a copied incumbent."""
    states = {}
    for stage in search.status().stages:
        for t in stage.study.get_trials(deepcopy=False):
            if COPIED_ATTR not in t.user_attrs:
                states[(stage.name, t.number)] = t.state
    return states


@pytest.mark.slow
@pytest.mark.parametrize(
    ("backend", "kill_at"),
    [("sqlite", ("second", 2)), ("journal", ("second", 2)), ("journal", ("first", 0))],
)
def test_sigkilled_driver_resumes_without_recomputing(tmp_path, name, backend, kill_at):
    # SQLite exercises Optuna's RDB heartbeat, the journal file the engine's lease;
    # killing trial 0 of the first stage loses the measurement of the defaults.
    url = f"sqlite:///{tmp_path}/s.db" if backend == "sqlite" else f"journal:///{tmp_path}/s.log"
    calls = tmp_path / "calls.txt"
    proc = start_driver(url, name, calls, sleep=0.4)

    def reached() -> bool:
        return any(w[:2] == ["start", kill_at[0]] and int(w[2]) >= kill_at[1]
                   for w in lines(calls))

    wait_for(reached, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed = [(w[1], int(w[2])) for w in lines(calls) if w[0] == "start"][-1]
    done_before = sum(w[0] == "done" for w in lines(calls))

    rerun = start_driver(url, name, calls, sleep=0.05)
    finish(rerun)

    search = LayerwiseSearch.load(url, name)
    result = search.status()
    assert result.finished
    for stage in result.stages:
        assert stage.n_complete == BUDGET, stage
    states = measured_trials(search)
    # The trial running at the kill was failed as orphaned, and not run again.
    assert states[killed] == TrialState.FAIL
    stage = next(s for s in result.stages if s.name == killed[0])
    orphan = next(t for t in stage.study.trials if t.number == killed[1])
    assert orphan.user_attrs[FAIL_KIND_ATTR] == DRIVER_GONE
    # Every finished evaluation is exactly one COMPLETE trial: none lost, none recomputed.
    done = Counter((w[1], int(w[2])) for w in lines(calls) if w[0] == "done")
    assert max(done.values()) == 1
    complete = {k for k, s in states.items() if s == TrialState.COMPLETE}
    assert set(done) == complete
    if kill_at[0] == "second":
        # The first stage finished before the kill and was not touched by the rerun.
        assert all(k[0] == "second" for k in list(done)[done_before:])
    else:
        # The lost incumbent was queued again: the defaults are measured once.
        first = result.stages[0].study.trials
        incumbents = [t for t in first if t.user_attrs.get("hpo:phase") == "incumbent"]
        assert [t.state for t in incumbents] == [TrialState.FAIL, TrialState.COMPLETE]
        assert incumbents[1].params == {"x": 0.0, "n": 5}


@pytest.mark.slow
@pytest.mark.postgres
def test_two_drivers_share_one_search_on_postgres(tmp_path, name, pg_url):
    calls = tmp_path / "calls.txt"
    drivers = [start_driver(pg_url, name, calls, sleep=0.15, lease=10) for _ in range(2)]
    outputs = [finish(d) for d in drivers]
    search = LayerwiseSearch.load(pg_url, name)
    try:
        result = search.status()
        # Both drivers read the same ledger from the storage.
        assert outputs[0] == outputs[1]
        assert outputs[0]["best_value"] == result.best_value
        states = measured_trials(search)
        done = Counter((w[1], int(w[2])) for w in lines(calls) if w[0] == "done")
        assert max(done.values()) == 1  # no trial evaluated twice
        assert set(done) == {k for k, s in states.items() if s == TrialState.COMPLETE}
        for stage in result.stages:
            # Over budget only by trials that were already running: one per extra driver.
            assert BUDGET <= stage.n_complete <= BUDGET + 1, stage
            assert stage.n_running == 0
        pids = {w[3] for w in lines(calls) if w[0] == "start"}
        assert len(pids) == 2, "both drivers should have run trials"
    finally:
        search.reset()
