"""Trial faults: raising, NaN / inf, hanging past the timeout, killed by the OS.

Each is recorded FAIL with its reason and the stage goes on; ``max_fail`` ends a stage
with a named error. Isolated trials run in child processes (real ones, forkserver), so
the objectives here live at module level and pickle.
"""

from __future__ import annotations

import math
import os
import signal
import threading
import time
import tomllib
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from benchmarks.reliability.chaos_kit import Plan, finish, kill, read_lines, start_driver
from hpo import HPOError, LayerwiseSearch, LocalRunner, SpecError, Stage, StageFailedError
from hpo.engine.context import HISTORY_ATTR
from hpo.engine.leases import FAIL_KIND_ATTR, FAIL_REASON_ATTR, LEASE_ATTR
from hpo.engine.runners.isolated import KILLED, TIMED_OUT, IsolatedObjective, isolated
from hpo.study import make_runner
from hpo.study.schema import parse_study
from tests.hpo.conftest import name  # noqa: F401 - the fixture

ROOT = Path(__file__).resolve().parents[2]
FAULTS = ["ok", "raise", "nan", "inf", "hang", "oom", "exit"]


def faulty(params: dict, trial) -> float:
    """Trial k does FAULTS[k] (then all are fine), after reporting one epoch."""
    fault = FAULTS[trial.number] if trial.number < len(FAULTS) else "ok"
    trial.report(0, f1=params["x"])
    if fault == "raise":
        raise RuntimeError("diverged")
    if fault in ("nan", "inf"):
        return float(fault)
    if fault == "hang":
        time.sleep(600)
    if fault == "oom":  # what the kernel's out-of-memory killer does
        os.kill(os.getpid(), signal.SIGKILL)
    if fault == "exit":
        os._exit(3)
    return params["x"]


def hang_or_die(params: dict, trial) -> float:
    if trial.number % 2:
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(600)
    return 0.0


def one_stage(n_random: int, max_fail: int | None = None) -> list[Stage]:
    return [Stage("s", {"x": FloatDistribution(0, 1)}, defaults={"x": 0.5},
                  n_random=n_random, n_bayes=0, max_fail=max_fail)]


def test_every_fault_is_fail_with_its_reason_and_the_stage_goes_on(tmp_path, name):  # noqa: F811
    # A journal storage with 1 s leases: the hanging trial outlives many leases, which the
    # driver renews while its child process runs.
    search = LayerwiseSearch(
        one_stage(n_random=4, max_fail=10), faulty, storage=f"journal:///{tmp_path}/s.log",
        study_name=name, sampler="random", trial_timeout=2, lease_seconds=1,
    )
    result = search.run()
    trials = result.stages[0].study.trials
    reasons = {t.number: t.user_attrs.get(FAIL_REASON_ATTR) for t in trials}
    kinds = {t.number: t.user_attrs.get(FAIL_KIND_ATTR) for t in trials}
    assert [t.state for t in trials[:7]] == [TrialState.COMPLETE] + [TrialState.FAIL] * 6
    assert reasons[1] == "RuntimeError: diverged" and kinds[1] == "objective"
    assert reasons[2] == "objective returned nan"
    assert reasons[3] == "objective returned inf"
    assert reasons[4] == "timed out after 2 s" and kinds[4] == TIMED_OUT
    assert reasons[5] == "killed by signal 9 (out of memory?)" and kinds[5] == KILLED
    assert reasons[6] == "trial process exited with code 3 before it returned"
    # Reports made before the fault went through the driver to the stage study.
    hung = trials[4]
    assert hung.intermediate_values == {0: hung.params["x"]}
    assert hung.user_attrs[HISTORY_ATTR] == [{"epoch": 0, "f1": hung.params["x"]}]
    lease = hung.user_attrs[LEASE_ATTR]["expires"]
    assert lease - hung.datetime_start.timestamp() > 1.5, "the lease was renewed while it hung"
    stage = result.stages[0]
    assert stage.n_complete == 4 and stage.n_fail == 6 and stage.n_running == 0
    assert math.isfinite(result.best_value)
    assert stage.best_trial.state == TrialState.COMPLETE


def test_max_fail_ends_a_stage_of_hanging_and_killed_trials(name):  # noqa: F811
    search = LayerwiseSearch(one_stage(n_random=3, max_fail=2), hang_or_die, study_name=name,
                             trial_timeout=0.5)
    with pytest.raises(StageFailedError, match="2 failed trials") as info:
        search.run()
    message = str(info.value)
    assert "timed out after 0.5 s" in message and "killed by signal 9" in message
    assert len(search.status().stages[0].study.trials) == 2


class PruneOdd(optuna.pruners.BasePruner):
    def prune(self, study, trial):
        return trial.number % 2 == 1 and max(trial.intermediate_values) >= 1  # epoch 1


def reporting(params: dict, trial) -> float:
    for epoch in range(3):
        trial.report(epoch, f1=params["x"] * epoch, loss=1.0)
        if trial.should_stop():
            return 99.0  # an early value must never compete
    if trial.stage == "s":
        path = Path("w.txt")  # relative: the child runs in the driver's working folder
        path.write_text(repr(params["x"]))
        trial.save_artifact(path)
        return params["x"]
    assert "w.txt" in trial.ledgers["s"].artifacts  # the child sees the ledgers too
    loaded = trial.load_artifact("w.txt", f"got{trial.number}.txt", stage="s")
    return float(Path(loaded).read_text()) + params["y"]


def test_pruning_history_and_artifacts_work_through_the_child_process(
    tmp_path, monkeypatch, name  # noqa: F811
):
    monkeypatch.chdir(tmp_path)
    stages = one_stage(n_random=4) + [
        Stage("t", {"y": FloatDistribution(0, 1)}, defaults={"y": 0.5}, n_random=2, n_bayes=0)
    ]
    search = LayerwiseSearch(
        stages, reporting, study_name=name, pruner=PruneOdd(), metric="f1", sampler="random",
        artifact_store=tmp_path / "artifacts", runner=LocalRunner(isolate=True),
    )
    result = search.run()
    first = result.stages[0].study.trials
    pruned = [t for t in first if t.state == TrialState.PRUNED]
    assert pruned and all(t.number % 2 == 1 and t.user_attrs["hpo:epochs"] == 2 for t in pruned)
    complete = [t for t in first if t.state == TrialState.COMPLETE]
    assert len(complete) == 4 and result.stages[0].ledger.value <= 1.0
    assert complete[1].intermediate_values == {e: complete[1].params["x"] * e for e in range(3)}
    assert [h["loss"] for h in complete[1].user_attrs[HISTORY_ATTR]] == [1.0] * 3
    # Stage t's trials load the ledger trial's artifact, uploaded by the driver.
    ledger = result.stages[0].ledger
    assert set(ledger.artifacts) == {"w.txt"}
    second = [t for t in result.stages[1].study.trials if t.state == TrialState.COMPLETE]
    measured = [t for t in second if "hpo:copied_from" not in t.user_attrs]
    assert measured and all(
        t.value == pytest.approx(ledger.params["x"] + t.params["y"]) for t in measured
    )


class Locked:
    """An objective holding a lock: it cannot go to another process."""

    def __init__(self) -> None:
        self.lock = threading.Lock()

    def __call__(self, params: dict) -> float:
        return 0.0


class SlowToLoad:
    """An objective that takes ``load`` seconds to unpickle (a slow import) and 1 s to run."""

    def __init__(self, load: float) -> None:
        self.load = load

    def __reduce__(self):
        return _load_slowly, (self.load,)

    def __call__(self, params: dict, trial) -> float:
        time.sleep(1.0)
        return params["x"]


def _load_slowly(load: float) -> SlowToLoad:
    time.sleep(load)
    return SlowToLoad(load)


def test_the_trial_clock_starts_once_the_objective_is_loaded(name):  # noqa: F811
    # 2 s to load + 1 s to run, under a 2.5 s limit: only the run counts
    result = LayerwiseSearch(one_stage(2), SlowToLoad(2.0), study_name=name,
                             sampler="random", runner=LocalRunner(trial_timeout=2.5)).run()
    assert result.stages[0].n_complete == 2
    # a load that hangs is still stopped, by a limit as long as the trial's
    search = LayerwiseSearch(one_stage(1, max_fail=1), SlowToLoad(600), study_name=name + "h",
                             sampler="random", runner=LocalRunner(trial_timeout=2.5))
    with pytest.raises(StageFailedError, match="timed out after 2.5 s"):
        search.run()


def test_an_objective_that_cannot_be_pickled_is_a_named_error_before_any_trial(name):  # noqa: F811
    search = LayerwiseSearch(one_stage(2), Locked(), study_name=name, isolate=True)
    with pytest.raises(HPOError, match="cannot be sent to the trial's process.*lock"):
        search.run()
    assert search.status().stages[0].study.trials == []


def test_a_wrapper_in_the_driver_around_an_isolated_objective_stays_in_the_driver(name):  # noqa: F811
    # Like the command line's progress display: a closure over a lock (it cannot pickle)
    # around the isolated objective; the runner must not isolate it again.
    lock, seen = threading.Lock(), []
    inner = isolated(lambda params, trial: params["x"], timeout=30)

    def tracked(params, trial):
        with lock:
            seen.append(os.getpid())
        return inner(params, trial)

    tracked.__wrapped__ = inner
    result = LayerwiseSearch(one_stage(3), tracked, study_name=name, sampler="random",
                             runner=LocalRunner(trial_timeout=30)).run()
    assert result.stages[0].n_complete == 3 and seen == [os.getpid()] * 3
    assert isinstance(inner, IsolatedObjective) and inner.timeout == 30


def test_a_killed_driver_takes_its_trial_process_with_it(tmp_path, name):  # noqa: F811
    url, calls = f"sqlite:///{tmp_path}/s.db", tmp_path / "calls.txt"
    slow = Plan(n_random=2, n_bayes=0, refine=None, sleep=2.0)
    driver = start_driver(url, name, calls, slow, extra=["--isolate"])
    deadline = time.monotonic() + 60
    while not any(w[0] == "start" for w in read_lines(calls)):
        assert driver.poll() is None and time.monotonic() < deadline, "no trial started"
        time.sleep(0.02)
    child = int(next(w[3] for w in read_lines(calls) if w[0] == "start"))
    assert child != driver.pid  # the objective runs in its own process
    kill(driver)
    time.sleep(slow.sleep + 1)  # long enough for an orphaned trial to finish
    assert not _alive(child), "the trial process outlived its driver"
    assert not any(w[0] == "done" for w in read_lines(calls))
    finish(start_driver(url, name, calls, Plan(n_random=2, n_bayes=0, refine=None, sleep=0),
                        extra=["--isolate"]))
    first = LayerwiseSearch.load(url, name).status().stages[0]
    assert first.study.trials[0].user_attrs[FAIL_KIND_ATTR] == "driver_gone"
    assert first.n_complete == 2


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")  # a zombie has stopped computing


def _quickstart(**runner) -> dict:
    raw = tomllib.loads((ROOT / "studies" / "quickstart.toml").read_text())
    raw["runner"] = {**raw.get("runner", {}), **runner}
    return raw


def test_study_file_runner_keys():
    file = ROOT / "studies" / "quickstart.toml"
    spec = parse_study(_quickstart(trial_timeout=600, isolate=True), file=file,
                       check_paths=False)
    assert spec.runner.trial_timeout == 600.0 and spec.runner.isolate is True
    again = parse_study(spec.to_dict(), file=file, check_paths=False)
    assert again.runner == spec.runner
    runner = make_runner(spec.runner)
    assert isinstance(runner, LocalRunner) and runner.trial_timeout == 600 and runner.isolate
    plain = parse_study(_quickstart(max_concurrent=1), file=file, check_paths=False)
    assert plain.runner.trial_timeout is None and make_runner(plain.runner) == "local"
    assert "trial_timeout" not in plain.to_dict()["runner"]  # TOML has no null
    for bad in (0, -5, "600", True, float("inf")):
        with pytest.raises(SpecError, match=r"runner\.trial_timeout"):
            parse_study(_quickstart(trial_timeout=bad), file=file, check_paths=False)
    with pytest.raises(SpecError, match=r"runner\.isolate"):
        parse_study(_quickstart(isolate="yes"), file=file, check_paths=False)


def test_timeout_arguments_are_checked(name):  # noqa: F811
    with pytest.raises(SpecError, match="trial_timeout"):
        LayerwiseSearch(one_stage(2), faulty, study_name=name, trial_timeout=0)
    with pytest.raises(SpecError, match="pass them to the runner"):
        LayerwiseSearch(one_stage(2), faulty, study_name=name, trial_timeout=5,
                        runner=LocalRunner())
    with pytest.raises(SpecError, match="start_method"):
        LocalRunner(isolate=True, start_method="fork")
