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

The objective and the parameters are pickled (with cloudpickle when it is installed, so
lambdas and closures work); an objective that cannot be pickled is a named error when
the search starts. As with any multiprocessing, a script that starts a search must guard
it with ``if __name__ == "__main__":`` (the worker imports the script's module).
"""

from __future__ import annotations

import hashlib
import logging
import math
import multiprocessing
import os
import pickle
import select
import signal
import sys
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from hpo.engine.context import TrialContext, _plain
from hpo.engine.errors import HPOError, SpecError, TrialFaultError

_log = logging.getLogger("hpo")

TIMED_OUT = "timeout"
"""``hpo:fail_kind`` of a trial killed at its timeout."""
KILLED = "killed"
"""``hpo:fail_kind`` of a trial whose process died by a signal (e.g. out of memory)."""
START_METHODS = ("forkserver", "spawn")

# What the child may ask the driver to do on the trial's context.
_CALLS = ("should_stop", "save_artifact", "load_artifact", "save_state")


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


def _dumps(obj: Any, what: str) -> bytes:
    try:
        import cloudpickle

        dumps: Callable[..., bytes] = cloudpickle.dumps
    except ImportError:  # plain pickle: module-level functions and classes only
        dumps = pickle.dumps
    try:
        return dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:  # noqa: BLE001 - pickling raises many types; name them all
        raise HPOError(
            f"{what} cannot be sent to the trial's process: {type(exc).__name__}: {exc} "
            f"(hint: isolated trials (trial_timeout, isolate) run in a child process, so "
            f"the objective must pickle: keep open files, locks, connections and GUI "
            f"objects out of it, or create them inside the objective)"
        ) from exc


@dataclass(frozen=True)
class _TrialInfo:
    """What the child needs besides the objective: the trial and the driver's setting."""

    number: int
    stage: str
    metric: str | None
    cwd: str
    sys_path: list[str]
    environ: dict[str, str]
    threads: int | None = None
    history: tuple[dict[str, Any], ...] = ()
    restored_state: Any = None
    ledgers: tuple[tuple[str, Any], ...] = ()
    race: dict[str, Any] | None = None


def _trial_info(trial: Any, *, environ: dict[str, str], threads: int | None) -> _TrialInfo:
    """The child's view of ``trial``, run in this process's directory and path.

    Args:
        trial: The trial's context in the driver (missing attributes take defaults).
        environ: The environment the child runs the objective in.
        threads: Torch threads for the child (None: leave torch's default).
    """
    return _TrialInfo(
        number=int(getattr(trial, "number", -1)),
        stage=str(getattr(trial, "stage", "")),
        metric=getattr(trial, "metric", None),
        cwd=os.getcwd(),
        sys_path=list(sys.path),
        environ=environ,
        threads=threads,
        # A retried Ray trial resumes from these (see TrialContext.save_state).
        history=tuple(getattr(trial, "history", ()) or ()),
        restored_state=getattr(trial, "restored_state", None),
        ledgers=tuple((getattr(trial, "ledgers", None) or {}).items()),
        race=getattr(trial, "race", None),
    )


class IsolatedObjective:
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
        self.__wrapped__ = objective
        self._payload = _dumps(objective, "the objective")
        self._worker: _Worker | None = None

    def __getattr__(self, name: str) -> Any:
        # Only reached for attributes not set in __init__ (metric, direction, ...);
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
        info = _trial_info(trial, environ=dict(os.environ), threads=_torch_threads())
        trial_payload = _dumps((dict(params), info), "the trial's parameters")
        try:
            worker = self._send(trial_payload, info)
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

    def _send(self, trial_payload: bytes, info: _TrialInfo) -> _Worker:
        """Hand the trial to a live worker, starting one when there is none."""
        for attempt in (1, 2):
            worker = self._worker
            if worker is None or not worker.alive():
                self.close()
                worker = self._worker = _Worker(
                    _context(self.start_method, self.objective),
                    name=f"hpo-trial-worker-{info.stage}-{info.number}",
                    grace=self.kill_grace,
                )
            try:
                worker.conn.send(
                    ("trial", trial_payload, None if worker.loaded else self._payload)
                )
            except (BrokenPipeError, ConnectionResetError, EOFError):
                if attempt == 2:
                    raise
                self.close()  # it died between two trials (e.g. killed while idle)
                continue
            worker.loaded = True
            return worker
        raise AssertionError("unreachable")

    def _serve(self, worker: _Worker, trial: Any) -> tuple[bool, Any]:
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
                    done, raised, value = _handle(message, conn, trial)
                    if done:
                        return raised, value
                    continue
            process.join(self.kill_grace)
            raise _exit_fault(process.exitcode)


class _Worker:
    """One worker process and the driver's end of its pipe."""

    def __init__(self, context: Any, *, name: str, grace: float) -> None:
        parent, child = context.Pipe()
        self.process = context.Process(target=_worker_main, args=(child,), name=name)
        self.process.start()
        child.close()  # the child's end lives in the worker only: its death closes the pipe
        self.conn = parent
        self.loaded = False
        # At exit, before multiprocessing joins its children (which would wait forever
        # for an idle worker): close the pipe, the worker ends.
        self._finalizer = weakref.finalize(self, _stop, self.process, parent, grace)

    def alive(self) -> bool:
        """Whether the process still runs."""
        return self.process.exitcode is None

    def stop(self, grace: float) -> None:
        """Close the pipe and kill the worker (and what it started)."""
        self._finalizer.detach()
        _stop(self.process, self.conn, grace)


def _stop(process: Any, conn: Connection, grace: float) -> None:
    conn.close()
    _kill(process)
    process.join(grace)


def isolated(
    objective: Callable[[dict[str, Any], Any], Any],
    *,
    timeout: float | None = None,
    start_method: str | None = None,
) -> Callable[[dict[str, Any], Any], Any]:
    """``objective`` running in a child process per trial, unless it already does.

    An objective already isolated somewhere in its chain of wrappers (``__wrapped__``,
    e.g. by :func:`hpo.study.tune.make_objective` under the command line's progress display)
    is returned unchanged, so its trials are not isolated twice.

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


class WorkerPool:
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
        self.objective = objective
        self.timeout = check_timeout(timeout)
        self.start_method = check_start_method(start_method)
        self.threads = threads
        self.kill_grace = float(kill_grace)
        self._payload = _dumps(objective, "the objective")
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
        threads = self.threads if self.threads is not None else _torch_threads()
        environ = dict(os.environ)
        if threads is not None:
            # Read by torch (OpenMP) when the objective first imports it in the worker.
            environ["OMP_NUM_THREADS"] = str(threads)
        info = _trial_info(trial, environ=environ, threads=threads)
        trial_payload = _dumps((dict(params), info), "the trial's parameters")
        for attempt in (1, 2):
            if slot.worker is None or not slot.worker.alive():
                slot.stop(self.kill_grace)
                slot.worker = _Worker(
                    _context(self.start_method, self.objective),
                    name=f"hpo-trial-worker-{self._slots.index(slot)}",
                    grace=self.kill_grace,
                )
            try:
                slot.worker.conn.send(
                    ("trial", trial_payload, None if slot.worker.loaded else self._payload)
                )
            except (BrokenPipeError, ConnectionResetError, EOFError, OSError):
                slot.stop(self.kill_grace)  # it died while idle (e.g. killed)
                if attempt == 2:
                    raise
                continue
            slot.worker.loaded = True
            break
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
                done, raised, value = _handle(message, conn, slot.trial)
            except Exception as exc:  # noqa: BLE001 - the trial fails, the pool goes on
                return self._end(slot, True, exc)
            if done:
                return self._end(slot, raised, value, keep=True)
        if process.exitcode is None and process.sentinel not in wait([process.sentinel], 0):
            return None  # alive, the trial goes on
        process.join(self.kill_grace)
        return self._end(slot, True, _exit_fault(process.exitcode))

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

    worker: _Worker | None = None
    key: Any = None
    trial: Any = None
    deadline: float | None = None

    def stop(self, grace: float) -> None:
        worker, self.worker = self.worker, None
        if worker is not None:
            worker.stop(grace)


# ------------------------------------------------------------------------- driver side


_PRELOADED: set[str] = set()


def _context(method: str, objective: Any) -> Any:
    context = multiprocessing.get_context(method)
    if method == "forkserver" and not _PRELOADED:
        # The fork server starts on first use and forks every trial from itself: with the
        # objective's modules (torch, ...) imported there once, a trial starts in
        # milliseconds instead of importing them again.
        modules = ["hpo.engine.runners.isolated"]
        owner = getattr(type(objective), "__module__", None)
        inner = getattr(objective, "__wrapped__", objective)
        for module in (owner, getattr(inner, "__module__", None),
                       getattr(type(inner), "__module__", None)):
            if module and module not in ("__main__", "builtins") and module not in modules:
                modules.append(module)
        if "torch" in sys.modules:
            modules.append("torch")
        context.set_forkserver_preload(modules)
        _PRELOADED.update(modules)
    return context


def _torch_threads() -> int | None:
    # The driver's torch thread count (``[runner] cpu``) applies to its trials too.
    torch = sys.modules.get("torch")
    return int(torch.get_num_threads()) if torch is not None else None


def _handle(message: tuple, conn: Connection, trial: Any) -> tuple[bool, bool, Any]:
    """Act on one message of the worker: ``(done, raised, value or exception)``."""
    kind = message[0]
    if kind == "report":
        _, epoch, value, metrics = message
        trial.report(epoch, value, **metrics)
        return False, False, None
    if kind == "call":
        _, method, args, kwargs = message
        try:
            if method not in _CALLS:
                raise HPOError(f"a trial process may not call {method!r}")
            reply: tuple = ("ok", getattr(trial, method)(*args, **kwargs))
        except Exception as exc:  # noqa: BLE001 - raised again in the child
            reply = ("error", _exception_payload(exc))
        conn.send(_plain_reply(reply))
        return False, False, None
    if kind == "returned":
        return True, False, message[1]
    if kind == "raised":
        return True, True, _load_exception(message[1])
    raise HPOError(f"unknown message {kind!r} from a trial process")


def _plain_reply(reply: tuple) -> tuple:
    if isinstance(reply[1], Path):
        return reply[0], str(reply[1])
    return reply


def _kill(process: Any) -> None:
    """Kill the trial's process and everything it started (its own process group)."""
    if process.exitcode is not None or process.pid is None:
        return
    try:
        # Only once the child has made its group: before, the group id is not its own.
        if os.getpgid(process.pid) == process.pid:
            os.killpg(process.pid, signal.SIGKILL)
            return
    except (ProcessLookupError, PermissionError):
        pass
    process.kill()


def _exit_fault(exitcode: int | None) -> TrialFaultError:
    if exitcode is not None and exitcode < 0:
        number = -exitcode
        if number == signal.SIGKILL:
            return TrialFaultError(f"killed by signal {number} (out of memory?)", KILLED)
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = "unknown signal"
        return TrialFaultError(f"killed by signal {number} ({name})", KILLED)
    return TrialFaultError(f"trial process exited with code {exitcode} before it returned")


def _exception_payload(exc: BaseException) -> tuple[bytes | None, str, str]:
    try:
        data: bytes | None = pickle.dumps(exc)
        pickle.loads(data)  # an exception whose __init__ wants other arguments fails here
    except Exception:  # noqa: BLE001 - fall back to its type and message
        data = None
    return data, type(exc).__name__, str(exc)


def _load_exception(payload: tuple[bytes | None, str, str]) -> BaseException:
    data, name, text = payload
    if data is not None:
        try:
            return pickle.loads(data)
        except Exception:  # noqa: BLE001 - e.g. its module cannot be imported here
            pass
    return TrialFaultError(f"{name}: {text}")


# -------------------------------------------------------------------------- child side


class _ChildContext(TrialContext):
    """The trial context inside the trial's process: everything goes to the driver."""

    def __init__(self, conn: Connection, *, params: dict[str, Any], info: _TrialInfo) -> None:
        super().__init__(None, params=params, stage=info.stage, metric=info.metric,
                         ledgers=dict(info.ledgers))
        self._conn = conn
        self._number = info.number
        self.history = [dict(row) for row in info.history]
        self.restored_state = info.restored_state
        self.race = info.race

    @property
    def number(self) -> int:
        """The trial's number in its stage study."""
        return self._number

    def report(self, epoch: int, value: float | None = None, **metrics: float | None) -> None:
        """Report one epoch's metrics; the driver writes them to the stage study."""
        super().report(epoch, value, **metrics)  # the history, here too
        plain = {k: _plain(v) for k, v in metrics.items()}
        self._conn.send(("report", int(epoch), _plain(value), plain))

    def should_stop(self) -> bool:
        """Whether the stage's pruner (asked by the driver) stops this trial now."""
        self.stopped = bool(self._call("should_stop")) or self.stopped
        return self.stopped

    def save_state(self, state: Any) -> None:
        """Keep a state to resume from (kept by the driver's context; it must pickle)."""
        self._call("save_state", state)

    def save_artifact(self, path: str | Path) -> str:
        """Upload a file to the artifact store (done by the driver; returns its id)."""
        return self._call("save_artifact", str(Path(path).resolve()))

    def load_artifact(self, filename: str, dest: str | Path, *, stage: str | None = None) -> Path:
        """Download a finished stage's artifact (done by the driver)."""
        return Path(self._call("load_artifact", filename, str(Path(dest).resolve()),
                               stage=stage))

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        self._conn.send(("call", method, args, kwargs))
        status, payload = self._conn.recv()
        if status == "error":
            raise _load_exception(payload)
        return payload


def _worker_main(conn: Connection) -> None:
    """The worker process: run trials as the driver sends them, until it closes the pipe."""
    try:
        os.setpgid(0, 0)  # its own group, so a timeout also kills what the trial started
    except OSError:
        pass
    _die_with_driver(conn)
    objective: Any = None
    while True:
        try:
            _, trial_payload, objective_payload = conn.recv()
        except EOFError:
            return  # the driver is done with this worker
        try:
            params, info = pickle.loads(trial_payload)
            os.chdir(info.cwd)
            sys.path[:] = info.sys_path
            os.environ.clear()
            os.environ.update(info.environ)
            if objective_payload is not None:
                objective = pickle.loads(objective_payload)
                conn.send(("loaded",))  # the trial's clock starts now
            if info.threads is not None and "torch" in sys.modules:
                sys.modules["torch"].set_num_threads(info.threads)
            context = _ChildContext(conn, params=params, info=info)
            result = objective(params, context)
        except BaseException as exc:  # noqa: BLE001 - SystemExit too: the driver decides
            message: tuple = ("raised", _exception_payload(exc))
        else:
            message = _result_message(result)
        conn.send(message)


def _result_message(result: Any) -> tuple:
    # numpy / torch scalars go back as floats, other values as they are (the driver
    # classifies them as it would in process) when they pickle.
    if result is None or isinstance(result, int | float):
        return "returned", result
    if hasattr(result, "attrs") and hasattr(result, "value"):
        # A value with user attributes (hpo.engine.replicates.Scored): as it is, attributes
        # included (the pickle check below).
        try:
            pickle.dumps(result)
            return "returned", result
        except Exception:  # noqa: BLE001 - fall back to its float
            pass
    try:
        return "returned", float(result)
    except (TypeError, ValueError):
        pass
    try:
        pickle.dumps(result)
    except Exception:  # noqa: BLE001
        fault = TrialFaultError(f"objective returned {type(result).__name__}, not a number")
        return "raised", _exception_payload(fault)
    return "returned", result


def _die_with_driver(conn: Connection) -> None:
    """Kill this process (and its group) as soon as the driver's end of the pipe closes.

    A SIGKILLed driver cannot stop its trials; without this they would keep computing
    (and writing files) while a restarted driver has already failed them as orphaned.
    """
    events = getattr(select, "POLLRDHUP", 0)  # HUP and ERR are always reported
    try:
        poller = select.poll()
        poller.register(conn.fileno(), events)
    except (AttributeError, OSError, ValueError):  # no poll(): watch the parent's pid
        poller = None
    driver = os.getppid()

    def watch() -> None:
        while True:
            if poller is not None:
                revents = [ev for _, ev in poller.poll()]
                if any(ev & select.POLLNVAL for ev in revents):
                    return  # this process closed the pipe itself: it is ending anyway
                if any(ev & (select.POLLHUP | select.POLLERR | events) for ev in revents):
                    break
            else:
                time.sleep(0.5)
                if os.getppid() != driver:
                    break
        if os.getpgid(0) == os.getpid():
            os.killpg(0, signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="hpo-trial-watchdog", daemon=True).start()


__all__ = [
    "IsolatedObjective",
    "KILLED",
    "START_METHODS",
    "TIMED_OUT",
    "WorkerPool",
    "check_start_method",
    "check_timeout",
    "isolated",
]
