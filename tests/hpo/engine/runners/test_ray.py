"""The ray runner on a real local Ray instance (two CPUs, two logical GPUs), no mocks.

One Ray instance serves the module; each test runs small searches whose objectives are
closures (pickled by value into the Tune workers) that write what they did to files.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from hpo import HPOError, LayerwiseSearch, SearchResult, Stage
from hpo.engine.leases import DRIVER_GONE, FAIL_KIND_ATTR, FAIL_REASON_ATTR
from hpo.engine.ledger import COPIED_ATTR
from tests.hpo.conftest import quadratic, two_stages

ray = pytest.importorskip("ray", reason="Ray is not installed")
pytest.importorskip("ray.tune", reason="Ray Tune is not installed")

from hpo.engine.runners.ray.runner import RayRunner  # noqa: E402

ROOT = Path(__file__).resolve().parents[4]


@pytest.fixture(scope="module", autouse=True)
def ray_instance():
    """One local Ray instance for the module (the runner joins it and leaves it running)."""
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _log(path: Path, **entry) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, (json.dumps(entry) + "\n").encode())
    os.close(fd)


def _read(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def _overlap(spans: list[tuple[float, float]]) -> int:
    """The most spans open at one instant."""
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    now = most = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


def test_two_stages_on_ray_match_the_local_runner(tmp_path, name):
    calls = tmp_path / "calls.jsonl"

    def objective(params, trial):
        start = time.time()
        for epoch in (1, 2):
            trial.report(epoch, value=quadratic(params) - (2 - epoch))
        time.sleep(0.4)  # long enough for two trials to overlap
        _log(calls, stage=trial.stage, number=trial.number, pid=os.getpid(),
             start=start, end=time.time())
        return quadratic(params)

    storage = f"sqlite:///{tmp_path / 's.db'}"
    runner = RayRunner(cpu=1, max_concurrent=2)
    ray_result = LayerwiseSearch(
        two_stages(n_random=3, n_bayes=1), objective, storage=storage,
        study_name=name, runner=runner, seed=3,
    ).run()
    local_result = LayerwiseSearch(
        two_stages(n_random=3, n_bayes=1), objective, storage=storage,
        study_name=name + "-local", seed=3,
    ).run()

    assert isinstance(ray_result, SearchResult) and ray_result.finished
    assert ray.is_initialized()  # the runner joined the caller's Ray and left it running
    for on_ray, local in zip(ray_result.stages, local_result.stages, strict=True):
        assert on_ray.state == local.state == "finished"
        assert on_ray.n_complete == local.n_complete == 4
        assert on_ray.n_running == on_ray.n_fail == on_ray.n_pruned == 0
        assert on_ray.ledger.trial_number == on_ray.best_trial.number
        trials = on_ray.study.trials
        measured = [t for t in trials if COPIED_ATTR not in t.user_attrs]
        for t in measured:  # per-epoch reports reached the study, as locally
            assert t.intermediate_values == {1: t.value - 1, 2: t.value}
            assert t.user_attrs["hpo:epochs"] == 2
            assert [h["epoch"] for h in t.user_attrs["hpo:history"]] == [1, 2]
        points = [tuple(t.params.values()) for t in trials]
        assert len(set(points)) == len(points)  # concurrent trials got different params
    second = ray_result.stages[1].study.trials[0]
    first_ledger = ray_result.stages[0].ledger
    assert second.user_attrs[COPIED_ATTR]["trial"] == first_ledger.trial_number
    assert second.value == first_ledger.value  # the incumbent was copied, not recomputed
    assert set(ray_result.best_params) == set(local_result.best_params)

    runs = [c for c in _read(calls) if c["stage"] in ("first", "second")]
    assert len(runs) == 2 * (4 + 3)  # per runner: 4 + 3 (stage 2 copies its incumbent)
    ray_runs = [c for c in runs if c["pid"] != os.getpid()]
    assert len(ray_runs) == 7
    assert _overlap([(c["start"], c["end"]) for c in ray_runs]) == 2  # max_concurrent=2
    assert len({c["pid"] for c in ray_runs}) <= 4  # actors reused (two per stage)


def test_asha_stopped_trials_are_pruned_with_their_epochs_and_never_best(tmp_path, name):
    def objective(params, trial):
        # Odd trials are worse at every epoch: ASHA (grace 1, factor 2) stops them.
        good = trial.number % 2 == 0
        for epoch in range(1, 5):
            trial.report(epoch, value=(1.0 if good else 0.5) * epoch)
        return 4.0 if good else 100.0  # an odd one would be best if it ran to the end

    stages = [Stage("s", {"x": FloatDistribution(0.0, 1.0)}, defaults={"x": 0.5},
                    n_random=3, n_bayes=0, sampler="random")]
    runner = RayRunner(cpu=1, max_concurrent=1, asha={"grace": 1, "reduction_factor": 2})
    result = LayerwiseSearch(stages, objective, study_name=name, runner=runner).run()
    trials = result.stages[0].study.trials
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert pruned and all(t.number % 2 == 1 for t in pruned)
    for t in pruned:
        assert t.user_attrs["hpo:epochs"] == 1 < 4
        assert "ASHA" in t.user_attrs[FAIL_REASON_ATTR]
    assert result.stages[0].n_complete == 3
    assert result.stages[0].ledger.trial_number % 2 == 0
    assert result.best_value < 5.0


def test_a_crashed_trial_is_retried_from_its_checkpoint_then_fails_with_its_reason(
    tmp_path, name
):
    calls = tmp_path / "epochs.jsonl"
    crashed = tmp_path / "crashed"

    def objective(params, trial):
        start = (trial.restored_state or {"epoch": 0})["epoch"]
        for epoch in range(start + 1, 5):
            _log(calls, number=trial.number, epoch=epoch)
            if trial.number == 1:
                raise ValueError("always broken")
            marker = crashed.with_suffix(f".{trial.number}")
            if epoch == 3 and not marker.exists():
                marker.touch()
                if trial.number == 0:
                    raise RuntimeError("crash once")
                os.kill(os.getpid(), signal.SIGKILL)  # a killed worker, trial 2
            trial.save_state({"epoch": epoch})
            trial.report(epoch, value=params["x"] + epoch)
        return params["x"] + 4

    stages = [Stage("s", {"x": FloatDistribution(0.0, 1.0)}, defaults={"x": 0.5},
                    n_random=2, n_bayes=0, sampler="random")]
    runner = RayRunner(cpu=1, max_concurrent=1, max_retries=1)
    result = LayerwiseSearch(stages, objective, study_name=name, runner=runner).run()
    trials = result.stages[0].study.trials
    epochs = {}
    for call in _read(calls):
        epochs.setdefault(call["number"], []).append(call["epoch"])
    # Retried from the checkpoint of epoch 2: epoch 3 runs again, 1 and 2 do not.
    assert epochs[0] == [1, 2, 3, 3, 4]
    assert epochs[2] == [1, 2, 3, 3, 4]
    for number in (0, 2):
        t = trials[number]
        assert t.state == TrialState.COMPLETE and t.value == pytest.approx(t.params["x"] + 4)
        assert t.user_attrs["hpo:epochs"] == 4 and t.user_attrs["hpo:retries"] == 1
        assert sorted(t.intermediate_values) == [1, 2, 3, 4]
    broken = trials[1]
    assert broken.state == TrialState.FAIL
    assert "ValueError: always broken" in broken.user_attrs[FAIL_REASON_ATTR]
    assert epochs[1] == [1, 1]  # one try and one retry
    assert result.stages[0].n_complete == 2 and result.stages[0].ledger.trial_number != 1


def test_a_trial_past_its_timeout_is_killed_and_fails_and_the_stage_goes_on(name):
    def objective(params, trial):
        trial.save_state({"epoch": 1})  # crosses from the trial's process to the worker
        trial.report(1, value=params["x"])
        if trial.number == 1:
            time.sleep(600)  # hangs: killed at the timeout, not retried
        return params["x"]

    stages = [Stage("s", {"x": FloatDistribution(0.0, 1.0)}, defaults={"x": 0.5},
                    n_random=3, n_bayes=0, sampler="random")]
    # 20 s, not less: a replaced worker loads the objective inside the limit, and on a
    # machine under heavy load that alone has taken over 8 s
    runner = RayRunner(cpu=1, max_concurrent=1, max_retries=1, trial_timeout=20)
    result = LayerwiseSearch(stages, objective, study_name=name, runner=runner).run()
    trials = result.stages[0].study.trials
    hung = trials[1]
    assert hung.state == TrialState.FAIL
    assert hung.user_attrs[FAIL_REASON_ATTR] == "timed out after 20 s"
    assert hung.user_attrs[FAIL_KIND_ATTR] == "timeout" and "hpo:retries" not in hung.user_attrs
    assert hung.intermediate_values == {1: hung.params["x"]}
    assert result.stages[0].n_complete == 3


def test_a_second_driver_on_sqlite_is_refused(tmp_path, name):
    storage = f"sqlite:///{tmp_path / 's.db'}"
    release = threading.Event()
    started = threading.Event()

    def slow(params):
        started.set()
        release.wait(60)
        return quadratic(params)

    first = LayerwiseSearch(two_stages(), slow, storage=storage, study_name=name,
                            lease_seconds=4)
    thread = threading.Thread(target=first.run, daemon=True)
    thread.start()
    try:
        assert started.wait(30)
        second = LayerwiseSearch(two_stages(), slow, storage=storage, study_name=name,
                                 runner=RayRunner(cpu=1), lease_seconds=4)
        began = time.monotonic()
        with pytest.raises(HPOError, match="postgresql://.*redis://.*journal://"):
            second.run()
        assert time.monotonic() - began < 15
    finally:
        release.set()
        thread.join(60)
    assert first.status().finished


DRIVER = """
import json, os, sys, time
sys.path.insert(0, {root!r})
import optuna
optuna.logging.set_verbosity(optuna.logging.WARNING)
from hpo import LayerwiseSearch
from hpo.engine.runners.ray.runner import RayRunner
from tests.hpo.conftest import two_stages

calls = {calls!r}

def quadratic(params):  # defined here: the Ray workers of this script cannot import tests
    import math
    return (-(params["x"] - 1.0) ** 2 - 0.1 * (params["n"] - 3) ** 2
            - (math.log10(params["lr"]) + 1.0) ** 2 + (params["act"] == "tanh"))

def log(**entry):
    fd = os.open(calls, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, (json.dumps(entry) + "\\n").encode())
    os.close(fd)

def objective(params, trial):
    log(event="start", driver={driver!r}, stage=trial.stage, number=trial.number)
    time.sleep({sleep})
    value = quadratic(params)
    log(event="done", driver={driver!r}, stage=trial.stage, number=trial.number, value=value)
    return value

search = LayerwiseSearch(two_stages(n_random=3, n_bayes=2), objective,
                         storage={storage!r}, study_name={name!r}, seed=1,
                         runner=RayRunner({runner}), lease_seconds={lease})
result = search.run()
print(json.dumps({{"best_value": result.best_value}}))
"""


def _descendants(pid: int) -> dict[int, str]:
    """Every process below ``pid``, with its start time (to tell PID reuse apart)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found: dict[int, str] = {}
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            start = _start_time(child)
            if start is not None:
                found[child] = start
                todo.append(child)
    return found


def _start_time(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:80]
    except OSError:
        return "?"


def _alive(processes: dict[int, str]) -> list[int]:
    return [pid for pid, start in processes.items() if _start_time(pid) == start]


@pytest.mark.slow
def test_a_sigkilled_driver_resumes_and_leaves_no_ray_process(tmp_path, name):
    calls = tmp_path / "calls.jsonl"
    storage = f"sqlite:///{tmp_path / 's.db'}"
    script = tmp_path / "driver.py"
    script.write_text(DRIVER.format(root=str(ROOT), calls=str(calls), storage=storage,
                                    name=name, driver="a", sleep=1.0, lease=3,
                                    runner="cpu=1, max_concurrent=2, num_cpus=2"))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    driver = subprocess.Popen([sys.executable, str(script)], env=env, cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and driver.poll() is None:
            done = [c for c in _read(calls) if c["event"] == "done"]
            if len(done) >= 2:
                break
            time.sleep(0.2)
        assert driver.poll() is None, driver.stdout.read().decode()[-3000:]
        time.sleep(0.5)  # trials in flight now
        ray_processes = _descendants(driver.pid)
        assert len(ray_processes) >= 3  # GCS, raylet, workers, reaper ...
        driver.send_signal(signal.SIGKILL)
        driver.wait(10)
    finally:
        if driver.poll() is None:
            driver.kill()
    deadline = time.monotonic() + 20
    while _alive(ray_processes) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = {pid: _name(pid) for pid in _alive(ray_processes)}
    assert not left, f"Ray processes of the killed driver are left: {left}"

    study = optuna.load_study(study_name=f"{name}.01.first", storage=storage)
    before = {t.number: t.value for t in study.trials if t.state == TrialState.COMPLETE}
    orphans = [t.number for t in study.trials if t.state == TrialState.RUNNING]
    assert before and orphans

    rerun = subprocess.run([sys.executable, str(script)], env=env, cwd=tmp_path,
                           capture_output=True, text=True, timeout=240)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    result = LayerwiseSearch.load(storage, name).status()
    assert result.finished
    first = result.stages[0].study.trials
    for number, value in before.items():  # finished trials kept as they were
        assert first[number].state == TrialState.COMPLETE and first[number].value == value
    for number in orphans:
        assert first[number].state == TrialState.FAIL
        assert first[number].user_attrs[FAIL_KIND_ATTR] == DRIVER_GONE
    for stage in result.stages:
        assert stage.n_complete == stage.budget == 5 and stage.n_running == 0
    starts = [(c["stage"], c["number"]) for c in _read(calls) if c["event"] == "start"]
    assert len(starts) == len(set(starts))  # nothing evaluated twice


def test_the_fusion_network_trains_inside_a_tune_trial(tmp_path):
    pytest.importorskip("networks", reason="the networks package is not there yet")
    pytest.importorskip("data.synthetic", reason="the data package is not there yet")
    from hpo.study import ensure_scene, load_study, make_objective, make_search, prepare_data

    study = tmp_path / "tiny.toml"
    study.write_text(textwrap.dedent("""\
        name = "tinyray"
        storage = "sqlite:///tiny.db"
        seed = 0
        metric = "f1"

        [runner]
        kind = "ray"
        cpu = 1
        max_concurrent = 1

        [data]
        scene = "scene/scene.toml"
        patch_size = 8
        fractions = [0.6, 0.2, 0.2]
        cache_dir = "cubes"

        [data.synthetic]
        size = 64
        n_dates = 2
        seed = 0

        [model]
        name = "fusion"
        [model.fixed]
        "optim.epochs" = 1
        "optim.batch_size" = 8
        "temporal.conv_channels" = 2
        "temporal.lstm_hidden" = 2
        "temporal.downsample" = 2
        "dbn.hidden" = "2"
        "dbn.pretrain_epochs" = 1
        "dbn.max_pixels" = 100
        "dcnn.depth" = 1
        "dcnn.width" = 2

        [[stages]]
        name = "optim"
        n_random = 1
        n_bayes = 0
        [stages.params]
        "optim.lr" = { type = "float", low = 1e-4, high = 1e-2, log = true, default = 1e-3 }
        """))
    spec = load_study(study)
    ensure_scene(spec, say=lambda _: None)
    tuning = prepare_data(spec)
    objective = make_objective(spec, tuning, device="cpu")
    # The objective travels as a few KB: the cached cube pickles as its path.
    assert len(pickle.dumps(objective)) < 20_000
    search = make_search(spec, objective)
    assert isinstance(search.runner, RayRunner) and search.runner.cpu == 1
    result = search.run()
    trial = result.stages[0].study.trials[0]
    assert trial.state == TrialState.COMPLETE, trial.user_attrs.get(FAIL_REASON_ATTR)
    assert 0.0 <= trial.value <= 1.0
    history = trial.user_attrs["hpo:history"]
    assert [h["epoch"] for h in history] == [1]
    assert {"f1", "miou", "val_loss", "train_loss"} <= set(history[0])
    assert trial.intermediate_values == {1: trial.value}


@pytest.mark.postgres
def test_two_ray_drivers_share_a_postgresql_search(tmp_path, name, pg_url):
    # Two driver processes on one cluster (this module's Ray instance), as on a real one.
    calls = tmp_path / "calls.jsonl"
    address = ray.get_runtime_context().gcs_address
    drivers = []
    for driver in ("a", "b"):
        script = tmp_path / f"driver_{driver}.py"
        script.write_text(DRIVER.format(
            root=str(ROOT), calls=str(calls), storage=pg_url, name=name, driver=driver,
            sleep=0.3, lease=10, runner=f"cpu=1, max_concurrent=1, address={address!r}",
        ))
        drivers.append(subprocess.Popen(
            [sys.executable, str(script)], cwd=tmp_path,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        ))
    outputs = [d.communicate(timeout=240)[0].decode() for d in drivers]
    assert [d.returncode for d in drivers] == [0, 0], [o[-3000:] for o in outputs]
    done = [c for c in _read(calls) if c["event"] == "done"]
    pairs = [(c["stage"], c["number"]) for c in done]
    assert len(pairs) == len(set(pairs))  # no trial evaluated twice
    assert {c["driver"] for c in done} == {"a", "b"}  # both drivers took a share
    results = [json.loads(o.strip().splitlines()[-1]) for o in outputs]
    assert results[0]["best_value"] == results[1]["best_value"]
    search = LayerwiseSearch.load(pg_url, name)
    for stage in search.status().stages:
        # Budget 5 (the copied incumbent included); at most one trial per other driver
        # may overshoot (it was running when the budget filled).
        assert 5 <= stage.n_complete <= 6 and stage.n_running == 0


def test_fractional_logical_gpus_pack_four_trials_at_once(tmp_path, name):
    starts = tmp_path / "starts.jsonl"

    def objective(params, trial):
        _log(starts, number=trial.number, gpus=os.environ.get("CUDA_VISIBLE_DEVICES"))
        deadline = time.time() + 60
        while len(_read(starts)) < 4 and time.time() < deadline:  # all four at once?
            time.sleep(0.05)
        return float(len(_read(starts)))

    stages = [Stage("s", {"x": FloatDistribution(0.0, 1.0)}, defaults={"x": 0.5},
                    n_random=4, n_bayes=0, sampler="random")]
    runner = RayRunner(cpu=0.5, gpu=0.5)  # the module's Ray has 2 CPUs and 2 logical GPUs
    result = LayerwiseSearch(stages, objective, study_name=name, runner=runner).run()
    values = [t.value for t in result.stages[0].study.trials]
    assert values == [4.0] * 4  # every trial saw the four running together
    assert {s["gpus"] for s in _read(starts)} <= {"0", "1"}  # Ray gave each a GPU share


def test_replicated_trials_on_ray_record_their_replicates_and_race(tmp_path, name):
    from hpo.engine.replicates import RACED_ATTR, REPLICATES_ATTR, Replication

    def objective(params, trial):
        # x near 0 is hopeless; each replicate adds a little seeded noise
        noise = (trial.replicate_seed % 100) / 1000
        trial.report(1, value=params["x"] + noise)
        return params["x"] + noise

    # x = 1 (the defaults) is the best: stage s hands its incumbent on
    stages = [Stage("s", {"x": FloatDistribution(0, 1)}, defaults={"x": 1.0},
                    n_random=4, n_bayes=0),
              Stage("t", {"y": FloatDistribution(0, 1)}, defaults={"y": 0.5},
                    n_random=2, n_bayes=0)]
    result = LayerwiseSearch(stages, objective, storage=f"sqlite:///{tmp_path / 'r.db'}",
                             study_name=name, runner=RayRunner(cpu=1, max_concurrent=2),
                             seed=1, sampler="random",
                             replication=Replication(repeats=3, z=0.5)).run()
    trials = result.stages[0].study.trials
    incumbent = trials[0]
    assert len(incumbent.user_attrs[REPLICATES_ATTR]) == 3  # every replicate, on a worker
    assert incumbent.value == pytest.approx(sum(incumbent.user_attrs[REPLICATES_ATTR]) / 3)
    low = [t for t in trials if t.params["x"] < 0.5]
    assert low and all(t.user_attrs.get(RACED_ATTR) for t in low)  # raced out on Ray too
    assert len(result.stages[0].ledger.replicates) == 3
    # stage t takes the incumbent's replicates over: its trial runs with stage s's seeds
    challenger = result.stages[1].study.trials[1]
    assert challenger.user_attrs[REPLICATES_ATTR] == pytest.approx(
        incumbent.user_attrs[REPLICATES_ATTR])
