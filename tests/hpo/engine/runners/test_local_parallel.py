"""The parallel local runner: several trials at once in reused worker processes.

Real worker processes (forkserver), real SQLite storages; objectives live at module
level so they pickle by reference.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import optuna
import pytest
import torch
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import TrialState
from rich.console import Console

from benchmarks.reliability.chaos_kit import append_line
from hpo import LayerwiseSearch, LocalRunner, SpecError, Stage
from hpo.engine.leases import FAIL_KIND_ATTR, FAIL_REASON_ATTR
from hpo.engine.progress import TuneProgress
from hpo.engine.runners.isolated import KILLED, TIMED_OUT
from hpo.engine.runners.local import default_workers, machine_cpus
from hpo.study import make_runner
from hpo.study.schema import parse_study
from tests.hpo.conftest import (
    interruptible,
    name,  # noqa: F401 - the fixture
)

ROOT = Path(__file__).resolve().parents[4]
DRIVER = Path(__file__).with_name("_parallel_driver.py")


class Fit:
    """A seeded little torch fit: its value depends on the parameters (and threads) only.

    Logs ``pid start end threads`` per call, so a test sees where and when trials ran.
    """

    def __init__(self, log: Path, pause: float = 0.0) -> None:
        self.log = log
        self.pause = pause

    def __call__(self, params: dict, trial) -> float:
        start = time.time()
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(256, 32, generator=generator)
        y = x @ torch.randn(32, 1, generator=generator) + 0.1 * torch.randn(256, 1,
                                                                             generator=generator)
        w = torch.zeros(32, 1, requires_grad=True)
        optimizer = torch.optim.SGD([w], lr=params["lr"])
        for _ in range(params["steps"]):
            optimizer.zero_grad()
            loss = ((x @ w - y) ** 2).mean()
            loss.backward()
            optimizer.step()
        time.sleep(self.pause)
        append_line(self.log, f"{os.getpid()} {start} {time.time()} {torch.get_num_threads()}")
        return float(((x @ w - y) ** 2).mean().detach())


def _stage(n_random: int = 4, n_bayes: int = 2, max_fail: int | None = None) -> list[Stage]:
    return [Stage("fit", {"lr": FloatDistribution(1e-3, 0.1, log=True),
                          "steps": IntDistribution(5, 40)},
                  defaults={"lr": 0.01, "steps": 10}, n_random=n_random, n_bayes=n_bayes,
                  max_fail=max_fail)]


def _runs(log: Path) -> list[tuple[int, float, float, int]]:
    rows = [line.split() for line in log.read_text().splitlines()]
    return [(int(p), float(s), float(e), int(t)) for p, s, e, t in rows]


def test_two_workers_complete_the_budget_with_a_sequential_run_s_values(tmp_path, name):  # noqa: F811
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the workers: the same sums in the same order
    try:
        sequential = LayerwiseSearch(
            _stage(), Fit(tmp_path / "seq.log"), study_name=name + "s", sampler="tpe",
            direction="minimize", storage=f"sqlite:///{tmp_path}/seq.db",
        ).run()
        parallel = LayerwiseSearch(
            _stage(), Fit(tmp_path / "par.log", pause=0.5), study_name=name + "p",
            sampler="tpe", direction="minimize", storage=f"sqlite:///{tmp_path}/par.db",
            runner=LocalRunner(workers=2),
        ).run()
        seq = {t.number: t for t in sequential.stages[0].study.trials}
        par = {t.number: t for t in parallel.stages[0].study.trials}
        assert parallel.stages[0].n_complete == 6
        assert all(t.state == TrialState.COMPLETE for t in par.values())
        # Random trials (the incumbent included) have the same points whatever ran them,
        # and the same values: a trial's result does not depend on its worker.
        for number in range(4):
            assert par[number].params == seq[number].params
            assert par[number].value == seq[number].value
        # Bayesian trials were proposed with others RUNNING; each value is the one the
        # objective gives those parameters in this process.
        for trial in par.values():
            assert trial.value == Fit(tmp_path / "check.log")(trial.params, None)
    finally:
        torch.set_num_threads(threads)
    runs = _runs(tmp_path / "par.log")
    pids = {pid for pid, *_ in runs}
    assert len(pids) == 2 and os.getpid() not in pids  # two reused worker processes
    assert {t for *_, t in runs} == {1}  # torch threads = the trial's cpu (1)
    spans = sorted((s, e) for _, s, e, _ in runs)
    assert any(b[0] < a[1] for a, b in zip(spans, spans[1:], strict=False))  # overlapping


FAULTS = {1: "kill", 2: "hang", 3: "raise"}


def faulty(params: dict, trial) -> float:
    """Trial 1 is killed (as by the OOM killer), 2 hangs, 3 raises; the others return."""
    fault = FAULTS.get(trial.number)
    trial.report(0, f1=params["x"])
    if fault == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if fault == "hang":
        time.sleep(600)
    if fault == "raise":
        raise RuntimeError("diverged")
    time.sleep(0.2)
    return params["x"]


def test_a_killed_or_hanging_worker_is_a_fail_trial_not_a_dead_driver(name):  # noqa: F811
    stage = [Stage("s", {"x": FloatDistribution(0, 1)}, defaults={"x": 0.5}, n_random=4,
                   n_bayes=0)]
    started = time.monotonic()
    result = LayerwiseSearch(stage, faulty, study_name=name, sampler="random",
                             runner=LocalRunner(workers=2, trial_timeout=4)).run()
    assert time.monotonic() - started < 60
    trials = {t.number: t for t in result.stages[0].study.trials}
    assert result.stages[0].n_complete == 4
    assert trials[1].state == TrialState.FAIL and trials[1].user_attrs[FAIL_KIND_ATTR] == KILLED
    assert "killed by signal 9" in trials[1].user_attrs[FAIL_REASON_ATTR]
    assert trials[2].user_attrs[FAIL_KIND_ATTR] == TIMED_OUT
    assert trials[2].user_attrs[FAIL_REASON_ATTR] == "timed out after 4 s"
    assert trials[3].user_attrs[FAIL_REASON_ATTR] == "RuntimeError: diverged"
    assert trials[1].intermediate_values == {0: trials[1].params["x"]}  # reports got through


def _lines(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def test_ctrl_c_stops_the_workers_and_the_search_resumes(tmp_path, name):  # noqa: F811
    url, calls = f"sqlite:///{tmp_path}/s.db", tmp_path / "calls.txt"
    driver = subprocess.Popen(
        [sys.executable, str(DRIVER), url, name, str(calls), "3", "2"],
        stdout=subprocess.PIPE, text=True, cwd=ROOT, preexec_fn=interruptible,
    )
    deadline = time.monotonic() + 90
    while sum(w[0] == "start" for w in _lines(calls)) < 2:
        assert driver.poll() is None and time.monotonic() < deadline, "no two trials started"
        time.sleep(0.05)
    driver.send_signal(signal.SIGINT)
    out, _ = driver.communicate(timeout=60)
    assert driver.returncode == 130 and "interrupted" in out
    workers = {int(w[2]) for w in _lines(calls) if w[0] == "start"}
    time.sleep(0.5)
    assert len(workers) == 2 and not any(_alive(pid) for pid in workers)
    study = optuna.load_study(study_name=f"{name}.01.s", storage=url)
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]
    interrupted = [t for t in study.trials if t.user_attrs.get(FAIL_KIND_ATTR) == "interrupted"]
    assert len(interrupted) == 2
    rerun = subprocess.run(
        [sys.executable, str(DRIVER), url, name, str(calls), "0", "2"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )
    assert rerun.returncode == 0 and "finished" in rerun.stdout, rerun.stderr
    study = optuna.load_study(study_name=f"{name}.01.s", storage=url)
    assert sum(t.state == TrialState.COMPLETE for t in study.trials) == 8
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]


def test_the_progress_display_follows_parallel_trials(tmp_path, name):  # noqa: F811
    search = LayerwiseSearch(_stage(n_random=3, n_bayes=1), Fit(tmp_path / "p.log", 0.5),
                             study_name=name, sampler="tpe", direction="minimize",
                             runner=LocalRunner(workers=2))
    out = io.StringIO()
    display = TuneProgress(search.status(), console=Console(file=out, width=200),
                           metric="loss", live=False)
    search.callbacks = [display.callback]
    search.objective = display.wrap(search.objective)
    with display:
        search.run()
    assert display.concurrency == 2 and not display.busy
    text = out.getvalue()
    assert text.count("[1/1 fit] trial") == 4 and "4/4 trials" in text
    assert "1 running" in text  # told while the other worker's trial ran
    assert "4/4 trials, 0 failed, 0 running" in display.headline()
    assert display.stages[0].state == "finished"


def _quickstart(**runner) -> dict:
    raw = tomllib.loads((ROOT / "studies" / "quickstart.toml").read_text())
    raw["runner"] = {**raw.get("runner", {}), **runner}
    return raw


def test_the_study_file_defaults_to_the_machine_s_cores():
    file = ROOT / "studies" / "quickstart.toml"
    raw = _quickstart()
    raw["runner"].pop("max_concurrent", None)
    spec = parse_study(raw, file=file, check_paths=False)
    assert spec.runner.max_concurrent == default_workers(1.0) == machine_cpus()
    runner = make_runner(spec.runner)
    if machine_cpus() > 1:
        assert isinstance(runner, LocalRunner) and runner.workers == machine_cpus()
        assert runner.threads == 1
    big = parse_study(_quickstart(cpu=machine_cpus() * 2), file=file, check_paths=False)
    assert big.runner.max_concurrent == 1 and make_runner(big.runner) == "local"
    one = parse_study(_quickstart(max_concurrent=1), file=file, check_paths=False)
    assert make_runner(one.runner) == "local"
    many = parse_study(_quickstart(max_concurrent=64), file=file, check_paths=False)
    if machine_cpus() > 1:
        assert make_runner(many.runner).workers == machine_cpus()  # no more than fit
    ray = parse_study(_quickstart(kind="ray"), file=file, check_paths=False)
    assert ray.runner.max_concurrent == 1
    with pytest.raises(SpecError, match="max_concurrent"):
        LocalRunner(workers=0)
