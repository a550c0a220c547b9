"""Trials in a child process: a per-trial timeout, and trials the OS kills.

An :class:`IsolatedObjective` runs its objective in a worker process (multiprocessing's
``forkserver`` context where there is one, else ``spawn``: no fork of a process that
already runs torch or storage threads). The worker serves the trials one after another,
so the objective's imports and first-call costs are paid once, as in the driver; after a
trial that timed out or died a fresh worker takes over. The driver stays in charge of the
trial: the worker's :class:`~hpo.TrialContext` sends every report back, the driver writes
it through the trial's own context (intermediate values, ``hpo:history``), answers
``should_stop`` with the stage's pruner, and uploads or downloads artifacts; the driver's
heartbeat or lease keeps the trial alive meanwhile.

How a trial can end, and what the stage study records:

- the objective returns or raises: exactly what the same objective gives in the driver
  (COMPLETE, FAIL with ``Type: message``, PRUNED);
- it runs past the timeout: the worker (and anything it started) is killed, FAIL
  ``timed out after N s`` (``hpo:fail_kind`` = ``timeout``);
- the worker dies by a signal, e.g. SIGKILL from the out-of-memory killer: FAIL
  ``killed by signal 9 (out of memory?)`` (``hpo:fail_kind`` = ``killed``);
- it exits without a result (``os._exit``): FAIL ``trial process exited with code N``.

Each counts towards the stage's ``max_fail``. Ctrl-C kills the worker and interrupts the
trial as in the driver. When the driver itself dies (even by SIGKILL) the worker notices
its pipe closing and kills itself, so no orphaned trial keeps computing.

The objective and the parameters are pickled (with cloudpickle, so lambdas and closures
work); an objective that cannot be pickled is a named error when
the search starts. As with any multiprocessing, a script that starts a search must guard
it with ``if __name__ == "__main__":`` (the worker imports the script's module).

The messages between the driver and a worker are :mod:`hpo.engine.runners.process`; the
parallel local runner's pool of workers is :mod:`hpo.engine.runners.pool`.
"""

from __future__ import annotations

import hashlib
import math
import multiprocessing
import os
import time
from collections.abc import Callable
from multiprocessing.connection import wait
from typing import Any

from hpo.engine.errors import SpecError, TrialFaultError
from hpo.engine.runners.process import (
    KILLED,
    TIMED_OUT,
    Worker,
    dumps,
    exit_fault,
    handle_message,
    start_context,
    torch_threads,
    trial_info,
)

START_METHODS = ("forkserver", "spawn")


def check_timeout(value: Any, key: str = "runner.trial_timeout") -> float | None:
    """A validated per-trial timeout in seconds (``None``: no limit).

    Raises:
        SpecError: Not a number of seconds > 0.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0 \
            or not math.isfinite(value):
        raise SpecError(
            f"trial_timeout = {value!r}",
            key=key,
            hint="give the seconds a trial may run (a number > 0), or leave it out",
        )
    return float(value)


def check_start_method(name: str | None) -> str:
    """The start method of isolated trials: ``forkserver`` (default where available) or ``spawn``.

    Raises:
        SpecError: Another method (``fork`` is unsafe once torch or a storage runs threads).
    """
    if name is None:
        return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() \
            else "spawn"
    if name not in START_METHODS:
        raise SpecError(
            f"start_method = {name!r}",
            key="start_method",
            hint="use 'forkserver' or 'spawn' (fork is unsafe once torch or a storage "
            "runs threads)",
        )
    return name


class TrialWorkers:
    """What drives trials in worker processes: the objective, pickled once, and its limits.

    The base of :class:`IsolatedObjective` (one worker) and
    :class:`~hpo.engine.runners.pool.WorkerPool` (several).

    Args:
        objective: A two-argument objective ``(params, trial)``.
        timeout: Seconds a trial may run; ``None``: no limit.
        start_method: ``forkserver`` (default where available) or ``spawn``.
        kill_grace: Seconds to wait for a killed worker to be gone.

    Raises:
        HPOError: The objective cannot be pickled.
        SpecError: Invalid timeout or start method.
    """

    def __init__(
        self,
        objective: Callable[[dict[str, Any], Any], Any],
        *,
        timeout: float | None = None,
        start_method: str | None = None,
        kill_grace: float = 5.0,
    ) -> None:
        self.objective = objective
        self.timeout = check_timeout(timeout)
        self.start_method = check_start_method(start_method)
        self.kill_grace = float(kill_grace)
        self._payload = dumps(objective, "the objective")

    def _hand(self, worker: Worker | None, trial_payload: bytes, *, name: str) -> Worker:
        """Send a trial to ``worker``, or to a new worker when it is gone; the one that has it.

        The objective goes along to a worker that has not loaded it yet. A worker that
        died while idle (e.g. killed between two trials) is stopped and replaced, once.

        Raises:
            OSError: The new worker is gone as well (or ``EOFError``); both are stopped.
        """
        for attempt in (1, 2):
            if worker is None or not worker.alive():
                if worker is not None:
                    worker.stop(self.kill_grace)
                worker = Worker(start_context(self.start_method, self.objective), name=name,
                                grace=self.kill_grace)
            try:
                worker.conn.send(("trial", trial_payload, None if worker.loaded else self._payload))
            except (EOFError, OSError):
                worker.stop(self.kill_grace)
                if attempt == 2:
                    raise
                worker = None
                continue
            worker.loaded = True
            return worker
        raise AssertionError("unreachable")


class IsolatedObjective(TrialWorkers):
    """An objective whose trials run in a worker process, with an optional timeout.

    Calls look like the objective's (``(params, trial)``) and return or raise what it
    does; a timeout, a killed worker or a worker that exits without a result raises
    :class:`~hpo.TrialFaultError`. One worker serves the trials one after another and is
    replaced after a fault. Attributes other than the call (``metric``, ``direction``)
    are the objective's.

    Args:
        objective: A two-argument objective ``(params, trial)``.
        timeout: Seconds a trial may run; ``None``: no limit. A new worker's start does
            not count. Loading the objective into it has a limit of its own, as long, and
            the trial's clock starts once it is loaded, so a slow import on a busy machine
            does not eat into the trial.
        start_method: ``forkserver`` (default where available) or ``spawn``.
        kill_grace: Seconds to wait for a killed worker to be gone.

    Raises:
        HPOError: The objective cannot be pickled.
        SpecError: Invalid timeout or start method.
    """

    _worker: Worker | None = None  # started by the first trial, replaced after a fault

    @property
    def __wrapped__(self) -> Callable[[dict[str, Any], Any], Any]:
        """The objective, for :func:`isolated` and :func:`inspect.unwrap`."""
        return self.objective

    def __getattr__(self, name: str) -> Any:
        # Only reached for attributes the instance does not have (metric, direction, ...);
        # "objective" missing means a half-built instance (unpickling): no recursion.
        if name.startswith("__") or name == "objective":
            raise AttributeError(name)
        return getattr(self.objective, name)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_worker": None}  # a process stays with its driver

    def __call__(self, params: dict[str, Any], trial: Any) -> Any:
        """Run one trial in the worker, serving its context from here.

        Raises:
            TrialFaultError: Timed out, killed, or exited without a result.
            Exception: Whatever the objective raised (re-raised here when it pickles).
        """
        info = trial_info(trial, environ=dict(os.environ), threads=torch_threads())
        trial_payload = dumps((dict(params), info), "the trial's parameters")
        try:
            worker = self._worker = self._hand(
                self._worker, trial_payload, name=f"hpo-trial-worker-{info.stage}-{info.number}"
            )
            raised, value = self._serve(worker, trial)
        except BaseException:
            # Timed out, died, interrupted, or the pipe broke mid-trial: this worker's
            # state is unknown, so the next trial gets a new one.
            self.close()
            raise
        if raised:
            raise value
        return value

    @property
    def fingerprint(self) -> str:
        """A hash of the pickled objective: equal for the same objective and state."""
        return hashlib.sha1(self._payload).hexdigest()

    def close(self) -> None:
        """Stop the worker (the next trial starts a new one)."""
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.stop(self.kill_grace)

    def _serve(self, worker: Worker, trial: Any) -> tuple[bool, Any]:
        """Answer the worker until the trial returns, raises, dies or runs out of time.

        Returns:
            ``(False, value)`` when the objective returned, ``(True, exception)`` when it
            raised.
        """
        process, conn = worker.process, worker.conn
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                worker.stop(self.kill_grace)
                raise TrialFaultError(f"timed out after {self.timeout:g} s", TIMED_OUT)
            ready = wait([conn, process.sentinel], timeout=remaining)
            if not ready:
                continue  # the deadline passed: raised above
            # A message sent just before the worker exited is still in the pipe: read it
            # before looking at how the process ended.
            if conn in ready or conn.poll():
                try:
                    message = conn.recv()
                except EOFError:
                    pass  # the worker is gone without a result
                else:
                    if message[0] == "loaded":
                        if self.timeout is not None:
                            deadline = time.monotonic() + self.timeout
                        continue
                    done, raised, value = handle_message(message, conn, trial)
                    if done:
                        return raised, value
                    continue
            process.join(self.kill_grace)
            raise exit_fault(process.exitcode)


def isolated(
    objective: Callable[[dict[str, Any], Any], Any],
    *,
    timeout: float | None = None,
    start_method: str | None = None,
) -> Callable[[dict[str, Any], Any], Any]:
    """``objective`` running in a child process per trial, unless it already does.

    An objective already isolated somewhere in its chain of wrappers (``__wrapped__``,
    e.g. by :meth:`~hpo.engine.runners.plan.RunPlan.objective` under the command line's
    progress display) is returned unchanged, so its trials are not isolated twice.

    Args:
        objective: A two-argument objective.
        timeout: Seconds a trial may run; ``None``: no limit.
        start_method: ``forkserver`` or ``spawn``; ``None``: forkserver where available.

    Returns:
        The isolated objective.
    """
    layer: Any = objective
    for _ in range(32):  # wrappers nest a few levels; never loop on a cycle
        if isinstance(layer, IsolatedObjective):
            return objective
        layer = getattr(layer, "__wrapped__", None)
        if layer is None:
            break
    return IsolatedObjective(objective, timeout=timeout, start_method=start_method)


__all__ = [
    "IsolatedObjective",
    "KILLED",
    "START_METHODS",
    "TIMED_OUT",
    "TrialWorkers",
    "check_start_method",
    "check_timeout",
    "isolated",
]
