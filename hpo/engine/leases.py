"""Liveness of RUNNING trials: heartbeats or leases while a driver runs them, reaping after.

SQL storages with a heartbeat interval use Optuna's heartbeat. Journal storages (file,
Redis) and SQL storages without one get an engine lease instead: a trial user attribute
``hpo:lease`` = ``{"owner", "expires"}`` (wall-clock seconds) that a background thread
renews. A RUNNING trial whose heartbeat or lease is stale belongs to a driver that is
gone, and any driver may mark it FAIL; a live driver's trials are never touched.

A driver can die between creating a trial and its first heartbeat or lease. Optuna's
own staleness test skips trials without a heartbeat row, so such a trial counts as
orphaned once it has been RUNNING (``datetime_start``) for longer than the grace period
(heartbeat) or the lease (lease); a live driver renews within a few milliseconds of
asking, so it is never caught by this.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from datetime import datetime

import optuna
import sqlalchemy
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage, InMemoryStorage, RDBStorage
from optuna.trial import FrozenTrial, TrialState

from hpo.engine.storage import heartbeat_enabled, unwrap

_log = logging.getLogger(__name__)

LEASE_ATTR = "hpo:lease"
FAIL_REASON_ATTR = "hpo:fail_reason"
FAIL_KIND_ATTR = "hpo:fail_kind"
DRIVER_GONE = "driver_gone"
"""``hpo:fail_kind`` of trials failed because their driver died (not counted by max_fail)."""


def liveness_mode(storage: BaseStorage) -> str:
    """``heartbeat`` (Optuna's RDB heartbeat), ``lease`` (engine lease) or ``none`` (memory)."""
    if isinstance(unwrap(storage), InMemoryStorage):
        return "none"  # only this process can see an in-memory study
    return "heartbeat" if heartbeat_enabled(storage) else "lease"


class Keepalive:
    """Renews the heartbeat or lease of the trials one driver is running.

    One daemon thread per driver serves every trial it runs (several at once with a
    parallel runner).

    Args:
        storage: The storage the trials live in.
        lease_seconds: How long a lease stays valid without renewal (lease mode).
        owner: The driver's identity, written into leases.
    """

    def __init__(
        self, storage: BaseStorage, *, lease_seconds: float = 60.0, owner: str | None = None
    ) -> None:
        self.storage = storage
        self.mode = liveness_mode(storage)
        self.lease_seconds = float(lease_seconds)
        self.owner = owner or f"driver-{uuid.uuid4().hex[:12]}"
        if self.mode == "heartbeat":
            self.interval = float(storage.get_heartbeat_interval())
        else:
            # Renew four times per lease, so one slow write does not lose it.
            self.interval = max(0.2, self.lease_seconds / 4)
        self._trials: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, trial_id: int) -> None:
        """Start keeping a trial alive, from the renewal thread's next tick.

        No renewal is written right away: a trial without a heartbeat or lease is only
        reaped once it has run longer than the grace period (heartbeat) or a whole lease,
        both longer than one tick, so the write would buy nothing and cost one commit
        per trial (trials shorter than a tick then never write one).
        """
        if self.mode == "none":
            return
        with self._lock:
            self._trials.add(trial_id)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name=f"hpo-keepalive-{self.owner}", daemon=True
                )
                self._thread.start()

    def discard(self, trial_id: int) -> None:
        """Stop renewing a trial (it finished)."""
        with self._lock:
            self._trials.discard(trial_id)

    def close(self) -> None:
        """Stop the renewal thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                trial_ids = list(self._trials)
            for trial_id in trial_ids:
                self._renew(trial_id)

    def _renew(self, trial_id: int) -> None:
        try:
            if self.mode == "heartbeat":
                self.storage.record_heartbeat(trial_id)
            else:
                lease = {"owner": self.owner, "expires": time.time() + self.lease_seconds}
                self.storage.set_trial_user_attr(trial_id, LEASE_ATTR, lease)
        except UpdateFinishedTrialError:
            self.discard(trial_id)  # told between the snapshot and the renewal
        except Exception as exc:  # noqa: BLE001 - a missed renewal must not kill the trial
            _log.warning("could not renew the lease of trial id %s: %s", trial_id, exc)


def reap_stale(study: optuna.Study, *, lease_seconds: float = 60.0) -> list[FrozenTrial]:
    """Mark FAIL the RUNNING trials of drivers that are gone.

    Args:
        study: A stage study.
        lease_seconds: Lease length used by the drivers (lease mode), also the age after
            which a RUNNING trial that never got a lease counts as orphaned.

    Returns:
        The trials this call failed (as they were before), so exactly one driver learns
        of each.
    """
    storage = study._storage
    mode = liveness_mode(storage)
    if mode == "none":
        return []
    if mode == "heartbeat":
        # Optuna's own staleness test; failing them ourselves lets us record why.
        stale_ids = set(storage._get_stale_trial_ids(study._study_id))
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        stale_ids |= _never_beat(storage, running)
        stale = [t for t in running if t._trial_id in stale_ids]
        why = "its driver stopped sending heartbeats"
    else:
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        stale = [t for t in running if _lease_expired(t, lease_seconds)]
        why = "its driver's lease expired"
    reaped = []
    for trial in stale:
        try:
            storage.set_trial_user_attr(trial._trial_id, FAIL_KIND_ATTR, DRIVER_GONE)
            storage.set_trial_user_attr(trial._trial_id, FAIL_REASON_ATTR, f"{why} (driver gone)")
            if storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
                reaped.append(trial)
        except UpdateFinishedTrialError:
            continue  # finished meanwhile, or another driver reaped it first
    if reaped:
        _log.warning(
            "%s: marked FAIL trials %s whose driver is gone (%s)",
            study.study_name, [t.number for t in reaped], why,
        )
    return reaped


def _lease_expired(trial: FrozenTrial, lease_seconds: float) -> bool:
    lease = trial.user_attrs.get(LEASE_ATTR)
    if lease is not None:
        return float(lease["expires"]) < time.time()
    # A driver that died between creating the trial and its first lease leaves none.
    return _running_longer_than(trial, lease_seconds)


def _running_longer_than(trial: FrozenTrial, seconds: float) -> bool:
    # datetime_start is the asking client's local time (Optuna writes datetime.now()),
    # so compare with ours; the grace period dwarfs clock skew between drivers.
    start = trial.datetime_start
    return start is not None and (datetime.now() - start).total_seconds() > seconds


def _never_beat(storage: BaseStorage, running: list[FrozenTrial]) -> set[int]:
    """Ids of RUNNING trials older than the grace period that have no heartbeat row.

    Optuna's ``_get_stale_trial_ids`` skips trials without a heartbeat, so a driver that
    died between ``study.ask`` and its first heartbeat would leave a trial RUNNING
    forever, its budget slot taken.
    """
    rdb = unwrap(storage)
    if not isinstance(rdb, RDBStorage):
        return set()
    interval = rdb.get_heartbeat_interval() or 0
    grace = rdb.grace_period if rdb.grace_period is not None else 2 * interval
    old = {t._trial_id for t in running if _running_longer_than(t, grace)}
    if not old:
        return set()  # the common case costs no query
    # Here, not at the top: Optuna's table models cost ~0.2 s that `hpo status` never needs.
    from optuna.storages._rdb.models import TrialHeartbeatModel

    # One read of the heartbeat table (Optuna has no public call for it).
    with rdb.engine.connect() as connection:
        beating = set(
            connection.execute(
                sqlalchemy.select(TrialHeartbeatModel.trial_id).where(
                    TrialHeartbeatModel.trial_id.in_(old)
                )
            ).scalars()
        )
    return old - beating



class Backoff:
    """Polling with growing pauses, for waiting on other drivers' trials.

    Args:
        first: The first pause, in seconds.
        factor: Growth per pause.
        longest: The longest pause.
    """

    def __init__(self, first: float = 0.1, factor: float = 1.5, longest: float = 5.0) -> None:
        self.first = first
        self.factor = factor
        self.longest = longest
        self.pause = first
        self.waited = 0.0

    def sleep(self) -> None:
        """Pause, then lengthen the next pause."""
        time.sleep(self.pause)
        self.waited += self.pause
        self.pause = min(self.longest, self.pause * self.factor)

    def reset(self) -> None:
        """Start again from the first pause."""
        self.pause = self.first
        self.waited = 0.0


__all__ = [
    "Backoff",
    "DRIVER_GONE",
    "FAIL_KIND_ATTR",
    "FAIL_REASON_ATTR",
    "LEASE_ATTR",
    "Keepalive",
    "liveness_mode",
    "reap_stale",
]
