"""The storage structure: each finished stage's tuned parameters, value and artifacts.

A ledger entry lives in its stage study's user attributes (``hpo:ledger``), so every
driver, every resume and ``hpo status`` read the same thing from the storage.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpo.engine.replicates import replicates_of, standard_error

LEDGER_ATTR = "hpo:ledger"
COPIED_ATTR = "hpo:copied_from"
_ARTIFACT_PREFIX = "artifacts:"  # Optuna's system-attribute prefix for uploaded artifacts


@dataclass(frozen=True)
class Ledger:
    """One finished stage: its best parameters and where they came from.

    Args:
        stage: The stage name.
        study_name: The stage study.
        params: The stage's tuned parameters (only this stage's).
        value: The objective value of the best trial.
        trial_number: The best trial's number in the stage study.
        artifacts: Artifact file name -> artifact id in the artifact store.
        replicates: The best trial's replicate values (``value`` is their mean); one
            value for a search without replicates.
        noise: The stage's noise (``sd`` of one replicate, ``dof``, ``trials``), when
            some trial had two replicates or more.
        gain: ``mean`` / ``se`` / ``n`` of the best minus the stage's incumbent, paired
            by replicate, when both have two replicates or more.
        seeds: With replicates: the stage whose replicate seeds measured ``replicates``,
            when the entry is its stage's incumbent, handed on. Those replicates were
            measured, not selected by a race, so the next stage takes them over and pairs
            its trials with them (same seeds) instead of training the configuration
            again; ``None`` (an entry that won its stage, or one stored before this
            existed): the next stage measures it afresh with seeds of its own.
    """

    stage: str
    study_name: str
    params: dict[str, Any]
    value: float
    trial_number: int
    artifacts: dict[str, str] = field(default_factory=dict)
    replicates: list[float] = field(default_factory=list)
    noise: dict[str, Any] | None = None
    gain: dict[str, Any] | None = None
    seeds: str | None = None

    @property
    def se(self) -> float | None:
        """Standard error of :attr:`value` over its replicates (``None`` below two)."""
        return standard_error(self.replicates)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-able form stored in the study's user attributes."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Ledger:
        """Rebuild an entry from :meth:`to_dict`."""
        return cls(
            stage=data["stage"],
            study_name=data["study_name"],
            params=dict(data["params"]),
            value=float(data["value"]),
            trial_number=int(data["trial_number"]),
            artifacts=dict(data.get("artifacts", {})),
            # Entries written before replicates existed have none of these.
            replicates=[float(v) for v in data.get("replicates", [])],
            noise=data.get("noise"),
            gain=data.get("gain"),
            seeds=data.get("seeds"),
        )


def best_trial(
    trials: Iterable[FrozenTrial], direction: optuna.study.StudyDirection
) -> FrozenTrial | None:
    """The best COMPLETE trial with a finite value; ties go to the lowest trial number.

    Args:
        trials: A stage's trials, in any order.
        direction: The study's direction.

    Returns:
        The best trial, or ``None`` when none is COMPLETE.
    """
    sign = -1.0 if direction == optuna.study.StudyDirection.MAXIMIZE else 1.0
    candidates = [
        t
        for t in trials
        if t.state == TrialState.COMPLETE and t.value is not None and math.isfinite(t.value)
    ]
    if not candidates:
        return None
    return min(candidates, key=lambda t: (sign * t.value, t.number))


def trial_artifacts(trial: FrozenTrial) -> dict[str, str]:
    """Artifacts of a trial as file name -> artifact id (a copied trial's are inherited)."""
    copied = trial.user_attrs.get(COPIED_ATTR)
    if copied:
        return dict(copied.get("artifacts", {}))
    found = {}
    for key, meta in sorted(trial.system_attrs.items()):
        if key.startswith(_ARTIFACT_PREFIX):
            info = json.loads(meta) if isinstance(meta, str) else meta
            found[info["filename"]] = info["artifact_id"]
    return found


def ledger_from_trial(
    stage: str,
    study_name: str,
    trial: FrozenTrial,
    *,
    noise: Mapping[str, Any] | None = None,
    gain: Mapping[str, Any] | None = None,
    seeds: str | None = None,
) -> Ledger:
    """The ledger entry of a stage whose best trial is ``trial``.

    Args:
        stage: The stage name.
        study_name: The stage study.
        trial: The chosen trial.
        noise: The stage's measured noise, if any.
        gain: The chosen trial's paired gain over the stage's incumbent, if measured.
        seeds: See :class:`Ledger`.
    """
    return Ledger(
        stage=stage,
        study_name=study_name,
        params=dict(trial.params),
        value=float(trial.value),
        trial_number=trial.number,
        artifacts=trial_artifacts(trial),
        replicates=replicates_of(trial),
        noise=dict(noise) if noise else None,
        gain=dict(gain) if gain else None,
        seeds=seeds,
    )


def read_ledger(study: optuna.Study) -> Ledger | None:
    """The stage's ledger entry as stored, or ``None`` while the stage is open."""
    data = study.user_attrs.get(LEDGER_ATTR)
    return Ledger.from_dict(data) if data else None


def write_ledger(study: optuna.Study, ledger: Ledger) -> None:
    """Store the ledger entry. Idempotent: every driver computes the same entry."""
    study.set_user_attr(LEDGER_ATTR, ledger.to_dict())


__all__ = [
    "COPIED_ATTR",
    "LEDGER_ATTR",
    "Ledger",
    "best_trial",
    "ledger_from_trial",
    "read_ledger",
    "trial_artifacts",
    "write_ledger",
]
