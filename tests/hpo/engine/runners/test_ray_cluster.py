"""The ray runner on a real multi-node Ray cluster on this machine (no mocks).

``ray.cluster_utils.Cluster`` starts a head node and worker nodes as separate raylets
with their own resources, as ``ray start --head`` and ``ray start --address`` do on
several machines. The driver joins it the way the README documents (``RAY_ADDRESS`` or
``address = "auto"``). Ray's temporary folder is this module's own (``RAY_TMPDIR``), so
``auto`` finds this cluster and nobody else's ``ray.init()`` on a shared machine finds it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time

import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from hpo import LayerwiseSearch, Stage
from hpo.engine.leases import FAIL_REASON_ATTR
from tests.hpo.conftest import name  # noqa: F401 - the fixture

ray = pytest.importorskip("ray", reason="Ray is not installed")
pytest.importorskip("ray.tune", reason="Ray Tune is not installed")

from ray.cluster_utils import Cluster  # noqa: E402

from hpo.engine.runners.ray.runner import RayRunner  # noqa: E402
from hpo.engine.runners.ray.searcher import NODE_ATTR, NODES_ATTR, RETRIES_ATTR  # noqa: E402

# Nodes notice a dead peer within seconds rather than the default ~30 s.
FAST_HEALTH = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 1000,
               "health_check_failure_threshold": 3}


@pytest.fixture(scope="module")
def cluster():
    """A head node and one worker node, one CPU each, in a Ray folder of their own."""
    if ray.is_initialized():
        ray.shutdown()
    folder = tempfile.mkdtemp(prefix="hporc", dir="/tmp")  # short: Ray's socket paths
    saved = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = folder
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "include_dashboard": False,
                        "_system_config": FAST_HEALTH},
    )
    try:
        worker = cluster.add_node(num_cpus=1, resources={"worker_node": 1})
        cluster.wait_for_nodes()
        yield cluster, worker
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()
        if saved is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = saved
        shutil.rmtree(folder, ignore_errors=True)


def _stage(n: int) -> list[Stage]:
    return [Stage("s", {"x": FloatDistribution(0.0, 1.0)}, defaults={"x": 0.5},
                  n_random=n, n_bayes=0, sampler="random")]


def _live_nodes(address: str) -> set[str]:
    ray.init(address=address, log_to_driver=False)
    try:
        return {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    finally:
        ray.shutdown()


def test_a_search_joins_the_cluster_spreads_its_trials_and_leaves_it_running(
    cluster, tmp_path, name, monkeypatch  # noqa: F811
):
    cluster, worker = cluster
    monkeypatch.setenv("RAY_ADDRESS", cluster.address)

    def objective(params, trial):
        trial.report(1, value=params["x"])
        time.sleep(1.0)  # the two slots are busy at once: one trial per node
        return params["x"]

    runner = RayRunner(cpu=1, storage_path=tmp_path / "tune", log_to_driver=False)
    result = LayerwiseSearch(_stage(4), objective, study_name=name, runner=runner).run()
    trials = result.stages[0].study.trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    nodes = {t.user_attrs[NODE_ATTR] for t in trials}
    assert nodes == {cluster.head_node.node_id, worker.node_id}  # both nodes trained
    # The driver disconnected (its search is over) and the cluster it joined runs on.
    assert not ray.is_initialized()
    assert cluster.remaining_processes_alive()
    assert _live_nodes(cluster.address) == nodes


def test_a_worker_node_killed_mid_trial_retries_its_trial_and_the_budget_completes(
    cluster, tmp_path, name  # noqa: F811
):
    # Last in this module: it kills the worker node. Its two CPUs (head and worker)
    # take the first two trials at once, one on each node.
    cluster, doomed = cluster
    target = doomed.node_id
    started = tmp_path / "started.jsonl"

    def objective(params, trial):
        here = ray.get_runtime_context().get_node_id()
        trial.report(1, value=params["x"])  # the driver records the node from here
        if here == target:
            fd = os.open(started, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            os.write(fd, (json.dumps({"number": trial.number}) + "\n").encode())
            os.close(fd)
            time.sleep(120)  # until the node is killed under it
        time.sleep(0.3)
        return params["x"]

    killed: list[int] = []

    def kill_the_node() -> None:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if started.exists() and started.read_text().strip():
                killed.append(json.loads(started.read_text().splitlines()[0])["number"])
                cluster.remove_node(doomed, allow_graceful=False)  # SIGKILL, as a lost machine
                return
            time.sleep(0.1)

    killer = threading.Thread(target=kill_the_node, daemon=True)
    killer.start()
    # address = "auto": the cluster of this machine (this module's Ray folder).
    runner = RayRunner(cpu=1, address="auto", max_retries=1, storage_path=tmp_path / "tune",
                       log_to_driver=False)
    started_at = time.monotonic()
    result = LayerwiseSearch(_stage(5), objective, study_name=name, runner=runner).run()
    killer.join(timeout=5)
    assert killed, "no trial ran on the node to kill"
    stage = result.stages[0]
    assert stage.n_complete == 5  # the search completed its budget
    trial = stage.study.trials[killed[0]]
    # max_retries = 1: Tune restarted it, on the node that was left.
    assert trial.state == TrialState.COMPLETE, trial.user_attrs.get(FAIL_REASON_ATTR)
    assert trial.user_attrs[RETRIES_ATTR] == 1
    assert trial.user_attrs[NODES_ATTR] == [target, cluster.head_node.node_id]
    assert trial.user_attrs[NODE_ATTR] == cluster.head_node.node_id
    assert time.monotonic() - started_at < 120
    assert cluster.remaining_processes_alive()  # the head node runs on
    # The GCS marks a SIGKILLed node dead once its health checks time out: seconds on a
    # quiet machine, longer on a busy one (CI listed it alive once, right after the run).
    deadline = time.monotonic() + 60
    while (_live_nodes(cluster.address) != {cluster.head_node.node_id}
           and time.monotonic() < deadline):
        time.sleep(0.5)
    assert _live_nodes(cluster.address) == {cluster.head_node.node_id}
