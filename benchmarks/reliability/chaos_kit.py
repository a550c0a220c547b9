"""Kill search drivers with SIGKILL at random moments and audit what the storage kept.

Shared by ``tests/reliability`` (short runs) and ``benchmarks/reliability/chaos.py`` /
``benchmarks/reliability/concurrency.py`` (long runs). The driver is
``benchmarks/reliability/driver.py``: a layer-wise search (:func:`two_stages` of
:func:`quadratic`, also the engine tests' search) on a cheap objective that logs every
evaluation (``start`` / ``done``), every stored outcome (``told``) and its export
(``export-start`` / ``export-done``) to a side log, so the audit can tell finished work
from what the storage holds.

What the audit counts:

- **lost**: a trial seen COMPLETE (after a kill, or told COMPLETE in the side log) that
  is not COMPLETE with the same value later;
- **duplicated**: finished work stored twice: one trial evaluated twice, two COMPLETE
  trials with the same parameters in a stage, a stage with two incumbents, or more
  COMPLETE trials than the budget (one driver: none may run at the barrier);
- **corrupt**: an export file that is not a whole, valid export after a kill; a ledger
  that differs from the one recomputed from the stored trials with the engine's own rule
  (:func:`hpo.engine.ledger.best_trial`), or that changed once written; a stage whose incumbent
  does not carry the previous stage's ledger; a COMPLETE trial without an evaluation.

Evaluations that finished while their driver was killed before it stored them are not
lost trials (nothing was stored); they are counted as ``unrecorded``.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import optuna
import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from hpo.engine.ledger import COPIED_ATTR, LEDGER_ATTR, best_trial, ledger_from_trial, read_ledger
from hpo.engine.samplers.phased import PHASE_ATTR
from hpo.engine.search import SEARCH_ATTR, LayerwiseSearch
from hpo.engine.stage import Stage
from hpo.engine.storage import make_storage
from hpo.study.export import EXPORT_FORMAT

DRIVER = Path(__file__).resolve().with_name("driver.py")
DEFAULTS = {"x": 0.0, "n": 5, "lr": 0.01, "act": "relu"}  # the defaults of two_stages()


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
    return (
        -((params["x"] - 1.0) ** 2)
        - 0.1 * (params["n"] - 3) ** 2
        - (math.log10(params["lr"]) + 1.0) ** 2
        + (1.0 if params["act"] == "tanh" else 0.0)
    )


def append_line(path: Path, line: str) -> None:
    """Append one line; O_APPEND writes of one short line are atomic between processes."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Plan:
    """One search the drivers run: budgets, trial length and lease.

    Args:
        n_random: Random-search trials per stage (the incumbent included).
        n_bayes: Bayesian trials per stage.
        refine: Bayesian trials of the refine stage, after its copied incumbent
            (``None``: no refine stage).
        sleep: Seconds each trial sleeps.
        lease: The drivers' ``lease_seconds`` (heartbeat / lease length).
    """

    n_random: int = 3
    n_bayes: int = 2
    refine: int | None = 3
    sleep: float = 0.05
    lease: float = 1.0

    def budgets(self) -> list[int]:
        """COMPLETE trials per stage, in run order."""
        stage = self.n_random + self.n_bayes
        return [stage, stage] + ([1 + self.refine] if self.refine else [])

    def args(self) -> list[str]:
        """The driver's options for this plan."""
        extra = ["--n-random", str(self.n_random), "--n-bayes", str(self.n_bayes)]
        return extra + (["--refine", str(self.refine)] if self.refine else [])


@dataclass
class Tally:
    """What a run of drivers did, and every problem the audit found."""

    kills: int = 0
    lives: int = 0
    searches: int = 0
    complete: int = 0
    lost: int = 0
    duplicated: int = 0
    corrupt: int = 0
    unrecorded: int = 0
    temp_files: int = 0
    moments: Counter = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)

    def problem(self, kind: str, text: str) -> None:
        """Count a problem of kind ``lost``, ``duplicated`` or ``corrupt``."""
        setattr(self, kind, getattr(self, kind) + 1)
        self.problems.append(f"{kind}: {text}")

    def add(self, other: Tally) -> None:
        """Add another tally's counts to this one."""
        for name in (
            "kills",
            "lives",
            "searches",
            "complete",
            "lost",
            "duplicated",
            "corrupt",
            "unrecorded",
            "temp_files",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.moments.update(other.moments)
        self.problems.extend(other.problems)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able counts (problems cut to the first 20)."""
        data = asdict(self)
        data["moments"] = dict(sorted(self.moments.items()))
        data["problems"] = self.problems[:20]
        return data


# --------------------------------------------------------------------------- drivers


def start_driver(
    url: str,
    name: str,
    calls: Path,
    plan: Plan,
    *,
    export: Path | None = None,
    extra: Sequence[str] = (),
) -> subprocess.Popen[str]:
    """Start one driver process on a search."""
    command = [
        sys.executable,
        str(DRIVER),
        url,
        name,
        str(calls),
        str(plan.sleep),
        str(plan.lease),
        *plan.args(),
        *extra,
    ]
    if export is not None:
        command += ["--export", str(export)]
    return subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )


def read_lines(calls: Path, offset: int = 0) -> list[list[str]]:
    """The side log's lines from byte ``offset`` on, split into words."""
    if not calls.exists():
        return []
    with open(calls, "rb") as f:
        f.seek(offset)
        text = f.read().decode()
    return [line.split() for line in text.splitlines() if line]


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _wait_for(
    calls: Path,
    offset: int,
    proc: subprocess.Popen[str],
    ready: Callable[[list[str]], bool],
    timeout: float,
) -> bool:
    """Wait until a new side-log line satisfies ``ready``; False if the driver ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(ready(words) for words in read_lines(calls, offset)):
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.005)
    return True  # stuck (e.g. waiting for a lock): kill it anyway


def finish(proc: subprocess.Popen[str], timeout: float = 300.0) -> dict[str, Any]:
    """Wait for a driver to end by itself; its JSON result line."""
    out, err = proc.communicate(timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"driver failed ({proc.returncode}): {err[-3000:]}")
    return json.loads(out.strip().splitlines()[-1])


def kill(proc: subprocess.Popen[str]) -> None:
    """SIGKILL a driver, as the OOM killer or a lost node would, and reap it."""
    proc.send_signal(signal.SIGKILL)
    proc.communicate()


# ----------------------------------------------------------------------------- audit


class Auditor:
    """Checks one search after every kill and at the end.

    Args:
        url: The storage.
        name: The search's name.
        calls: The side log.
        export: The export file the drivers write.
        plan: The search's budgets.
        tally: Where problems are counted.
        extra: COMPLETE trials a stage may have over its budget: those running at its
            barrier (``drivers - 1`` with several drivers, none with one).
    """

    def __init__(
        self,
        url: str,
        name: str,
        calls: Path,
        export: Path | None,
        plan: Plan,
        tally: Tally,
        extra: int = 0,
    ) -> None:
        self.url = url
        self.extra = extra
        self.name = name
        self.calls = calls
        self.export = export
        self.plan = plan
        self.tally = tally
        self.storage = make_storage(url)
        self.complete: dict[tuple[str, int], float] = {}
        self.ledgers: dict[str, dict[str, Any]] = {}

    def stage_studies(self) -> dict[int, tuple[str, int, dict[str, Any]]]:
        """Stage index -> (study name, study id, user attributes) as stored now."""
        found = {}
        for summary in self.storage.get_all_studies():
            record = summary.user_attrs.get(SEARCH_ATTR) or {}
            if record.get("name") == self.name:
                found[record["index"]] = (summary.study_name, summary._study_id, summary.user_attrs)
        return found

    def after_kill(self) -> None:
        """Nothing stored may be lost or changed; the export must be whole."""
        now_complete: dict[tuple[str, int], float] = {}
        for study_name, study_id, attrs in self.stage_studies().values():
            for t in self.storage.get_all_trials(study_id, deepcopy=False):
                if t.state == TrialState.COMPLETE:
                    now_complete[(study_name, t.number)] = t.value
            ledger = attrs.get(LEDGER_ATTR)
            if ledger is not None:
                before = self.ledgers.setdefault(study_name, ledger)
                if before != ledger:
                    self.tally.problem(
                        "corrupt", f"{study_name}: ledger changed {before} -> {ledger}"
                    )
        for key, value in self.complete.items():
            if now_complete.get(key) != value:
                self.tally.problem(
                    "lost",
                    f"{key} was COMPLETE {value}, now {now_complete.get(key, 'not COMPLETE')}",
                )
        self.complete.update(now_complete)
        self.check_export(final=False)

    def check_export(self, *, final: bool, result: Any = None) -> None:
        """The export is absent (not written yet) or a whole, valid document."""
        if self.export is None:
            return
        self.tally.temp_files = max(self.tally.temp_files, len(_temp_files(self.export)))
        if not self.export.exists():
            if final:
                self.tally.problem("corrupt", f"{self.export} missing after a finished run")
            return
        try:
            doc = yaml.safe_load(self.export.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError, UnicodeDecodeError) as exc:
            self.tally.problem("corrupt", f"{self.export}: {type(exc).__name__}: {exc}")
            return
        if not isinstance(doc, dict) or doc.get("format") != EXPORT_FORMAT:
            self.tally.problem("corrupt", f"{self.export}: not an export: {str(doc)[:200]}")
            return
        if result is not None and (
            doc.get("best_value") != result.best_value or doc.get("finished") is not True
        ):
            self.tally.problem(
                "corrupt",
                f"{self.export}: best value {doc.get('best_value')} != stored {result.best_value}",
            )

    def final(self) -> Any:
        """Audit the finished search: budgets, ledgers, incumbents, evaluations."""
        self.after_kill()
        search = LayerwiseSearch.load(self.storage, self.name)
        result = search.status()
        lines = read_lines(self.calls)
        done = Counter((w[1], int(w[2])) for w in lines if w[0] == "done")
        values = {(w[1], int(w[2])): float(w[3]) for w in lines if w[0] == "done"}
        told = {
            (w[1], int(w[2])): float(w[4]) for w in lines if w[0] == "told" and w[3] == "COMPLETE"
        }
        budgets = self.plan.budgets()
        if not result.finished or len(result.stages) != len(budgets):
            self.tally.problem("corrupt", f"{self.name}: not finished: {result.summary()}")
            return result
        previous = None
        for stage, budget in zip(result.stages, budgets, strict=True):
            trials = stage.study.get_trials(deepcopy=False)
            complete = [t for t in trials if t.state == TrialState.COMPLETE]
            self.tally.complete += len(complete)
            where = f"{stage.study_name}"
            if stage.n_running:
                self.tally.problem("corrupt", f"{where}: {stage.n_running} RUNNING at the end")
            if not budget <= len(complete) <= budget + self.extra:
                kind = "duplicated" if len(complete) > budget else "corrupt"
                self.tally.problem(
                    kind,
                    f"{where}: {len(complete)} COMPLETE, budget {budget}"
                    f" (+{self.extra} at the barrier)",
                )
            self._check_ledger(stage, trials)
            self._check_incumbent(stage, complete, previous)
            measured = [t for t in complete if COPIED_ATTR not in t.user_attrs]
            points = Counter(json.dumps(t.params, sort_keys=True) for t in measured)
            for point, count in points.items():
                if count > 1:
                    self.tally.problem("duplicated", f"{where}: {count} COMPLETE trials at {point}")
            for t in measured:
                key = (stage.stage, t.number)
                if done[key] == 0:
                    self.tally.problem("corrupt", f"{where} #{t.number}: COMPLETE, never evaluated")
                elif values[key] != t.value:
                    self.tally.problem(
                        "corrupt", f"{where} #{t.number}: stored {t.value}, evaluated {values[key]}"
                    )
            stored = {t.number for t in measured}
            self.tally.unrecorded += sum(
                1 for (name, number) in done if name == stage.stage and number not in stored
            )
            for (name, number), value in told.items():
                match = [t for t in complete if t.number == number]
                if name == stage.stage and (not match or match[0].value != value):
                    self.tally.problem("lost", f"{where} #{number}: told COMPLETE {value}")
            previous = stage
        for key, count in done.items():
            if count > 1:
                self.tally.problem("duplicated", f"{key}: evaluated {count} times")
        self.check_export(final=True, result=result)
        return result

    def _check_ledger(self, stage: Any, trials: list[Any]) -> None:
        stored = read_ledger(stage.study)
        best = best_trial(trials, stage.study.direction)
        again = ledger_from_trial(stage.stage, stage.study_name, best) if best else None
        if stored != again:
            self.tally.problem(
                "corrupt", f"{stage.study_name}: ledger {stored} != recomputed {again}"
            )

    def _check_incumbent(self, stage: Any, complete: list[Any], previous: Any) -> None:
        incumbents = [t for t in complete if t.user_attrs.get(PHASE_ATTR) == "incumbent"]
        where = stage.study_name
        if len(incumbents) != 1:
            kind = "duplicated" if len(incumbents) > 1 else "corrupt"
            self.tally.problem(kind, f"{where}: {len(incumbents)} COMPLETE incumbents")
            return
        incumbent = incumbents[0]
        if previous is None:
            if incumbent.params != {k: DEFAULTS[k] for k in incumbent.params}:
                self.tally.problem(
                    "corrupt", f"{where}: incumbent {incumbent.params} is not the defaults"
                )
            return
        source = incumbent.user_attrs.get(COPIED_ATTR) or {}
        ledger = previous.ledger
        if (source.get("study"), source.get("trial"), incumbent.value) != (
            ledger.study_name,
            ledger.trial_number,
            ledger.value,
        ):
            self.tally.problem(
                "corrupt",
                f"{where}: incumbent {source} {incumbent.value} is "
                f"not the ledger of {ledger.study_name}",
            )


def _temp_files(export: Path) -> list[Path]:
    # hpo.engine.atomic writes beside the file as .<stem>.<random>.tmp<suffix>
    return list(export.parent.glob(f".{export.stem}.*.tmp{export.suffix}"))


# ------------------------------------------------------------------------------ chaos


def _moment(lines: list[list[str]], auditor: Auditor) -> str:
    """What the killed driver was doing, from its last side-log line."""
    if not lines:
        return "startup"
    last = lines[-1]
    if last[0] == "start":
        return "trial"
    if last[0] == "done":
        return "tell"
    if last[0] == "export-start":
        return "export"
    if last[0] == "export-done":
        return "exit"
    stage = last[1]
    budgets = auditor.plan.budgets()
    for index, (study_name, study_id, _) in auditor.stage_studies().items():
        if study_name.split(".")[2] == stage and index < len(budgets):
            trials = auditor.storage.get_all_trials(study_id, deepcopy=False)
            if sum(t.state == TrialState.COMPLETE for t in trials) >= budgets[index]:
                return "stage-end"
    return "between-trials"


def chaos_search(
    url: str,
    folder: Path,
    rng: random.Random,
    plan: Plan,
    *,
    max_delay: float = 1.5,
    export_kills: int = 1,
    early: float = 0.15,
    max_lives: int = 200,
) -> Tally:
    """Run one search to the end, killing its driver at random moments; audit it.

    Each life of the driver is killed ``uniform(0, window)`` seconds after its first
    side-log line (with probability ``early``: ``uniform(0, 2)`` s after it started,
    i.e. while it imports, opens the storage or waits for orphaned trials), until a life
    completes. ``window`` starts at ``max_delay`` and grows by half after every life that
    stored nothing, so a long step (an export) is eventually outlived. Then one life
    measures how long an export of the finished search takes, and ``export_kills`` more
    are killed ``uniform(0, that)`` s after ``export-start``.

    Args:
        url: The storage URL.
        folder: Where the side log and export go.
        rng: The random source of the kill moments.
        plan: The search.
        max_delay: Shortest window after a life's first line.
        export_kills: Kills of export-only lives after the search finished.
        early: Share of kills timed from the start of the process.
        max_lives: Give up (a problem) after this many lives.

    Returns:
        The counts; every problem is in ``problems``.
    """
    name = f"chaos{uuid.uuid4().hex[:10]}"
    calls = folder / f"{name}.calls"
    export = folder / f"{name}.yaml"
    tally = Tally(searches=1)
    auditor = Auditor(url, name, calls, export, plan, tally)
    finished = False
    export_time: float | None = None
    export_killed = 0
    window = max_delay
    try:
        while not finished or export_killed < export_kills:
            if tally.lives >= max_lives:
                tally.problem("corrupt", f"{name}: not finished after {max_lives} lives")
                break
            offset = _size(calls)
            proc = start_driver(url, name, calls, plan, export=export)
            tally.lives += 1
            if finished:
                running = _wait_for(calls, offset, proc, lambda w: w[0] == "export-start", 120)
                if export_time is None:  # measure one export, then kill the next ones
                    began = time.monotonic()
                    finish(proc)
                    export_time = time.monotonic() - began
                    auditor.check_export(final=True)
                    continue
                delay = rng.uniform(0, export_time)
            elif rng.random() < early:
                running, delay = True, rng.uniform(0, 2.0)
            else:
                running = _wait_for(calls, offset, proc, lambda w: True, 120)
                delay = rng.uniform(0, window)
            if running and _alive_after(proc, delay):
                kill(proc)
                tally.kills += 1
                export_killed += finished
                lines = read_lines(calls, offset)
                tally.moments[_moment(lines, auditor)] += 1
                window = max_delay if any(w[0] == "told" for w in lines) else window * 1.5
                auditor.after_kill()
                if not finished and any(w[0] == "export-done" for w in lines):
                    auditor.final()  # killed on its way out: its work is all stored
                    finished = True
                continue
            finish(proc)
            if finished:
                auditor.check_export(final=True)
            else:
                auditor.final()
                finished = True
    finally:
        _cleanup(url, name, auditor.storage)
    return tally


def _alive_after(proc: subprocess.Popen[str], seconds: float) -> bool:
    try:
        proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        return True
    return False


def _cleanup(url: str, name: str, storage: Any) -> None:
    if url.startswith(("sqlite", "journal")):
        return  # files in the run's folder
    prefix = dict(parse_qsl(urlsplit(url).query)).get("prefix")
    if url.startswith("redis") and prefix:  # a journal of its own: drop its keys
        import redis

        client = redis.Redis.from_url(url.split("?", 1)[0])
        keys = list(client.scan_iter(f"{prefix}:*"))
        if keys:
            client.delete(*keys)
        client.close()
        return
    for summary in storage.get_all_studies():
        if (summary.user_attrs.get(SEARCH_ATTR) or {}).get("name") == name:
            optuna.delete_study(study_name=summary.study_name, storage=storage)


def storage_url(
    kind: str, folder: Path, *, pg_url: str | None = None, redis_url: str | None = None
) -> str:
    """A fresh storage of ``kind`` (sqlite, journal, postgres, redis) for one run."""
    if kind == "sqlite":
        return f"sqlite:///{folder}/chaos-{uuid.uuid4().hex[:6]}.db"
    if kind == "journal":
        return f"journal:///{folder}/chaos-{uuid.uuid4().hex[:6]}.log"
    if kind == "postgres":
        assert pg_url is not None
        return pg_url
    if kind == "redis":
        assert redis_url is not None
        sep = "&" if "?" in redis_url else "?"
        return (
            redis_url
            if "prefix=" in redis_url
            else f"{redis_url}{sep}prefix=chaos-{uuid.uuid4().hex[:8]}"
        )
    raise ValueError(f"unknown storage kind {kind!r}")


# ------------------------------------------------------------------------- concurrency


def concurrent_search(url: str, folder: Path, plan: Plan, drivers: int) -> dict[str, Any]:
    """Run ``drivers`` driver processes on one search at once; audit the result.

    Returns:
        ``{"tally", "outputs", "over_budget", "pids", "wall_s"}``: the audit (a stage may
        end over budget only by trials that were running at its barrier: at most
        ``drivers - 1``, counted in ``over_budget`` and not as duplicates), every
        driver's printed result, and how many drivers ran trials.
    """
    name = f"conc{uuid.uuid4().hex[:10]}"
    calls = folder / f"{name}.calls"
    tally = Tally(searches=1, lives=drivers)
    auditor = Auditor(url, name, calls, None, plan, tally, extra=drivers - 1)
    started = time.monotonic()
    try:
        procs = [start_driver(url, name, calls, plan) for _ in range(drivers)]
        outputs = [finish(p) for p in procs]
        wall = time.monotonic() - started
        result = auditor.final()
        over = [
            max(0, s.n_complete - b) for s, b in zip(result.stages, plan.budgets(), strict=False)
        ]
        pids = {w[3] for w in read_lines(calls) if w[0] == "start"}
    finally:
        _cleanup(url, name, auditor.storage)
    return {
        "tally": tally,
        "outputs": outputs,
        "over_budget": over,
        "pids": len(pids),
        "wall_s": wall,
    }


__all__ = [
    "Auditor",
    "Plan",
    "Tally",
    "chaos_search",
    "concurrent_search",
    "finish",
    "kill",
    "read_lines",
    "start_driver",
    "storage_url",
]
