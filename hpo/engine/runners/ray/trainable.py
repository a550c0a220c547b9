"""Worker side of the ray runner: the Tune trainable that runs one trial's objective.

The trainable gets the objective once per search through the object store
(``tune.with_parameters``; a prepared cube pickles as its path, so data sets travel as
a few hundred bytes and are memory-mapped, never rebuilt), runs it with a
:class:`WorkerContext`, and talks to the driver only through ``ray.tune.report``:

- one report per epoch: ``hpo_epoch``, ``hpo_value`` (the search metric, for ASHA),
  ``hpo_row`` (the epoch's metrics as JSON) and a unique ``hpo_report``; with a Tune
  checkpoint when the objective saved a state (:meth:`TrialContext.save_state`) or an
  artifact since the last report;
- one final report ``hpo_final`` with the outcome (COMPLETE / FAIL / PRUNED, value,
  reason), with a checkpoint carrying artifacts saved after the last epoch.

An exception of the objective propagates, so Tune retries the trial (``max_retries``)
from its last checkpoint; the driver records the reason once retries are exhausted.
With a timeout the objective runs in a child process of the worker
(:mod:`hpo.engine.runners.isolated`); one that runs past it is killed and its trial ends FAIL
``timed out after N s`` without a retry.
A trial that ASHA or the pruner stops never gets past its ``tune.report`` call.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import pickle
import shutil
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import optuna
import ray
from ray import tune

from hpo.engine.context import TrialContext, _plain
from hpo.engine.errors import HPOError, TrialFaultError
from hpo.engine.ledger import Ledger
from hpo.engine.runners.isolated import TIMED_OUT, IsolatedObjective
from hpo.engine.runners.outcome import outcome_of, outcome_of_exception

CONFIG_KEY = "hpo"
EPOCH_KEY = "hpo_epoch"
VALUE_KEY = "hpo_value"
ROW_KEY = "hpo_row"
REPORT_KEY = "hpo_report"
FINAL_KEY = "hpo_final"
NODE_KEY = "hpo_node"
"""Report key: the id of the Ray node the trial runs on (the driver records it per trial)."""
STATE_FILE = "hpo_state.pkl"
ARTIFACT_DIR = "artifacts"
PENDING_PREFIX = "pending:"
"""Prefix of the id :meth:`WorkerContext.save_artifact` returns: the driver uploads the
file when the trial ends, and the real artifact id is in the stage study then."""


class WorkerContext(TrialContext):
    """The trial context of an objective running inside a Ray Tune trial.

    Reports go to ``ray.tune.report``; the driver writes them to the stage study (the
    same intermediate values and ``hpo:history`` / ``hpo:epochs`` as the local runner).
    :meth:`should_stop` is always ``False``: ASHA or the pruner stop a trial from the
    driver, and its next report does not return. Artifacts travel to the driver in the
    trial's Tune checkpoints; :meth:`save_artifact` returns ``"pending:<file name>"``.

    Args:
        number: The trial's number in its stage study.
        params: Every stage's parameters, merged.
        stage: The stage's name.
        metric: The search metric (see :class:`~hpo.TrialContext`).
        artifact_store: The search's artifact store (loading finished stages' artifacts
            needs it to be reachable from the worker, e.g. a shared folder).
        ledgers: Finished stages' ledger entries.
        restored: What the last checkpoint held, when the trial is retried.
    """

    def __init__(
        self,
        *,
        number: int,
        params: dict[str, Any],
        stage: str,
        metric: str | None,
        artifact_store: Any,
        ledgers: dict[str, Ledger],
        restored: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(
            None,
            params=params,
            stage=stage,
            metric=metric,
            artifact_store=artifact_store,
            ledgers=ledgers,
        )
        self._number = number
        self._attempt = uuid.uuid4().hex[:8]
        self._reports = 0
        self._state: Any = None
        self._state_dirty = False
        self._staging = Path(tempfile.mkdtemp(prefix="hpo-trial-"))
        self._artifacts: list[str] = []
        self._artifacts_dirty = False
        if restored is not None:
            self.history = list(restored.get("history", []))
            if restored.get("has_state"):
                self.restored_state = restored.get("state")
                self._state = self.restored_state
            for name, path in restored.get("artifact_files", {}).items():
                shutil.copyfile(path, self._staging / name)
                self._artifacts.append(name)

    @property
    def number(self) -> int:
        """The trial's number in its stage study."""
        return self._number

    def report(self, epoch: int, value: float | None = None, **metrics: float | None) -> None:
        """Report one epoch's metrics to Tune (and through the driver to the stage study).

        A report of an epoch at or before the last one reported (a retried trial that
        starts again from scratch) replaces the history from that epoch on.
        """
        epoch = int(epoch)
        row = {"epoch": epoch, **{k: _plain(v) for k, v in metrics.items()}}
        self.history = [r for r in self.history if r["epoch"] < epoch]
        self.history.append(row)
        if value is None:
            value = self._search_metric(metrics)
        result: dict[str, Any] = {EPOCH_KEY: epoch, ROW_KEY: json.dumps(row)}
        if value is not None and math.isfinite(float(value)):
            result[VALUE_KEY] = float(value)
        self._send(result)

    def should_stop(self) -> bool:
        """Always ``False``: Tune stops the trial itself (ASHA, the pruner)."""
        return False

    def save_state(self, state: Any) -> None:
        """Keep a state; it goes into the Tune checkpoint of the next report."""
        self._state = state
        self._state_dirty = True

    def save_artifact(self, path: str | Path) -> str:
        """Stage a file for the artifact store; the driver uploads it when the trial ends.

        Returns:
            ``"pending:<file name>"`` (the artifact id exists once the driver uploaded it).

        Raises:
            HPOError: The search has no artifact store, or the file is missing.
        """
        if self.artifact_store is None:
            raise HPOError(
                "this search has no artifact store (hint: pass artifact_store='artifacts/' "
                "to LayerwiseSearch, or set `artifacts` in the study file)"
            )
        path = Path(path)
        if not path.is_file():
            raise HPOError(f"no artifact file {path} (hint: write the file before saving it)")
        shutil.copyfile(path, self._staging / path.name)
        if path.name not in self._artifacts:
            self._artifacts.append(path.name)
        self._artifacts_dirty = True
        return PENDING_PREFIX + path.name

    def finish(self, outcome: dict[str, Any]) -> None:
        """Send the final report (with the artifacts saved since the last report)."""
        result: dict[str, Any] = {FINAL_KEY: json.dumps(outcome)}
        if self.history:
            result[EPOCH_KEY] = self.history[-1]["epoch"]
        if outcome.get("value") is not None:
            result[VALUE_KEY] = outcome["value"]
        self._state_dirty = False  # the trial is over: nothing to resume
        self._send(result)

    def cleanup(self) -> None:
        """Remove the staging folder."""
        shutil.rmtree(self._staging, ignore_errors=True)

    def _send(self, result: dict[str, Any]) -> None:
        self._reports += 1
        result[REPORT_KEY] = f"{self._attempt}:{self._reports}"
        result[NODE_KEY] = _node_id()
        if not (self._state_dirty or self._artifacts_dirty):
            tune.report(result)
            return
        folder = Path(tempfile.mkdtemp(prefix="hpo-ckpt-"))
        try:
            payload = {
                "history": self.history,
                "has_state": self._state is not None,
                "state": self._state,
                "artifacts": list(self._artifacts),
            }
            with open(folder / STATE_FILE, "wb") as f:
                pickle.dump(payload, f, protocol=pickle.HIGHEST_PROTOCOL)
            if self._artifacts:
                (folder / ARTIFACT_DIR).mkdir()
                for name in self._artifacts:
                    shutil.copyfile(self._staging / name, folder / ARTIFACT_DIR / name)
            self._state_dirty = self._artifacts_dirty = False
            # tune.report copies the folder to the run's storage before it returns (or
            # never returns, when the trial is stopped), so the folder can go either way.
            tune.report(result, checkpoint=tune.Checkpoint.from_directory(str(folder)))
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def _node_id() -> str | None:
    """The id of the Ray node this worker runs on (``None`` outside Ray)."""
    try:
        return ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001 - only a record of where the trial ran
        return None


def read_checkpoint(folder: str | Path) -> dict[str, Any]:
    """What a trial checkpoint holds: history, state and artifact files (paths)."""
    folder = Path(folder)
    with open(folder / STATE_FILE, "rb") as f:
        payload = pickle.load(f)
    payload["artifact_files"] = {
        name: str(folder / ARTIFACT_DIR / name)
        for name in payload.get("artifacts", [])
        if (folder / ARTIFACT_DIR / name).is_file()
    }
    return payload


def set_threads(threads: int) -> None:
    """Give torch (and OpenMP libraries started later) the trial's CPU count."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ["MKL_NUM_THREADS"] = str(threads)
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def run_trial(config: dict[str, Any], payload: Any = None) -> None:
    """The Tune function trainable: one trial of a stage.

    Args:
        config: ``{"hpo": {...}}`` as the driver's searcher suggested it.
        payload: ``(objective, artifact_store)`` from the object store.
    """
    objective, artifact_store = payload
    spec = config[CONFIG_KEY]
    set_threads(int(spec["threads"]))
    restored = None
    checkpoint = tune.get_checkpoint()
    context: WorkerContext | None = None
    opened = checkpoint.as_directory() if checkpoint is not None else contextlib.nullcontext()
    with opened as folder:
        if folder is not None and (Path(folder) / STATE_FILE).is_file():
            restored = read_checkpoint(folder)
        context = WorkerContext(
            number=int(spec["number"]),
            params=dict(spec["params"]),
            stage=spec["stage"],
            metric=spec.get("metric"),
            artifact_store=artifact_store,
            ledgers={k: Ledger.from_dict(v) for k, v in spec.get("ledgers", {}).items()},
            restored=restored,
        )
        context.race = spec.get("race")
        context.seed_stage = spec.get("seed_stage")
    if spec.get("timeout") is not None:
        objective = _isolated(objective, spec["timeout"])
    try:
        try:
            result = objective(context.params, context)
        except optuna.TrialPruned as exc:
            outcome = outcome_of_exception(exc, context)
        except TrialFaultError as exc:
            if exc.kind != TIMED_OUT:
                raise  # a killed process is a crash: Tune retries it (max_retries)
            outcome = outcome_of_exception(exc, context)
        else:
            outcome = outcome_of(result)
        context.finish(
            {"state": outcome.state.name, "value": outcome.value, "reason": outcome.reason,
             "kind": outcome.kind, "attrs": dict(outcome.attrs)}
        )
    finally:
        context.cleanup()


_ISOLATED: list[Any] = []  # this worker's isolated objective (one search at a time)


def _isolated(objective: Any, timeout: float) -> Any:
    """The objective in a worker process of its own, kept for the following trials.

    Every trial gets the objective afresh from the object store: the pickled objective
    tells whether the kept worker already holds the same one.
    """
    fresh = IsolatedObjective(objective, timeout=timeout)
    kept = _ISOLATED[0] if _ISOLATED else None
    if kept is not None and kept.fingerprint == fresh.fingerprint and kept.timeout == timeout:
        return kept
    if kept is not None:
        kept.close()
    _ISOLATED[:] = [fresh]
    return fresh


__all__ = ["WorkerContext", "read_checkpoint", "run_trial", "set_threads"]
