"""One driver per SQLite search: a second driver is refused while the first is alive.

SQLite takes one writer at a time, and Ray Tune's driver holds its stage for long
stretches; several drivers of one search belong on a server storage. A driver that finds
another's RUNNING trials waits to see whether their heartbeats (or leases) are renewed:
renewed, it is refused with a hint; not, the other driver is gone and its trials are
failed once their grace period is over.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from optuna.storages import RDBStorage
from optuna.storages._rdb import models
from optuna.storages._rdb.storage import _create_scoped_session
from optuna.trial import TrialState

from hpo.engine.errors import HPOError
from hpo.engine.leases import DRIVER_GONE, FAIL_KIND_ATTR, LEASE_ATTR, Backoff, liveness_mode
from hpo.engine.runners.job import StageJob
from hpo.engine.storage import describe_storage, unwrap

_log = logging.getLogger("hpo")


def is_sqlite(storage: Any) -> bool:
    """Whether a storage is an SQLite database."""
    inner = unwrap(storage)
    return isinstance(inner, RDBStorage) and str(inner.url).startswith("sqlite")


def _liveness_tokens(storage: Any, trials: list) -> dict[int, Any]:
    """Per RUNNING trial, what its driver renews: heartbeat time or lease expiry."""
    mode = liveness_mode(storage)
    if mode == "lease":
        return {t._trial_id: (t.user_attrs.get(LEASE_ATTR) or {}).get("expires") for t in trials}
    if mode != "heartbeat":
        return {}
    inner = unwrap(storage)
    ids = [t._trial_id for t in trials]
    with _create_scoped_session(inner.scoped_session) as session:
        rows = (
            session.query(models.TrialHeartbeatModel)
            .filter(models.TrialHeartbeatModel.trial_id.in_(ids))
            .all()
        )
        return {row.trial_id: row.heartbeat for row in rows}


def refuse_second_driver(job: StageJob, *, max_wait: float | None = None) -> None:
    """On SQLite, make sure no other live driver runs this stage, or raise.

    RUNNING trials of this stage (this driver has none yet) belong to another driver. If
    their heartbeats (or leases) are renewed, that driver is alive and this one is
    refused; if they are not, that driver is gone (e.g. killed) and its trials are failed
    as soon as their grace period is over, then this driver goes on.

    Args:
        job: The stage, before this driver asks any trial.
        max_wait: Longest wait for a verdict (default: the grace period plus two
            heartbeat intervals).

    Raises:
        HPOError: Another driver is running the search on an SQLite storage.
    """
    storage = job.study._storage
    if not is_sqlite(storage):
        return
    interval = job.keepalive.interval
    if max_wait is None:
        max_wait = job.lease_seconds + 2 * interval + 2
    first: dict[int, Any] | None = None
    numbers: dict[int, int] = {}
    deadline = time.monotonic() + max_wait
    backoff = Backoff(first=0.25, factor=1.5, longest=max(0.5, interval / 2))
    while True:
        job._reap()  # fails trials of dead drivers once their grace period is over
        trials = job.study.get_trials(deepcopy=False)
        running = [t for t in trials if t.state == TrialState.RUNNING]
        by_id = {t._trial_id: t for t in trials}
        if first is not None:
            for trial_id in first:
                trial = by_id.get(trial_id)
                if trial is None or trial.state == TrialState.RUNNING:
                    continue
                if trial.user_attrs.get(FAIL_KIND_ATTR) != DRIVER_GONE:
                    _refuse(job, [numbers[trial_id]], "finished it")
        if not running:
            return
        tokens = _liveness_tokens(storage, running)
        numbers.update({t._trial_id: t.number for t in running})
        if first is None:
            first = tokens
            _log.warning(
                "%s: trials %s are RUNNING in another driver; checking whether it is alive "
                "(up to %.0f s)",
                job.study.study_name, sorted(numbers.values()), max_wait,
            )
        else:
            renewed = [
                numbers[i] for i, token in tokens.items()
                if i in first and first[i] is not None and token != first[i]
            ]
            if renewed:
                _refuse(job, renewed, "keeps them alive")
            first.update({i: tok for i, tok in tokens.items() if i not in first})
        if time.monotonic() > deadline:
            _refuse(job, sorted(numbers[t._trial_id] for t in running), "keeps them RUNNING")
        backoff.sleep()


def _refuse(job: StageJob, numbers: list[int], what: str) -> None:
    raise HPOError(
        f"another driver is running search stage {job.study.study_name} in "
        f"{describe_storage(job.study._storage)} (it {what}: trials {sorted(numbers)}); "
        f"an SQLite search takes one driver (hint: wait for that driver to finish, or run "
        f"several drivers on a server storage: postgresql://user@host/db, "
        f"redis://host:6379/0 or journal:///shared/folder/search.log)"
    )


__all__ = ["is_sqlite", "refuse_second_driver"]
