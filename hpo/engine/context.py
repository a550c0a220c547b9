"""What an objective sees of its trial: parameters, reporting, pruning, artifacts."""

from __future__ import annotations

import math
import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna
from optuna.artifacts import download_artifact, upload_artifact

from hpo.engine.errors import HPOError
from hpo.engine.ledger import Ledger

HISTORY_ATTR = "hpo:history"
EPOCHS_ATTR = "hpo:epochs"


class TrialContext:
    """The second argument of a two-argument objective.

    Args:
        trial: The Optuna trial of the stage study (``None`` for a detached context,
            e.g. when retraining the exported best configuration).
        params: Every stage's parameters merged: tuned stages at their ledger values,
            the open stage at this trial's values, later stages at their defaults.
        stage: The stage's name.
        metric: The metric whose per-epoch value becomes the trial's intermediate value
            (for pruners and the dashboard); ``None`` uses the only metric reported.
        artifact_store: Where :meth:`save_artifact` uploads files.
        ledgers: Finished stages' ledger entries (their artifacts can be loaded).
    """

    def __init__(
        self,
        trial: optuna.Trial | None,
        *,
        params: Mapping[str, Any],
        stage: str,
        metric: str | None = None,
        artifact_store: Any = None,
        ledgers: Mapping[str, Ledger] | None = None,
    ) -> None:
        self._trial = trial
        self._params = dict(params)
        self.stage = stage
        self.metric = metric
        self.artifact_store = artifact_store
        self.ledgers = dict(ledgers or {})
        self.history: list[dict[str, Any]] = []
        self.stopped = False
        self.restored_state: Any = None
        """What :meth:`save_state` kept before the trial crashed, when a runner retries it
        from its last checkpoint (the ray runner); ``None`` on a first attempt."""
        self.race: dict[str, Any] | None = None
        """With replicated, raced trials: the bar this trial races against (see
        :class:`hpo.engine.replicates.RaceBar`); ``None`` otherwise."""
        self.seed_stage: str | None = None
        """With replicates: the stage whose replicate seeds this trial trains with (the
        one that measured the incumbent it pairs with); ``None``: :attr:`stage`."""

    @property
    def params(self) -> dict[str, Any]:
        """Every stage's parameters, merged (a copy)."""
        return dict(self._params)

    @property
    def number(self) -> int:
        """The trial's number in its stage study (-1 when detached)."""
        return self._trial.number if self._trial is not None else -1

    @property
    def study_name(self) -> str | None:
        """The stage study's name (``None`` when detached)."""
        return self._trial.study.study_name if self._trial is not None else None

    @property
    def epochs(self) -> int:
        """How many epochs were reported."""
        return len(self.history)

    def report(self, epoch: int, value: float | None = None, **metrics: float | None) -> None:
        """Report one epoch's metrics.

        The search metric's value (``value`` when given, else ``metrics[metric]``) becomes
        the trial's intermediate value at step ``epoch``; every metric is kept in the
        trial's user attribute ``hpo:history`` (the runner writes ``hpo:epochs`` once,
        when the trial ends: a commit per epoch less).

        Args:
            epoch: The epoch (the step of the intermediate value).
            value: The search metric's value, when not among ``metrics``.
            **metrics: Named metrics of this epoch; ``None`` for one that is undefined.
        """
        row = {"epoch": int(epoch), **{k: _plain(v) for k, v in metrics.items()}}
        self.history.append(row)
        if value is None:
            value = self._search_metric(metrics)
        if self._trial is None:
            return
        if value is not None and math.isfinite(value):
            self._trial.report(float(value), int(epoch))
        self._trial.set_user_attr(HISTORY_ATTR, self.history)

    def save_state(self, state: Any) -> None:
        """Keep a picklable state to resume from if the trial crashes.

        E.g. model and optimizer state dicts and the epoch. Call it before
        :meth:`report`: runners that retry crashed trials (the ray runner,
        ``max_retries``) checkpoint it with that report and hand it back as
        :attr:`restored_state`, with :attr:`history` holding the epochs already done.
        The local runner does not retry, so it only keeps the latest state in memory.

        Args:
            state: Any picklable object.
        """
        self._state = state

    def should_stop(self) -> bool:
        """Whether the pruner says this trial should stop now (it is then recorded PRUNED)."""
        if self._trial is None:
            return False
        if self._trial.should_prune():
            self.stopped = True
        return self.stopped

    def save_artifact(self, path: str | Path) -> str:
        """Upload a file (e.g. pretrained DBN weights) to the artifact store.

        The best trial's artifacts enter the stage's ledger, so later stages can load them.

        Args:
            path: The file.

        Returns:
            The artifact id.

        Raises:
            HPOError: The search has no artifact store, or the file is missing.
        """
        if self.artifact_store is None:
            raise HPOError(
                "this search has no artifact store (hint: pass artifact_store='artifacts/' "
                "to LayerwiseSearch, or set `artifacts` in the study file)"
            )
        if not Path(path).is_file():
            raise HPOError(f"no artifact file {path} (hint: write the file before saving it)")
        if self._trial is None:
            raise HPOError("a detached trial context cannot save artifacts")
        return upload_artifact(
            artifact_store=self.artifact_store, file_path=str(path), study_or_trial=self._trial
        )

    def load_artifact(self, filename: str, dest: str | Path, *, stage: str | None = None) -> Path:
        """Download an artifact of a finished stage's best trial.

        Args:
            filename: The artifact's file name as it was saved.
            dest: Where to write it (replaced when it exists).
            stage: The stage; ``None`` takes the latest finished stage that has the file.

        Returns:
            ``dest`` as a path.

        Raises:
            HPOError: No finished stage has that artifact.
        """
        names = [stage] if stage else list(reversed(self.ledgers))
        for name in names:
            ledger = self.ledgers.get(name)
            if ledger is not None and filename in ledger.artifacts:
                if self.artifact_store is None:
                    break
                dest = Path(dest)
                # Optuna refuses to overwrite; download beside and replace atomically, so
                # every trial can load into the same path.
                partial = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.part")
                download_artifact(
                    artifact_store=self.artifact_store,
                    file_path=str(partial),
                    artifact_id=ledger.artifacts[filename],
                )
                os.replace(partial, dest)
                return dest
        raise HPOError(
            f"no finished stage has an artifact {filename!r} (hint: the stage that makes it "
            f"must call trial.save_artifact and be finished; available: "
            f"{ {n: sorted(x.artifacts) for n, x in self.ledgers.items()} })"
        )

    def _search_metric(self, metrics: Mapping[str, float | None]) -> float | None:
        if self.metric is not None:
            return metrics.get(self.metric)
        return next(iter(metrics.values())) if len(metrics) == 1 else None


def _plain(value: Any) -> Any:
    # numpy / torch scalars are not JSON-able user attributes.
    if value is None or isinstance(value, bool | int | str):
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


__all__ = ["EPOCHS_ATTR", "HISTORY_ATTR", "TrialContext"]
