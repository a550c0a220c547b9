"""Heartbeats and leases: orphaned RUNNING trials are failed, live ones never touched."""

from __future__ import annotations

import time

import optuna
import pytest
from optuna.trial import TrialState

from hpo import make_storage
from hpo.engine.leases import DRIVER_GONE, FAIL_KIND_ATTR, LEASE_ATTR, Keepalive, reap_stale


def _study(storage, name):
    return optuna.create_study(storage=storage, study_name=name)


pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")


def test_expired_leases_are_failed_and_live_ones_kept(tmp_path, name):
    storage = make_storage(f"journal:///{tmp_path}/s.log")
    study = _study(storage, name)
    keepalive = Keepalive(storage, lease_seconds=1.0, owner="alive")
    assert keepalive.mode == "lease"
    live = study.ask()
    keepalive.add(live._trial_id)
    dead = study.ask()
    study._storage.set_trial_user_attr(
        dead._trial_id, LEASE_ATTR, {"owner": "gone", "expires": time.time() - 1}
    )
    never_leased = study.ask()  # a driver that died before its first lease
    try:
        assert [t.number for t in reap_stale(study, lease_seconds=1.0)] == [dead.number]
        time.sleep(1.6)  # longer than a lease: only renewals keep `live` alive
        assert [t.number for t in reap_stale(study, lease_seconds=1.0)] == [never_leased.number]
        states = {t.number: t.state for t in study.get_trials()}
        assert states[live.number] == TrialState.RUNNING
        lease = study.trials[live.number].user_attrs[LEASE_ATTR]
        assert lease["owner"] == "alive" and lease["expires"] > time.time()
        assert study.trials[dead.number].user_attrs[FAIL_KIND_ATTR] == DRIVER_GONE
    finally:
        keepalive.close()
    study.tell(live, 1.0)


def test_rdb_heartbeat_marks_stale_trials(tmp_path, name):
    storage = make_storage(f"sqlite:///{tmp_path}/s.db", heartbeat_interval=1, grace_period=2)
    study = _study(storage, name)
    keepalive = Keepalive(storage)
    assert keepalive.mode == "heartbeat"
    live, dead = study.ask(), study.ask()
    keepalive.add(live._trial_id)
    storage.record_heartbeat(dead._trial_id)
    try:
        time.sleep(3.2)  # SQLite's now() has whole seconds; Optuna wants > grace_period
        assert [t.number for t in reap_stale(study)] == [dead.number]
        assert study.trials[live.number].state == TrialState.RUNNING
    finally:
        keepalive.close()


def test_in_memory_studies_are_never_reaped(name):
    study = _study(None, name)
    study.ask()
    assert Keepalive(study._storage).mode == "none"
    assert reap_stale(study, lease_seconds=1) == []
