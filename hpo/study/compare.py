"""``hpo compare``: the fusion network against baselines and ablations, tuned alike.

For one study file and data set, every variant (:mod:`hpo.study.variants`) is tuned by the
layer-wise engine with the same number of objective evaluations, and its best
configuration is trained again with several seeds and scored on the test split, which
tuning never saw. Each (split, variant) is its own stored search named
``<study>-cmp-<split>-<variant>``, and every finished training run is written to
``compare.json`` at once, so a rerun continues where the last one stopped. With two
seeds or more, the seeds' models of each (split, fold, variant) are also scored as one
ensemble: their validation and test predictions (log-odds), kept per run under ``probs/``,
are averaged pixel by pixel as probabilities, the threshold is chosen on the averaged
validation predictions, and the ensembles get a table of their own.

    from hpo.study.compare import compare_settings, run_compare

    spec = load_study("studies/compare-synthetic.toml")
    settings = compare_settings(spec, quick=True)
    result = run_compare(spec, settings, "runs/compare")
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import shutil
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from data.shift import outside_training, shifted_channels
from hpo.engine.atomic import write_json, write_text
from hpo.engine.budget import plan_stages
from hpo.engine.errors import SpecError
from hpo.study.schema import ModelSpec, RefineSpec, StageSpec, StudySpec
from hpo.study.variants import PAPER_VARIANTS, VARIANTS, Variant

RESULTS_FILE = "compare.json"
PROBS_DIR = "probs"
TABLE_FILE = "compare.md"
FORMAT = "landslide-hpo/compare/1"
METRICS = ("miou", "f1", "auc")

DEFAULTS = {"trials": 20, "seeds": 3}
QUICK = {"trials": 10, "seeds": 1}
FULL = {"trials": 60, "seeds": 3}


@dataclass(frozen=True)
class CompareSettings:
    """What a comparison runs.

    Attributes:
        variants: Variant names, in table order.
        trials: Objective evaluations per variant and split (the untuned variant: none).
        seeds: Training seeds of every best configuration.
        splits: ``[data]`` overrides, one comparison each (e.g. random and blocked).
        folds: Outer k-fold cross-validation within each split (0: none): each fold is the
            test split once; the folds' test metrics are pooled.
        ensemble: Score the seeds of each (split, fold, variant) as a seed ensemble too,
            keeping every run's validation and test log-odds under ``probs/``
            (off: nothing kept, e.g. for a large test split).
    """

    variants: tuple[str, ...]
    trials: int
    seeds: int
    splits: tuple[Mapping[str, Any], ...] = ({},)
    folds: int = 0
    ensemble: bool = True

    def to_dict(self) -> dict[str, Any]:
        """The settings as JSON-able data."""
        return {
            "variants": list(self.variants),
            "trials": self.trials,
            "seeds": self.seeds,
            "splits": [dict(s) for s in self.splits],
            "folds": self.folds,
            "ensemble": self.ensemble,
        }


def split_label(override: Mapping[str, Any]) -> str:
    """A short name of a split override (``{}``: ``"study"``, the study's own split)."""
    if not override:
        return "study"
    text = "-".join(str(v) for v in override.values())
    return re.sub(r"[^A-Za-z0-9_\-]+", "_", text)[:40] or "split"


def compare_settings(
    spec: StudySpec,
    *,
    variants: Sequence[str] | None = None,
    trials: int | None = None,
    seeds: int | None = None,
    quick: bool = False,
    full: bool = False,
) -> CompareSettings:
    """The comparison of a study: ``[compare]``, then ``--quick``/``--full``, then arguments.

    Args:
        spec: The study.
        variants: Variant names (default: ``[compare] variants`` or the paper's set).
        trials: Evaluations per variant (at least 2 per stage).
        seeds: Training seeds per best configuration.
        quick: Small budgets (10 evaluations, 1 seed) for a first look.
        full: The full budgets (60 evaluations, 3 seeds), for a GPU machine.

    Returns:
        The validated settings.

    Raises:
        SpecError: A bad ``[compare]`` value or argument, naming the file and key.
    """
    file = str(spec.file) if spec.file else None
    table = dict(spec.compare)

    def fail(key: str, message: str, hint: str) -> SpecError:
        return SpecError(message, file=file, key=f"compare.{key}", hint=hint)

    if quick and full:
        raise SpecError("--quick and --full exclude each other", hint="pick one")
    preset = QUICK if quick else FULL if full else {}
    names = list(variants or table.get("variants") or PAPER_VARIANTS)
    for name in names:
        if name not in VARIANTS:
            raise fail("variants", f"unknown variant {name!r}",
                       f"choose from {', '.join(VARIANTS)}")
    counts = {}
    for key, given in (("trials", trials), ("seeds", seeds)):
        value = given if given is not None else preset.get(key, table.get(key, DEFAULTS[key]))
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise fail(key, f"{key} = {value!r}", "use a positive integer")
        counts[key] = value
    splits = table.get("splits", [{}])
    if not isinstance(splits, list) or not splits:
        raise fail("splits", f"expected a list, got {splits!r}",
                   'e.g. splits = ["random", "blocked"]')
    overrides = []
    for i, item in enumerate(splits):
        if isinstance(item, str):
            overrides.append({"split": item})
        elif isinstance(item, Mapping):
            overrides.append(dict(item))
        else:
            raise fail(f"splits[{i}]", f"expected a split name or a table, got {item!r}",
                       'a name ("random", "blocked", "paper") or {split = ..., seed = ...}')
    folds = table.get("folds", 0)
    if isinstance(folds, bool) or not isinstance(folds, int) or folds == 1 or folds < 0:
        raise fail("folds", f"folds = {folds!r}", "use 0 (no cross-validation) or 2 or more")
    ensemble = table.get("ensemble", True)
    if not isinstance(ensemble, bool):
        raise fail("ensemble", f"ensemble = {ensemble!r}", "use true or false")
    return CompareSettings(tuple(dict.fromkeys(names)), counts["trials"], counts["seeds"],
                           tuple(overrides), folds, ensemble)


# ------------------------------------------------------------------ derived studies


def variant_stages(spec: StudySpec, variant: Variant, trials: int) -> tuple[StageSpec, ...]:
    """The variant's stages with the study's ranges, budgets re-split for ``trials``.

    Raises:
        SpecError: No stage is left to tune, or ``trials`` is too small for the stages.
    """
    if variant.stages is not None:
        stages = list(variant.stages)
    else:
        stages = []
        for stage in spec.stages:
            params = {n: p for n, p in stage.params.items() if variant.applies(n)}
            if params:
                stages.append(dataclasses.replace(stage, params=params))
    if not stages:
        raise SpecError(
            f"variant {variant.name!r} tunes none of the study's parameters",
            file=str(spec.file) if spec.file else None,
            key="stages",
            hint="add stages over optim.* or head.* parameters, which every network has",
        )
    try:
        budgets, _ = plan_stages(trials, [len(s.params) for s in stages])
    except ValueError as exc:
        raise SpecError(str(exc), key="compare.trials",
                        hint=f"use at least {2 * len(stages)} trials") from exc
    return tuple(
        dataclasses.replace(s, n_random=b.n_random, n_bayes=b.n_bayes)
        for s, b in zip(stages, budgets, strict=True)
    )


def variant_spec(
    spec: StudySpec,
    variant: Variant,
    trials: int,
    data: Mapping[str, Any],
    label: str,
) -> StudySpec:
    """The study of one variant on one split: its model, fixed keys, data and stages."""
    fixed = {**spec.model.fixed, **variant.fixed}
    # Fusion-only settings (e.g. temporal.downsample) mean nothing to the other models.
    if variant.model != "fusion":
        fixed = {k: v for k, v in fixed.items() if k.startswith(("optim.", "head.", "boost."))}
    return dataclasses.replace(
        spec,
        name=f"{spec.name}-cmp-{label}-{variant.name}",
        data={**spec.data, **data, **variant.data},
        model=ModelSpec(variant.model, fixed),
        stages=variant_stages(spec, variant, trials) if variant.tuned else spec.stages,
        refine=RefineSpec(enabled=False),
        cycles=1,
    )


def defaults_of(spec: StudySpec) -> dict[str, Any]:
    """Every stage's defaults: the configuration the untuned variant trains."""
    return {n: p.default for s in spec.stages for n, p in s.params.items()}


def not_applicable(variant: Variant, cube: Any) -> str | None:
    """Why a variant cannot run on these data, or ``None`` when it can."""
    kinds = set(cube.source_kinds)
    if variant.needs == "optical+factor" and not {"optical", "factor"} <= kinds:
        return f"the data have only {', '.join(sorted(kinds))} sources"
    if variant.needs == "dates" and cube.shape[1] < 2:
        return "the data have one date"
    return None


# ---------------------------------------------------------------------- running


@dataclass
class CompareResult:
    """What a comparison produced.

    Attributes:
        rows: One per training run: split, fold, variant, seed and test metrics.
        searches: One per tuned (split, fold, variant): best validation value, seconds.
        skipped: ``{variant: reason}`` for variants that do not apply to the data.
        summary: Mean and standard deviation of the test metrics per split and variant.
        out_dir: Where ``compare.json`` and ``compare.md`` are.
        ensembles: One per (split, fold, variant) with two seeds or more: the test
            metrics of the seeds' averaged probabilities.
    """

    rows: list[dict[str, Any]]
    searches: list[dict[str, Any]]
    skipped: dict[str, str]
    summary: list[dict[str, Any]]
    out_dir: Path
    ensembles: list[dict[str, Any]] = dataclasses.field(default_factory=list)


def run_compare(
    spec: StudySpec,
    settings: CompareSettings,
    out_dir: str | Path,
    *,
    fresh: bool = False,
    device: str | None = None,
    say: Callable[[str], None] = print,
) -> CompareResult:
    """Tune every variant, train each best configuration with every seed, score on test.

    Args:
        spec: The study (its data, stages, seed and storage).
        settings: What to compare.
        out_dir: Where ``compare.json`` and ``compare.md`` are written (and read back
            when resuming).
        fresh: Delete the stored variant searches and results of these settings first.
        device: Where to train (default: CUDA when available).
        say: Where progress goes.

    Returns:
        The comparison.

    Raises:
        SpecError: Invalid settings.
        data.DataError: The data cannot be prepared.
    """
    from hpo import study as st

    out_dir = Path(out_dir)
    key = _settings_key(spec, settings)
    state = _load_state(out_dir / RESULTS_FILE, key, fresh)
    state.setdefault("ensembles", [])
    if fresh:
        shutil.rmtree(out_dir / PROBS_DIR, ignore_errors=True)
    state["study"] = spec.name
    done = {(r["split"], r["fold"], r["variant"], r["seed"]) for r in state["rows"]}
    st.ensure_scene(spec, say=say)
    progress = _plan(spec, settings, state, done, say)
    if spec.runner.kind == "local":
        st.set_threads(spec)
    for override in settings.splits:
        label = split_label(override)
        for fold in range(settings.folds) if settings.folds else (None,):
            data = dict(override)
            if fold is not None:
                # outer cross-validation: each unit is tested once over the folds
                data.update(folds=settings.folds, fold=fold, fold_role="test")
            for name in settings.variants:
                variant = VARIANTS[name]
                seeds = [s for s in range(settings.seeds)
                         if (label, fold, name, spec.seed + s) not in done]
                where = label + (f" fold {fold}" if fold is not None else "")
                members = ([spec.seed + s for s in range(settings.seeds)]
                           if settings.ensemble else [])
                if not seeds and (not variant.tuned or _found(state, label, fold, name)):
                    # a run killed after its last seed still gets its ensemble
                    _ensemble_step(state, out_dir, settings, (label, fold, name), members,
                                   where, say)
                    continue
                vspec = variant_spec(spec, variant, settings.trials, data,
                                     label + (f"-f{fold}" if fold is not None else ""))
                final = st.prepare_final_data(
                    st.data_section(vspec), vspec.base_dir, seed=spec.seed
                )
                # The cube's hash names the data (and the frozen generator's output).
                state.setdefault("data_hash", {})[where] = final.cube.hash
                reason = not_applicable(variant, final.cube)
                if reason is not None:
                    state["skipped"][name] = reason
                    say(f"{where} {name}: skipped ({reason})")
                    progress.drop(len(seeds) + (settings.trials if variant.tuned else 0))
                    continue
                # What `hpo train` records too: a test score where the inputs leave the
                # training range measures extrapolation.
                shifted = outside_training(final.cube, final.norm, final.source_names,
                                           final.splits.test)
                far = shifted_channels(shifted)
                if far:
                    say(f"{where} {name}: warning: test inputs far outside the training "
                        f"range: {far}")
                params = _tune(vspec, variant, final, state, label, fold, fresh, device, say,
                               where, progress)
                for i, s in enumerate(seeds):
                    progress.begin()
                    say(f"{where} {name} seed {spec.seed + s}: training (run {i + 1}/"
                        f"{len(seeds)} of this variant)")
                    probs = (_probs_path(out_dir, label, fold, name, spec.seed + s)
                             if settings.ensemble else None)
                    row = _train_and_test(vspec, params, final, spec.seed + s, device, probs)
                    row.update(split=label, fold=fold, variant=name,
                               test_outside_training=shifted)
                    state["rows"].append(row)
                    _save(out_dir, state, settings)
                    progress.unit()
                    test = row["test"]["at_threshold"] or row["test"]["at_0.5"]
                    say(f"{where} {name} seed {row['seed']}: test F1 {test['f1']:.3f} "
                        f"MIoU {test['miou']:.3f} AUC {_num(test['auc'])} "
                        f"({row['seconds']:.0f}s) | {progress.status()}")
                _ensemble_step(state, out_dir, settings, (label, fold, name), members, where,
                               say)
    _save(out_dir, state, settings)
    return CompareResult(state["rows"], state["searches"], state["skipped"],
                         summarize(state["rows"]), out_dir, state["ensembles"])


class _Progress:
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
        from hpo.engine.progress import format_duration

        pace = ((time.monotonic() - self.first) / self.done
                if self.done and self.first is not None else self.prior)
        eta = format_duration(pace * (self.total - self.done)) if pace is not None else "?"
        return (f"{self.done}/{self.total} trainings, elapsed "
                f"{format_duration(time.monotonic() - self.started)}, ETA {eta}")


def _plan(
    spec: StudySpec,
    settings: CompareSettings,
    state: Mapping[str, Any],
    done: set[tuple[Any, ...]],
    say: Callable[[str], None],
) -> _Progress:
    """Count the model trainings still to run and say so.

    With a time estimate when an earlier run of this comparison stored its pace.
    """
    from hpo import study as st
    from hpo.engine.progress import format_duration

    searches = evaluations = runs = 0
    for override in settings.splits:
        label = split_label(override)
        for fold in range(settings.folds) if settings.folds else (None,):
            for name in settings.variants:
                variant = VARIANTS[name]
                runs += sum((label, fold, name, spec.seed + s) not in done
                            for s in range(settings.seeds))
                if variant.tuned and not _found(state, label, fold, name):
                    searches += 1
                    vspec = variant_spec(spec, variant, settings.trials, {},
                                         label + (f"-f{fold}" if fold is not None else ""))
                    evaluations += settings.trials - _stored_evaluations(st, vspec)
    seconds = sum(s.get("seconds") or 0.0 for s in state["searches"]) + sum(
        r.get("seconds") or 0.0 for r in state["rows"])
    units = sum(s.get("evaluations") or 0 for s in state["searches"]) + len(state["rows"])
    pace = seconds / units if units and seconds else None
    total = evaluations + runs
    estimate = (f", about {format_duration(pace * total)} at the stored pace"
                if pace is not None and total else
                "; the ETA follows after the first one" if total else "")
    if total:
        say(f"plan: {total} model trainings: {evaluations} tuning evaluations in {searches} "
            f"search(es) and {runs} training run(s){estimate}")
    else:
        say("plan: nothing left to train, every run is stored")
    return _Progress(total, pace)


def _stored_evaluations(st: Any, vspec: StudySpec) -> int:
    """Evaluations a variant's search already holds (copied incumbents not counted)."""
    from optuna.trial import TrialState

    from hpo.engine.ledger import COPIED_ATTR

    if not st.storage_exists(vspec.storage):
        return 0
    try:
        stages = st.make_search(vspec).status().stages
    except Exception:  # noqa: BLE001 - an estimate only: a changed spec fails later, named
        return 0
    return sum(
        sum(t.state == TrialState.COMPLETE and COPIED_ATTR not in t.user_attrs
            for t in s.study.get_trials(deepcopy=False))
        for s in stages if s.study is not None
    )


def _found(state: Mapping[str, Any], label: str, fold: int | None, name: str) -> bool:
    return any(
        s["split"] == label and s["fold"] == fold and s["variant"] == name and s["finished"]
        for s in state["searches"]
    )


def _tune(
    vspec: StudySpec,
    variant: Variant,
    final: Any,
    state: dict[str, Any],
    label: str,
    fold: int | None,
    fresh: bool,
    device: str | None,
    say: Callable[[str], None],
    where: str,
    progress: _Progress | None = None,
) -> dict[str, Any]:
    """The variant's parameters: its search's best (run or resumed), or the defaults."""
    from optuna.trial import TrialState

    from hpo import study as st
    from hpo.engine.ledger import COPIED_ATTR

    if not variant.tuned:
        return defaults_of(vspec)
    progress = progress or _Progress(0, None)
    started = time.monotonic()
    # The final data already hold the tuning split (same cube, splits and training-only
    # normalization), so the cube is not prepared and measured a second time.
    tuning = st.TuningData(final.cube, final.splits.for_tuning(), final.norm,
                           final.train_set, final.val_set)
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

    search = st.make_search(vspec, st.make_objective(vspec, tuning, device=device),
                            callbacks=[on_trial])
    if fresh:
        search.reset()
    count[0] = stored = _stored_evaluations(st, vspec)
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


def _train_and_test(
    vspec: StudySpec,
    params: Mapping[str, Any],
    final: Any,
    seed: int,
    device: str | None,
    probs: Path | None,
) -> dict[str, Any]:
    """Train one configuration once on the training split and score it on test.

    The run's validation and test log-odds go to ``probs`` (``.npz``, unless
    ``None``), for the seed ensemble.
    """
    import networks
    from hpo.study.retrain import _validation_threshold, score_log_odds, split_log_odds
    from networks.config import ModelConfig

    started = time.monotonic()
    config = ModelConfig.from_params(
        dict(params), ModelConfig.from_params(dict(vspec.model.fixed))
    )
    history = networks.train(config, final.train_set, final.val_set, seed=seed,
                             model=vspec.model.name, device=device)
    threshold = _validation_threshold(history)
    batch = config.optim.batch_size
    test_odds, test_label = split_log_odds(history.model, final.test_set, batch)
    if probs is not None:
        val_odds, val_label = split_log_odds(history.model, final.val_set, batch)
        _write_probs(probs, val_log_odds=val_odds, val_label=val_label,
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


def _probs_path(out_dir: Path, label: str, fold: int | None, variant: str, seed: int) -> Path:
    where = label + (f"-f{fold}" if fold is not None else "")
    return out_dir / PROBS_DIR / f"{where}-{variant}-s{seed}.npz"


def _write_probs(path: Path, **arrays: np.ndarray) -> None:
    """Write the arrays atomically: a run killed mid-write leaves no half file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.npz")
    np.savez(partial, **arrays)
    os.replace(partial, path)


def _ensemble_step(
    state: dict[str, Any],
    out_dir: Path,
    settings: CompareSettings,
    key: tuple[str, int | None, str],
    members: Sequence[int],
    where: str,
    say: Callable[[str], None],
) -> None:
    """Add, store and report the seed ensemble of one (split, fold, variant) when due."""
    if not _add_ensemble(state, out_dir, *key, members):
        return
    _save(out_dir, state, settings)
    test = state["ensembles"][-1]["test"]
    test = test["at_threshold"] or test["at_0.5"]
    say(f"{where} {key[2]} ensemble of {len(members)} seeds: test F1 {test['f1']:.3f} "
        f"MIoU {test['miou']:.3f} AUC {_num(test['auc'])}")


def _add_ensemble(
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
    from hpo.study.retrain import mean_probability_log_odds, score_log_odds, threshold_of

    key = (label, fold, variant)
    if len(members) < 2 or any(
        (e["split"], e["fold"], e["variant"]) == key for e in state["ensembles"]
    ):
        return False
    paths = [_probs_path(out_dir, label, fold, variant, seed) for seed in members]
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


# ---------------------------------------------------------------------- results


def summarize(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Mean and sample standard deviation of every test metric per split and variant.

    Runs of every fold and seed are pooled. Metrics at 0.5 and at the validation-chosen
    threshold are both given (``f1@0.5``, ``f1``, ...); AUC does not depend on it.
    """
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["split"], row["variant"]), []).append(row)
    order = list(VARIANTS)
    out = []
    for (split, variant), group in sorted(
        groups.items(), key=lambda kv: (kv[0][0], order.index(kv[0][1]))
    ):
        entry: dict[str, Any] = {"split": split, "variant": variant, "runs": len(group)}
        for metric in METRICS:
            at = [(r["test"]["at_threshold"] or r["test"]["at_0.5"])[metric] for r in group]
            half = [r["test"]["at_0.5"][metric] for r in group]
            entry[metric] = _mean_std(at)
            if metric != "auc":
                entry[f"{metric}@0.5"] = _mean_std(half)
        out.append(entry)
    return out


def _mean_std(values: Sequence[float | None]) -> dict[str, float | None]:
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not finite:
        return {"mean": None, "std": None}
    std = statistics.stdev(finite) if len(finite) > 1 else 0.0
    return {"mean": statistics.fmean(finite), "std": std}


def _num(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, int | float) else "-"


def _cell(stat: Mapping[str, Any]) -> str:
    if stat["mean"] is None:
        return "-"
    return f"{stat['mean']:.3f} ± {stat['std']:.3f}"


def markdown(state: Mapping[str, Any]) -> str:
    """The comparison as markdown tables, one per split."""
    summary = summarize(state["rows"])
    settings = state["settings"]
    lines = [
        f"# hpo compare: {state['study']}",
        "",
        f"{settings['trials']} objective evaluations per tuned variant (layer-wise: random "
        f"then Bayesian per stage), {settings['seeds']} training seed(s) per best "
        f"configuration, metrics on the test split (never seen by tuning): mean ± std "
        f"over seeds" + (f" and {settings['folds']} folds" if settings["folds"] else "")
        + ". F1 and MIoU at the threshold chosen on validation; @0.5 at 0.5.",
        "",
    ]
    searches = {(s["split"], s["variant"]): s for s in state["searches"]}
    for split in dict.fromkeys(e["split"] for e in summary):
        lines += [
            f"## split: {split}",
            "",
            "| variant | MIoU | F1 | AUC | F1@0.5 | MIoU@0.5 | best val | tuning s | runs |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for e in (e for e in summary if e["split"] == split):
            s = searches.get((split, e["variant"]))
            seconds = f"{s['seconds']:.0f}" if s else "-"
            lines.append(
                f"| {e['variant']} | {_cell(e['miou'])} | {_cell(e['f1'])} | "
                f"{_cell(e['auc'])} | {_cell(e['f1@0.5'])} | {_cell(e['miou@0.5'])} | "
                f"{_num(s['best_value']) if s else '-'} | "
                f"{seconds} | {e['runs']} |"
            )
        lines.append("")
        shifted: dict[str, float] = {}
        for row in (r for r in state["rows"] if r["split"] == split):
            for channel, share in (row.get("test_outside_training") or {}).items():
                shifted[channel] = max(share, shifted.get(channel, 0.0))
        if shifted_channels(shifted):
            lines += [
                f"Test inputs far outside the training range (share of valid values beyond "
                f"the training 2-98 % range by more than its width): "
                f"{shifted_channels(shifted)}; scores there measure extrapolation.",
                "",
            ]
        ensembles = [e for e in summarize(state.get("ensembles", [])) if e["split"] == split]
        if ensembles:
            lines += [
                f"Seed ensembles: the {settings['seeds']} seeds' probabilities averaged, "
                f"the threshold chosen on their averaged validation probabilities; mean ± "
                f"std over folds.",
                "",
                "| variant | MIoU | F1 | AUC | F1@0.5 | MIoU@0.5 | ensembles |",
                "|---|---|---|---|---|---|---|",
            ]
            lines += [
                f"| {e['variant']} | {_cell(e['miou'])} | {_cell(e['f1'])} | "
                f"{_cell(e['auc'])} | {_cell(e['f1@0.5'])} | {_cell(e['miou@0.5'])} | "
                f"{e['runs']} |"
                for e in ensembles
            ]
            lines.append("")
    for name, reason in state["skipped"].items():
        lines.append(f"- {name}: not run ({reason})")
    for name in dict.fromkeys(e["variant"] for e in summary):
        lines.append(f"- **{name}**: {VARIANTS[name].description}")
    return "\n".join(lines) + "\n"


def _settings_key(spec: StudySpec, settings: CompareSettings) -> str:
    doc = {"study": spec.fingerprint(), "seed": spec.seed, **settings.to_dict()}
    doc.pop("variants")  # adding a variant keeps what the others finished
    doc.pop("ensemble")  # nor does scoring ensembles change a single run
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def _load_state(path: Path, key: str, fresh: bool) -> dict[str, Any]:
    empty = {"format": FORMAT, "key": key, "rows": [], "searches": [], "skipped": {},
             "ensembles": []}
    if fresh or not path.is_file():
        return empty
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise SpecError(f"cannot read {path}: {exc}",
                        hint="delete it or pass --fresh to start the comparison over") from exc
    if state.get("format") != FORMAT or state.get("key") != key:
        raise SpecError(
            f"{path} holds a comparison with other settings (study, seed, trials, seeds, "
            f"splits or folds changed)",
            hint="pass --fresh to start over, or -o ANOTHER_DIR to keep both",
        )
    return state


def _save(out_dir: Path, state: dict[str, Any], settings: CompareSettings) -> None:
    import networks

    state["settings"] = settings.to_dict()
    state["summary"] = summarize(state["rows"])
    state["ensemble_summary"] = summarize(state.get("ensembles", []))
    state["versions"] = networks.package_versions()
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / RESULTS_FILE, state)
    write_text(out_dir / TABLE_FILE, markdown(state))


__all__ = [
    "CompareResult",
    "CompareSettings",
    "compare_settings",
    "defaults_of",
    "markdown",
    "not_applicable",
    "run_compare",
    "split_label",
    "summarize",
    "variant_spec",
    "variant_stages",
]
