"""The protocol between a driver and a trial's worker process, both ends of it.

The driver starts a :class:`Worker` (``forkserver`` or ``spawn``), sends it the pickled
objective once and then one ``("trial", params and TrialInfo, objective or None)``
message per trial. The worker runs the objective with a :class:`~hpo.TrialContext` whose
reports and calls (``should_stop``, artifacts, ``save_state``) go back through the pipe;
the driver answers them with :func:`handle_message` on the trial's own context, until a
``returned`` or ``raised`` message ends the trial. A worker that dies instead is read
with :func:`exit_fault`. Both :class:`~hpo.engine.runners.isolated.IsolatedObjective`
(one worker) and :class:`~hpo.engine.runners.pool.WorkerPool` (several) speak it.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import select
import signal
import sys
import threading
import time
import weakref
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import cloudpickle

from hpo.engine.context import TrialContext, _plain
from hpo.engine.errors import HPOError, TrialFaultError

_log = logging.getLogger("hpo")

TIMED_OUT = "timeout"
"""``hpo:fail_kind`` of a trial killed at its timeout."""
KILLED = "killed"
"""``hpo:fail_kind`` of a trial whose process died by a signal (e.g. out of memory)."""

# What the child may ask the driver to do on the trial's context.
_CALLS = ("should_stop", "save_artifact", "load_artifact", "save_state")


def dumps(obj: Any, what: str) -> bytes:
    """``obj`` pickled for a worker (cloudpickle: lambdas and closures too).

    Args:
        obj: The objective, or a trial's parameters and :class:`TrialInfo`.
        what: How the error names it.

    Raises:
        HPOError: ``obj`` cannot be pickled.
    """
    try:
        return cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:  # noqa: BLE001 - pickling raises many types; name them all
        raise HPOError(
            f"{what} cannot be sent to the trial's process: {type(exc).__name__}: {exc} "
            f"(hint: isolated trials (trial_timeout, isolate) run in a child process, so "
            f"the objective must pickle: keep open files, locks, connections and GUI "
            f"objects out of it, or create them inside the objective)"
        ) from exc


@dataclass(frozen=True)
class TrialInfo:
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
    seed_stage: str | None = None


def trial_info(trial: Any, *, environ: dict[str, str], threads: int | None) -> TrialInfo:
    """The child's view of ``trial``, run in this process's directory and path.

    Args:
        trial: The trial's context in the driver (missing attributes take defaults).
        environ: The environment the child runs the objective in.
        threads: Torch threads for the child (None: leave torch's default).
    """
    return TrialInfo(
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
        seed_stage=getattr(trial, "seed_stage", None),
    )


class Worker:
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
        self._finalizer = weakref.finalize(self, stop_worker, self.process, parent, grace)

    def alive(self) -> bool:
        """Whether the process still runs."""
        return self.process.exitcode is None

    def stop(self, grace: float) -> None:
        """Close the pipe and kill the worker (and what it started)."""
        self._finalizer.detach()
        stop_worker(self.process, self.conn, grace)


def stop_worker(process: Any, conn: Connection, grace: float) -> None:
    conn.close()
    kill_tree(process)
    process.join(grace)


_PRELOADED: set[str] = set()


def start_context(method: str, objective: Any) -> Any:
    """The multiprocessing context that starts workers for ``objective``."""
    context = multiprocessing.get_context(method)
    if method == "forkserver" and not _PRELOADED:
        # The fork server starts on first use and forks every trial from itself: with the
        # objective's modules (torch, ...) imported there once, a trial starts in
        # milliseconds instead of importing them again.
        modules = [__name__]  # the worker's own module (worker_main)
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


def torch_threads() -> int | None:
    """The driver's torch thread count (``None`` without torch): its trials get it too."""
    torch = sys.modules.get("torch")
    return int(torch.get_num_threads()) if torch is not None else None


def handle_message(message: tuple, conn: Connection, trial: Any) -> tuple[bool, bool, Any]:
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
        return True, True, load_exception(message[1])
    raise HPOError(f"unknown message {kind!r} from a trial process")


def _plain_reply(reply: tuple) -> tuple:
    if isinstance(reply[1], Path):
        return reply[0], str(reply[1])
    return reply


def kill_tree(process: Any) -> None:
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


def exit_fault(exitcode: int | None) -> TrialFaultError:
    """The fault of a worker that ended without a result, by its exit code."""
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


def load_exception(payload: tuple[bytes | None, str, str]) -> BaseException:
    data, name, text = payload
    if data is not None:
        try:
            return pickle.loads(data)
        except Exception:  # noqa: BLE001 - e.g. its module cannot be imported here
            pass
    return TrialFaultError(f"{name}: {text}")


class _ChildContext(TrialContext):
    """The trial context inside the trial's process: everything goes to the driver."""

    def __init__(self, conn: Connection, *, params: dict[str, Any], info: TrialInfo) -> None:
        super().__init__(None, params=params, stage=info.stage, metric=info.metric,
                         ledgers=dict(info.ledgers))
        self._conn = conn
        self._number = info.number
        self.history = [dict(row) for row in info.history]
        self.restored_state = info.restored_state
        self.race = info.race
        self.seed_stage = info.seed_stage

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
            raise load_exception(payload)
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
    "KILLED",
    "TIMED_OUT",
    "TrialInfo",
    "Worker",
    "dumps",
    "exit_fault",
    "handle_message",
    "start_context",
    "torch_threads",
    "trial_info",
]
