"""Several trials at once, each in a worker process of one pool (the parallel local runner).

The workers speak :mod:`hpo.engine.runners.process`, as an isolated objective's does, so a
trial ends the same ways (returned, raised, timed out, killed, exited); one thread of the
driver serves every worker.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import wait
from typing import Any

from hpo.engine.errors import HPOError, SpecError, TrialFaultError
from hpo.engine.runners.isolated import TrialWorkers
from hpo.engine.runners.process import (
    TIMED_OUT,
    Worker,
    dumps,
    exit_fault,
    handle_message,
    torch_threads,
    trial_info,
)


class WorkerPool(TrialWorkers):
    """Several worker processes, each serving one trial at a time, served from one thread.

    The parallel local runner's engine: the driver hands a trial to an idle worker with
    :meth:`submit` and collects finished trials with :meth:`wait`, which also answers the
    workers' reports and calls through each trial's own context (so storage writes stay
    in the driver's thread). A worker is reused for the next trial, so the objective is
    loaded once per worker; after a trial that timed out or died its worker is replaced.
    Faults end a trial as :class:`~hpo.TrialFaultError` (the same reasons and kinds as
    :class:`IsolatedObjective`), never the pool.

    Args:
        objective: A two-argument objective ``(params, trial)``; it is pickled once.
        size: Workers (trials at once).
        timeout: Seconds a trial may run; ``None``: no limit. Loading the objective into
            a new worker has a limit of its own, as long.
        start_method: ``forkserver`` (default where available) or ``spawn``.
        threads: Torch threads of each worker (its trial's CPUs); ``None``: the driver's.
        kill_grace: Seconds to wait for a killed worker to be gone.

    Raises:
        HPOError: The objective cannot be pickled.
        SpecError: Invalid size, timeout or start method.
    """

    def __init__(
        self,
        objective: Callable[[dict[str, Any], Any], Any],
        *,
        size: int,
        timeout: float | None = None,
        start_method: str | None = None,
        threads: int | None = None,
        kill_grace: float = 5.0,
    ) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise SpecError(f"workers = {size!r}", key="runner.max_concurrent",
                            hint="use an integer >= 1")
        super().__init__(objective, timeout=timeout, start_method=start_method,
                         kill_grace=kill_grace)
        self.threads = threads
        self._slots = [_Slot() for _ in range(size)]

    @property
    def size(self) -> int:
        """Trials the pool runs at once."""
        return len(self._slots)

    def idle(self) -> int:
        """Workers without a trial."""
        return sum(slot.key is None for slot in self._slots)

    def in_flight(self) -> list[Any]:
        """Keys of the trials running now."""
        return [slot.key for slot in self._slots if slot.key is not None]

    def submit(self, key: Any, params: dict[str, Any], trial: Any) -> None:
        """Start a trial on an idle worker (a new worker when that one is gone).

        Args:
            key: How :meth:`wait` names the trial when it ends (e.g. its number).
            params: The trial's parameters.
            trial: The trial's context in the driver (reports and calls go to it).

        Raises:
            HPOError: No idle worker, or the parameters cannot be pickled.
        """
        slot = next((s for s in self._slots if s.key is None), None)
        if slot is None:
            raise HPOError("every worker of the pool is busy")
        threads = self.threads if self.threads is not None else torch_threads()
        environ = dict(os.environ)
        if threads is not None:
            # Read by torch (OpenMP) when the objective first imports it in the worker.
            environ["OMP_NUM_THREADS"] = str(threads)
        info = trial_info(trial, environ=environ, threads=threads)
        trial_payload = dumps((dict(params), info), "the trial's parameters")
        slot.worker = self._hand(slot.worker, trial_payload,
                                 name=f"hpo-trial-worker-{self._slots.index(slot)}")
        slot.key, slot.trial = key, trial
        slot.deadline = None if self.timeout is None else time.monotonic() + self.timeout

    def wait(self, timeout: float | None = None) -> list[tuple[Any, bool, Any]]:
        """Serve the running trials until at least one ends, or ``timeout`` seconds pass.

        Returns:
            ``(key, raised, value)`` per ended trial: ``raised`` is ``False`` with the
            objective's return value, ``True`` with the exception it raised or the
            :class:`~hpo.TrialFaultError` of a timeout, a killed worker or an exit.
        """
        ended: list[tuple[Any, bool, Any]] = []
        end = None if timeout is None else time.monotonic() + timeout
        while not ended:
            busy = [slot for slot in self._slots if slot.key is not None]
            if not busy:
                return ended
            now = time.monotonic()
            limits = [slot.deadline for slot in busy if slot.deadline is not None]
            if end is not None:
                limits.append(end)
            remaining = max(0.0, min(limits) - now) if limits else None
            handles: list[Any] = []
            for slot in busy:
                handles += [slot.worker.conn, slot.worker.process.sentinel]  # type: ignore[union-attr]
            ready = set(wait(handles, timeout=remaining))
            for slot in busy:
                worker = slot.worker
                assert worker is not None
                if worker.conn in ready or worker.process.sentinel in ready:
                    result = self._drain(slot)
                    if result is not None:
                        ended.append(result)
                        continue
                if slot.key is not None and slot.deadline is not None \
                        and time.monotonic() >= slot.deadline:
                    ended.append(self._end(slot, True, TrialFaultError(
                        f"timed out after {self.timeout:g} s", TIMED_OUT)))
            if end is not None and time.monotonic() >= end:
                break
        return ended

    def _drain(self, slot: _Slot) -> tuple[Any, bool, Any] | None:
        """Handle every message the slot's worker sent; the trial's end when it ended."""
        worker = slot.worker
        assert worker is not None
        conn, process = worker.conn, worker.process
        while True:
            try:
                if not conn.poll():
                    break
                message = conn.recv()
            except (EOFError, OSError):
                break  # the worker is gone without a result
            if message[0] == "loaded":
                if self.timeout is not None:
                    slot.deadline = time.monotonic() + self.timeout
                continue
            try:
                done, raised, value = handle_message(message, conn, slot.trial)
            except Exception as exc:  # noqa: BLE001 - the trial fails, the pool goes on
                return self._end(slot, True, exc)
            if done:
                return self._end(slot, raised, value, keep=True)
        if process.exitcode is None and process.sentinel not in wait([process.sentinel], 0):
            return None  # alive, the trial goes on
        process.join(self.kill_grace)
        return self._end(slot, True, exit_fault(process.exitcode))

    def _end(self, slot: _Slot, raised: bool, value: Any, *, keep: bool = False) -> tuple:
        key = slot.key
        slot.key = slot.trial = slot.deadline = None
        if not keep:  # timed out, died, or its state is unknown: a new worker next time
            slot.stop(self.kill_grace)
        return key, raised, value

    def cancel(self) -> list[Any]:
        """Kill the workers of every running trial (Ctrl-C); their keys.

        Idle workers stay for the next trial.
        """
        keys = []
        for slot in self._slots:
            if slot.key is not None:
                keys.append(slot.key)
                slot.key = slot.trial = slot.deadline = None
                slot.stop(self.kill_grace)
        return keys

    def close(self) -> None:
        """Stop every worker."""
        for slot in self._slots:
            slot.key = slot.trial = slot.deadline = None
            slot.stop(self.kill_grace)


@dataclass
class _Slot:
    """One worker of a pool and the trial it runs (``key`` ``None``: idle)."""

    worker: Worker | None = None
    key: Any = None
    trial: Any = None
    deadline: float | None = None

    def stop(self, grace: float) -> None:
        worker, self.worker = self.worker, None
        if worker is not None:
            worker.stop(grace)


__all__ = ["WorkerPool"]
