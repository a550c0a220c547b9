"""The steps of ``hpo compare`` for one variant on one split: tune, train, ensemble.

:mod:`hpo.study.compare` runs them for every split, fold and variant; each step reads and
extends the comparison's state (``compare.json``, :mod:`hpo.study.compare_tables`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from optuna.trial import TrialState

import networks
from hpo.engine.errors import SpecError
from hpo.engine.ledger import COPIED_ATTR
from hpo.engine.progress import format_duration
from hpo.study.prepare import FinalData, TuningData, fold_sets
from hpo.study.schema import StudySpec
from hpo.study.tune import make_objective, make_search, storage_exists
from hpo.study.variants import Variant
from networks.config import ModelConfig
from networks.inference import split_log_odds
from networks.metrics import (
    mean_probability_log_odds,
    score_log_odds,
    threshold_of,
    validation_threshold,
)

PROBS_DIR = "probs"
"""Folder of the comparison's output that keeps every run's log-odds for the ensembles."""


class Progress:
    """Model trainings done and to do, and the ETA from the seconds they took.

    A tuning evaluation and a seed's training run count one each.
    """

    def __init__(self, total: int, seconds_per_unit: float | None) -> None:
        self.total = total
        self.done = 0
        self.prior = seconds_per_unit  # the pace stored by an earlier run, if any
        self.started = time.monotonic()
        self.first: float | None = None  # when the first training began

    def begin(self) -> None:
        """Trainings start: the pace is wall time from the first one.

        Trials may run side by side, so their own durations would overstate it.
        """
        if self.first is None:
            self.first = time.monotonic()

    def unit(self, *, counts: bool = True) -> None:
        """One training finished (``counts=False``: one ended that finished none)."""
        self.begin()
        self.done += counts

    def drop(self, units: int) -> None:
        """Units that will not run after all (stored already, or not applicable)."""
        self.total = max(self.done, self.total - units)

    def status(self) -> str:
        """Trainings done and to do, time elapsed and the ETA, in one line."""
        pace = ((time.monotonic() - self.first) / self.done
                if self.done and self.first is not None else self.prior)
        eta = format_duration(pace * (self.total - self.done)) if pace is not None else "?"
        return (f"{self.done}/{self.total} trainings, elapsed "
                f"{format_duration(time.monotonic() - self.started)}, ETA {eta}")


def stored_evaluations(vspec: StudySpec) -> int:
    """Evaluations a variant's search already holds (copied incumbents not counted)."""
    if not storage_exists(vspec.storage):
        return 0
    try:
        stages = make_search(vspec).status().stages
    except Exception:  # noqa: BLE001 - an estimate only: a changed spec fails later, named
        return 0
    return sum(
        sum(t.state == TrialState.COMPLETE and COPIED_ATTR not in t.user_attrs
            for t in s.study.get_trials(deepcopy=False))
        for s in stages if s.study is not None
    )


def tune_variant(
    vspec: StudySpec,
    variant: Variant,
    final: FinalData,
    state: dict[str, Any],
    label: str,
    fold: int | None,
    fresh: bool,
    device: str | None,
    say: Callable[[str], None],
    where: str,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Tune a variant on one split (or continue its stored search) and record it.

    Returns:
        The best parameters found.
    """
    progress = progress or Progress(0, None)
    started = time.monotonic()
    # The final data already hold the tuning split (same cube, splits and training-only
    # normalization), so the cube is not prepared and measured a second time.
    tuning = TuningData(final.cube, final.splits.for_tuning(), final.norm,
                        final.train_set, final.val_set, folds=fold_sets(final.cube, vspec))
    evaluations = sum(s.n_random + s.n_bayes for s in vspec.stages) - (len(vspec.stages) - 1)
    count = [0]  # evaluations complete, stored ones included

    def on_trial(study: Any, trial: Any) -> None:
        if COPIED_ATTR in trial.user_attrs:
            return  # the incumbent handed on: nothing trained
        took = ((trial.datetime_complete - trial.datetime_start).total_seconds()
                if trial.datetime_complete and trial.datetime_start else 0.0)
        complete = trial.state == TrialState.COMPLETE
        progress.unit(counts=complete)
        if complete:
            count[0] += 1
            what = f"trial {count[0]}/{evaluations}: {vspec.metric} {trial.value:.4f}"
        else:
            what = f"a trial ended {trial.state.name} (run again)"
        say(f"{where} {variant.name}: {what} ({took:.0f}s) | {progress.status()}")

    search = make_search(vspec, make_objective(vspec, tuning, device=device),
                            callbacks=[on_trial])
    if fresh:
        search.reset()
    count[0] = stored = stored_evaluations(vspec)
    say(f"{where} {variant.name}: tuning {vspec.name} ({evaluations} evaluations"
        + (f", {stored} stored" if stored else "") + ")")
    progress.begin()
    result = search.run()
    seconds = time.monotonic() - started
    record = next((s for s in state["searches"] if s["study"] == vspec.name), None)
    if record is None:
        record = {"study": vspec.name, "split": label, "fold": fold, "variant": variant.name,
                  "seconds": 0.0}
        state["searches"].append(record)
    record.update(
        finished=True,
        best_value=result.best_value,
        best_params=result.best_params,
        trials=sum(s.n_complete for s in result.stages),
        evaluations=sum(s.n_complete for s in result.stages) - (len(result.stages) - 1),
        seconds=record["seconds"] + seconds,
    )
    say(f"{where} {variant.name}: best validation {vspec.metric} {result.best_value:.4f} "
        f"({seconds:.0f}s)")
    return dict(result.best_params)


def train_and_test(
    vspec: StudySpec,
    params: Mapping[str, Any],
    final: FinalData,
    seed: int,
    device: str | None,
    probs: Path | None,
) -> dict[str, Any]:
    """Train one configuration once on the training split and score it on test.

    The run's validation and test log-odds go to ``probs`` (``.npz``, unless
    ``None``), for the seed ensemble.
    """
    started = time.monotonic()
    config = ModelConfig.from_params(
        dict(params), ModelConfig.from_params(dict(vspec.model.fixed))
    )
    history = networks.train(config, final.train_set, final.val_set, seed=seed,
                             model=vspec.model.name, device=device)
    threshold = validation_threshold(history)
    batch = config.optim.batch_size
    test_odds, test_label = split_log_odds(history.model, final.test_set, batch)
    if probs is not None:
        val_odds, val_label = split_log_odds(history.model, final.val_set, batch)
        write_probs(probs, val_log_odds=val_odds, val_label=val_label,
                     test_log_odds=test_odds, test_label=test_label)
    test = score_log_odds(test_odds, test_label, threshold)
    test.pop("roc", None)
    return {
        "seed": seed,
        "model": vspec.model.name,
        "params": dict(params),
        "threshold": threshold,
        "validation": history.epochs[-1] if history.epochs else None,
        "test": test,
        "seconds": round(time.monotonic() - started, 2),
    }


def probs_path(out_dir: Path, label: str, fold: int | None, variant: str, seed: int) -> Path:
    """Where one run's validation and test log-odds are kept, for the seed ensemble."""
    where = label + (f"-f{fold}" if fold is not None else "")
    return out_dir / PROBS_DIR / f"{where}-{variant}-s{seed}.npz"


def write_probs(path: Path, **arrays: np.ndarray) -> None:
    """Write the arrays atomically: a run killed mid-write leaves no half file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.npz")
    np.savez(partial, **arrays)
    os.replace(partial, path)


def add_ensemble(
    state: dict[str, Any],
    out_dir: Path,
    label: str,
    fold: int | None,
    variant: str,
    members: Sequence[int],
) -> bool:
    """Score the seeds' averaged probabilities once all are there; True when added.

    The threshold is chosen on the averaged validation probabilities, as a single run
    chooses its own. Nothing is added for fewer than two seeds, when the ensemble is
    already stored, or while a member's probabilities are missing (e.g. a run of an
    older comparison that kept none).
    """
    key = (label, fold, variant)
    if len(members) < 2 or any(
        (e["split"], e["fold"], e["variant"]) == key for e in state["ensembles"]
    ):
        return False
    paths = [probs_path(out_dir, label, fold, variant, seed) for seed in members]
    if not all(path.is_file() for path in paths):
        return False
    runs = [dict(np.load(path)) for path in paths]
    val_label, test_label = runs[0]["val_label"], runs[0]["test_label"]
    if any(not np.array_equal(r["val_label"], val_label)
           or not np.array_equal(r["test_label"], test_label) for r in runs):
        raise SpecError(
            f"the runs in {paths[0].parent} of {label} {variant} scored different pixels",
            hint="the data or split changed between runs: start over with --fresh",
        )
    val_odds = mean_probability_log_odds([r["val_log_odds"] for r in runs])
    test_odds = mean_probability_log_odds([r["test_log_odds"] for r in runs])
    threshold = threshold_of(val_odds, val_label)
    test = score_log_odds(test_odds, test_label, threshold)
    test.pop("roc", None)
    state["ensembles"].append({"split": label, "fold": fold, "variant": variant,
                               "members": list(members), "threshold": threshold,
                               "test": test})
    return True


__all__ = [
    "PROBS_DIR",
    "Progress",
    "add_ensemble",
    "probs_path",
    "stored_evaluations",
    "train_and_test",
    "tune_variant",
    "write_probs",
]
