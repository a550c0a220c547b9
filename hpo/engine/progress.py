"""The live progress display of ``hpo tune``: stage i of n, trials, best so far, ETA.

It is fed by the engine's hooks only: the search's ``callbacks`` (after every told
trial, on the driver, whatever the runner) and, for the local runner, a wrapper around
the objective that marks the trial in flight. On a terminal it is a ``rich`` live
table; elsewhere (logs, pipes, CI) one plain line per finished trial.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from optuna.trial import FrozenTrial, TrialState
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from hpo.engine.leases import FAIL_REASON_ATTR
from hpo.engine.ledger import COPIED_ATTR
from hpo.engine.replicates import CONFIRMS_ATTR


@dataclass
class StageProgress:
    """What the display knows about one stage."""

    index: int
    name: str
    study_name: str
    budget: int
    stage: str = ""
    """The stage's own name (``optim`` for every pass; ``name`` is ``optim.c2``)."""
    state: str = "pending"
    complete: int = 0
    failed: int = 0
    pruned: int = 0
    running: int = 0
    best_value: float | None = None
    best_number: int | None = None
    best_params: dict[str, Any] = field(default_factory=dict)
    first_value: float | None = None
    confirmations: int = 0
    """Confirmation runs the barrier queued: each adds one trial to the budget."""

    @property
    def total(self) -> int:
        """The trials the stage needs: its budget and its confirmation runs."""
        return self.budget + self.confirmations


def format_duration(seconds: float | None) -> str:
    """``42s``, ``3m05s``, ``1h02m``; ``-`` when unknown."""
    if seconds is None or seconds != seconds:
        return "-"
    seconds = int(round(max(0.0, seconds)))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def format_params(params: Mapping[str, Any], width: int | None = None) -> str:
    """``optim.lr=0.0031 optim.batch_size=8`` (floats to 3 significant digits)."""
    parts = []
    for name, value in params.items():
        text = f"{value:.3g}" if isinstance(value, float) else str(value)
        parts.append(f"{name}={text}")
    out = " ".join(parts)
    if width is not None and len(out) > width:
        out = out[: max(0, width - 1)] + "…"
    return out


def format_value(value: float | None) -> str:
    """A metric value to 4 decimals, ``-`` when there is none."""
    return "-" if value is None else f"{value:.4f}"


class TuneProgress:
    """Live progress of a layer-wise search.

    Args:
        result: The search's stored state at the start (``search.status()``), so a
            resumed search starts from its real counts.
        console: Where to draw.
        metric: The metric's name, for labels.
        concurrency: Trials that run at once (for the ETA); raised to the most trials
            seen in flight at once.
        live: Draw a live table; ``None``: when the console is a terminal.
    """

    def __init__(
        self,
        result: Any,
        *,
        console: Console,
        metric: str = "value",
        concurrency: int | None = 1,
        live: bool | None = None,
    ) -> None:
        self.console = console
        self.metric = metric
        self.direction = result.direction
        self.concurrency = max(1, concurrency or 1)
        self.stages = [
            StageProgress(s.index, s.name, s.study_name, s.budget, s.stage)
            for s in result.stages
        ]
        for stage, stored in zip(self.stages, result.stages, strict=True):
            if stored.study is not None:
                self._count(stage, stored.study.get_trials(deepcopy=False))
                stage.budget -= stage.confirmations  # the stored budget counts them
            stage.state = stored.state
        self._by_study = {s.study_name: s for s in self.stages}
        self.current = next((s for s in self.stages if s.state != "finished"), None)
        self.started = time.monotonic()
        self.durations: list[float] = []  # trials measured in this run
        self.in_flight: dict[tuple[str, int], float] = {}
        self.trials_told = 0
        self._lock = threading.Lock()
        self.stop_requested = False
        self._live_wanted = console.is_terminal if live is None else live
        self._live: Live | None = None

    # ------------------------------------------------------------------ engine hooks

    def wrap(self, objective: Callable[..., Any]) -> Callable[[dict[str, Any], Any], Any]:
        """Wrap a two-argument objective so the trials in flight show as running.

        Only for runners that evaluate trials on this machine (local). The wrapper stays
        in the driver: a runner with worker processes calls its
        ``driver_trial_started`` / ``driver_trial_finished`` around each trial and sends
        only the objective it wraps (``__wrapped__``) to the workers.
        """
        return _Tracked(self, objective)

    def trial_started(self, trial: Any) -> None:
        """A trial of this process's runner starts (raises ``KeyboardInterrupt`` after a stop).

        Raises:
            KeyboardInterrupt: Ctrl-C came between trials.
        """
        if self.stop_requested:
            # Ctrl-C came between trials: stop here, where the engine records the
            # trial as interrupted, rather than inside a sampler or a storage write.
            raise KeyboardInterrupt
        key = (str(getattr(trial, "stage", "")), int(getattr(trial, "number", -1)))
        with self._lock:
            self.in_flight[key] = time.monotonic()
            # Trials at once, for the ETA: the most seen in flight together.
            self.concurrency = max(self.concurrency, len(self.in_flight))
            # a trial that knows its study names its pass; otherwise the running pass is
            # the first unfinished one of its stage
            stage = self._by_study.get(getattr(trial, "study_name", None) or "") or next(
                (s for s in self.stages if s.stage == key[0] and s.state != "finished"),
                None,
            )
            if stage is not None:
                if stage.state == "finished":
                    stage.state = "open"  # a confirmation run after the stage's budget
                self._switch_to(stage)
        self.refresh()

    def trial_finished(self, trial: Any) -> None:
        """A trial of this process's runner ended (before it is told)."""
        key = (str(getattr(trial, "stage", "")), int(getattr(trial, "number", -1)))
        with self._lock:
            self.in_flight.pop(key, None)

    @property
    def busy(self) -> bool:
        """Whether an objective of this process is running now."""
        return bool(self.in_flight)

    def request_stop(self) -> bool:
        """Ask to stop before the next trial starts.

        Returns:
            ``True`` when the caller should stop at once instead: an objective is running
            (the engine records it as interrupted) or a stop was already requested.
        """
        if self.busy or self.stop_requested:
            return True
        self.stop_requested = True
        return False

    def callback(self, study: Any, trial: FrozenTrial) -> None:
        """The search callback: a trial of ``study`` was told."""
        with self._lock:
            stage = self._by_study.get(study.study_name)
            if stage is None:
                return
            self._switch_to(stage)
            self._count(stage, study.get_trials(deepcopy=False))
            copied = COPIED_ATTR in trial.user_attrs
            if not copied and trial.datetime_start and trial.datetime_complete:
                self.durations.append(
                    (trial.datetime_complete - trial.datetime_start).total_seconds()
                )
            if stage.complete >= stage.total and stage.running == 0:
                stage.state = "finished"
            self.trials_told += 1
        if self._live is None:
            self._print_line(stage, trial)
        self.refresh()

    # ----------------------------------------------------------------------- state

    def _switch_to(self, stage: StageProgress) -> None:
        if self.current is not None and self.current is not stage:
            if self.current.complete >= self.current.total:
                self.current.state = "finished"
        if stage.state == "pending":
            stage.state = "open"
        self.current = stage

    def _count(self, stage: StageProgress, trials: Sequence[FrozenTrial]) -> None:
        states = [t.state for t in trials]
        stage.complete = states.count(TrialState.COMPLETE)
        stage.failed = states.count(TrialState.FAIL)
        stage.pruned = states.count(TrialState.PRUNED)
        stage.running = states.count(TrialState.RUNNING)
        stage.confirmations = sum(CONFIRMS_ATTR in t.user_attrs for t in trials)
        done = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
        if done:
            sign = -1.0 if self.direction == "maximize" else 1.0
            best = min(done, key=lambda t: (sign * t.value, t.number))
            stage.best_value, stage.best_number = best.value, best.number
            stage.best_params = dict(best.params)
            first = min(done, key=lambda t: t.number)
            stage.first_value = first.value if first.number == 0 else stage.first_value

    def remaining_trials(self) -> int:
        """Trials still to evaluate (copied incumbents cost nothing)."""
        left = 0
        for stage in self.stages:
            if stage.state == "finished":
                continue
            todo = max(0, stage.total - stage.complete)
            if stage.index > 0 and stage.complete == 0 and todo:
                todo -= 1  # the previous stage's best is copied, not re-run
            left += todo
        return left

    def eta(self) -> float | None:
        """Seconds left, from the mean duration of the trials measured in this run."""
        if not self.durations:
            return None
        mean = sum(self.durations) / len(self.durations)
        return self.remaining_trials() * mean / self.concurrency

    def elapsed(self) -> float:
        """Seconds since the display started."""
        return time.monotonic() - self.started

    # --------------------------------------------------------------------- drawing

    def headline(self) -> str:
        """One line: stage i/n, trials, failed, running, best, elapsed, ETA."""
        stage = self.current
        n = len(self.stages)
        if stage is None:
            return f"all {n} stages finished | elapsed {format_duration(self.elapsed())}"
        running = self._running(stage)
        best = (
            f"best {self.metric} {format_value(stage.best_value)} (#{stage.best_number})"
            if stage.best_value is not None
            else "no result yet"
        )
        return (
            f"stage {stage.index + 1}/{n} {stage.name}: {stage.complete}/{stage.total} trials, "
            f"{stage.failed} failed, {running} running | {best} | "
            f"elapsed {format_duration(self.elapsed())}, ETA {format_duration(self.eta())}"
        )

    def table(self) -> Table:
        """A table of every stage."""
        table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
        for column, justify in (
            ("#", "right"),
            ("stage", "left"),
            ("state", "left"),
            ("trials", "right"),
            ("failed", "right"),
            ("running", "right"),
            (f"best {self.metric}", "right"),
            ("best params", "left"),
        ):
            table.add_column(column, justify=justify, no_wrap=column != "best params")
        for stage in self.stages:
            running = self._running(stage)
            style = "bold" if stage is self.current else ("dim" if stage.state == "pending" else "")
            table.add_row(
                f"{stage.index + 1}/{len(self.stages)}",
                stage.name,
                stage.state,
                f"{stage.complete}/{stage.total}",
                str(stage.failed),
                str(running),
                format_value(stage.best_value),
                format_params(stage.best_params),
                style=style,
            )
        return table

    def _running(self, stage: StageProgress) -> int:
        # The stored count (every driver's, as of the last told trial) already holds this
        # process's trials that were in flight then; those started since add to it.
        here = sum(1 for k in self.in_flight if k[0] == stage.stage) \
            if stage is self.current else 0
        return max(stage.running, here)

    def __rich__(self) -> Group:
        return Group(Text(self.headline(), style="cyan"), self.table())

    def _print_line(self, stage: StageProgress, trial: FrozenTrial) -> None:
        if COPIED_ATTR in trial.user_attrs:
            what = f"incumbent copied from the previous stage ({format_value(trial.value)})"
        elif trial.state == TrialState.COMPLETE:
            what = f"{self.metric} {format_value(trial.value)}"
        else:
            reason = trial.user_attrs.get(FAIL_REASON_ATTR) or trial.state.name.lower()
            what = f"{trial.state.name} ({reason})"
        self.console.print(
            f"[{stage.index + 1}/{len(self.stages)} {stage.name}] trial {trial.number}: {what}"
            f" {format_params(trial.params)}\n  {self.headline()}",
            highlight=False,
            soft_wrap=True,
        )

    def refresh(self) -> None:
        """Redraw the live table (no-op without one)."""
        if self._live is not None:
            self._live.refresh()

    def __enter__(self) -> TuneProgress:
        if self._live_wanted:
            self._live = Live(
                self,
                console=self.console,
                refresh_per_second=2,
                transient=False,
                redirect_stdout=True,
                redirect_stderr=True,
            )
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            live, self._live = self._live, None
            live.__exit__(None, None, None)


class _Tracked:
    """An objective whose trials the display marks as running (it stays in the driver)."""

    def __init__(self, display: TuneProgress, objective: Callable[..., Any]) -> None:
        self.display = display
        self.__wrapped__ = objective
        for name in ("metric", "direction"):
            if hasattr(objective, name):
                setattr(self, name, getattr(objective, name))

    def driver_trial_started(self, params: dict[str, Any], trial: Any) -> None:
        """Mark the trial as running (a parallel runner calls this in the driver)."""
        self.display.trial_started(trial)

    def driver_trial_finished(self, params: dict[str, Any], trial: Any) -> None:
        """Mark the trial as no longer running."""
        self.display.trial_finished(trial)

    def __call__(self, params: dict[str, Any], trial: Any) -> Any:
        self.display.trial_started(trial)
        try:
            return self.__wrapped__(params, trial)
        finally:
            self.display.trial_finished(trial)


__all__ = ["StageProgress", "TuneProgress", "format_duration", "format_params", "format_value"]
