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
validation predictions, and the ensembles get a table of their own. Every variant is then
set against the fusion network, paired by test tile and seed
(:mod:`hpo.study.compare_paired`). One variant's steps
are :mod:`hpo.study.compare_steps`; the stored results and their tables are
:mod:`hpo.study.compare_tables`.

    from hpo.study.compare import compare_settings, run_compare

    spec = load_study("studies/compare-synthetic.toml")
    settings = compare_settings(spec, quick=True)
    result = run_compare(spec, settings, "runs/compare")
"""

from __future__ import annotations

import dataclasses
import re
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data.shift import outside_training, shifted_channels
from hpo.engine.budget import plan_stages
from hpo.engine.errors import SpecError
from hpo.engine.progress import format_duration
from hpo.study.compare_steps import (
    PROBS_DIR,
    Progress,
    add_ensemble,
    probs_path,
    stored_evaluations,
    train_and_test,
    tune_variant,
)
from hpo.study.compare_tables import (
    RESULTS_FILE,
    load_state,
    metric_text,
    save_state,
    settings_key,
    summarize,
)
from hpo.study.prepare import FinalData, prepare_final_data
from hpo.study.scene import data_section, ensure_scene
from hpo.study.schema import IntParam, ModelSpec, RefineSpec, StageSpec, StudySpec
from hpo.study.tune import set_threads
from hpo.study.variants import PAPER_VARIANTS, VARIANTS, Variant
from networks import BASELINE_GROUPS, NETWORK_NAMES

EPOCHS_KEY = "optim.epochs"
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
        epochs: ``(low, high)``: every tuned network variant tunes ``optim.epochs`` in this
            range (log scale), so that each trains as long as suits it; ``None``: the
            study's epochs for all.
    """

    variants: tuple[str, ...]
    trials: int
    seeds: int
    splits: tuple[Mapping[str, Any], ...] = ({},)
    folds: int = 0
    ensemble: bool = True
    epochs: tuple[int, int] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The settings as JSON-able data."""
        return {
            "variants": list(self.variants),
            "trials": self.trials,
            "seeds": self.seeds,
            "splits": [dict(s) for s in self.splits],
            "folds": self.folds,
            "ensemble": self.ensemble,
            # only when set: comparisons stored before the key existed keep their key
            **({"epochs": list(self.epochs)} if self.epochs else {}),
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
    epochs = table.get("epochs")
    if epochs is not None and not (
        isinstance(epochs, list) and len(epochs) == 2
        and all(isinstance(e, int) and not isinstance(e, bool) for e in epochs)
        and 1 <= epochs[0] < epochs[1]
    ):
        raise fail("epochs", f"epochs = {epochs!r}",
                   "use [low, high], two whole numbers with 1 <= low < high, e.g. [24, 120]")
    return CompareSettings(tuple(dict.fromkeys(names)), counts["trials"], counts["seeds"],
                           tuple(overrides), folds, ensemble,
                           tuple(epochs) if epochs is not None else None)


# ------------------------------------------------------------------ derived studies


def variant_stages(
    spec: StudySpec, variant: Variant, trials: int, epochs: tuple[int, int] | None = None
) -> tuple[StageSpec, ...]:
    """The variant's stages with the study's ranges, budgets re-split for ``trials``.

    With ``epochs``, a network variant (not the boosting floor) also tunes
    ``optim.epochs`` in that range (in its stage of ``optim.*`` parameters, else in a
    first stage of its own).

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
    if epochs is not None and variant.model in NETWORK_NAMES:
        stages = _with_epochs(stages, epochs, spec.model.fixed.get(EPOCHS_KEY))
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


def _with_epochs(
    stages: list[StageSpec], epochs: tuple[int, int], fixed: Any
) -> list[StageSpec]:
    """``stages`` with ``optim.epochs`` tuned in ``epochs`` (log scale).

    Its default is the study's fixed epochs where they lie in the range (the untuned
    trial is the study's), else the range's low end.
    """
    if any(EPOCHS_KEY in s.params for s in stages):
        return stages  # the study tunes it already
    low, high = epochs
    default = fixed if isinstance(fixed, int) and low <= fixed <= high else low
    param = IntParam(default, low, high, log=True)
    for i, stage in enumerate(stages):
        if any(n.startswith("optim.") for n in stage.params):
            return [*stages[:i], dataclasses.replace(
                stage, params={**stage.params, EPOCHS_KEY: param}), *stages[i + 1:]]
    return [StageSpec("schedule", {EPOCHS_KEY: param}), *stages]


def variant_spec(
    spec: StudySpec,
    variant: Variant,
    trials: int,
    data: Mapping[str, Any],
    label: str,
    epochs: tuple[int, int] | None = None,
) -> StudySpec:
    """The study of one variant on one split: its model, fixed keys, data and stages."""
    fixed = {**spec.model.fixed, **variant.fixed}
    # Fusion-only settings (e.g. temporal.downsample) mean nothing to the other models;
    # a baseline keeps its own groups' (segnet.levels, backbone.stride for the study's
    # tile size).
    if variant.model != "fusion":
        own = ("optim.", "head.", "boost.",
               *(f"{g}." for g in BASELINE_GROUPS.get(variant.model, ())))
        fixed = {k: v for k, v in fixed.items() if k.startswith(own)}
    return dataclasses.replace(
        spec,
        name=f"{spec.name}-cmp-{label}-{variant.name}",
        data={**spec.data, **data, **variant.data},
        model=ModelSpec(variant.model, fixed),
        stages=(variant_stages(spec, variant, trials, epochs) if variant.tuned
                else spec.stages),
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
    out_dir = Path(out_dir)
    state = load_state(out_dir / RESULTS_FILE, settings_key(spec, settings), fresh)
    state.setdefault("ensembles", [])
    if fresh:
        shutil.rmtree(out_dir / PROBS_DIR, ignore_errors=True)
    state["study"] = spec.name
    done = _run_keys(state["rows"])
    ensure_scene(spec, say=say)
    progress = _plan(spec, settings, state, done, say)
    if spec.runner.kind == "local":
        set_threads(spec)
    run = _Run(spec, settings, state, out_dir, done, fresh, device, say, progress)
    for override in settings.splits:
        label = split_label(override)
        for fold in range(settings.folds) if settings.folds else (None,):
            data = dict(override)
            if fold is not None:
                # outer cross-validation: each unit is tested once over the folds
                data.update(folds=settings.folds, fold=fold, fold_role="test")
            for name in settings.variants:
                run.variant(VARIANTS[name], label, fold, data)
    ran = _run_keys(state["rows"]) != done
    # the pairing prepares every split's data again: only when a run was added
    if settings.ensemble and len(settings.variants) > 1 and (ran or "paired" not in state):
        from hpo.study.compare_paired import paired_against  # it builds on this module

        reference = "fusion" if "fusion" in settings.variants else settings.variants[0]
        state["paired"] = paired_against(spec, settings, state["rows"], reference,
                                         lambda *_: out_dir)
    save_state(out_dir, state, settings)
    return CompareResult(state["rows"], state["searches"], state["skipped"],
                         summarize(state["rows"]), out_dir, state["ensembles"])


def _run_keys(rows: list[dict[str, Any]]) -> set[tuple[Any, ...]]:
    """The (split, fold, variant, seed) of every recorded run."""
    return {(r["split"], r["fold"], r["variant"], r["seed"]) for r in rows}


@dataclass
class _Run:
    """One call of :func:`run_compare`: what every (split, fold, variant) step shares."""

    spec: StudySpec
    settings: CompareSettings
    state: dict[str, Any]
    out_dir: Path
    done: set[tuple[Any, ...]]
    fresh: bool
    device: str | None
    say: Callable[[str], None]
    progress: Progress

    def variant(self, variant: Variant, label: str, fold: int | None,
                data: Mapping[str, Any]) -> None:
        """Tune, train and score one variant on one split (what is not stored yet)."""
        spec, settings, state, name = self.spec, self.settings, self.state, variant.name
        seeds = [s for s in range(settings.seeds)
                 if (label, fold, name, spec.seed + s) not in self.done]
        where = label + (f" fold {fold}" if fold is not None else "")
        members = [spec.seed + s for s in range(settings.seeds)] if settings.ensemble else []
        if not seeds and (not variant.tuned or _found(state, label, fold, name)):
            # a run killed after its last seed still gets its ensemble
            self.ensemble((label, fold, name), members, where)
            return
        vspec = variant_spec(spec, variant, settings.trials, data,
                             label + (f"-f{fold}" if fold is not None else ""),
                             settings.epochs)
        final = prepare_final_data(data_section(vspec), vspec.base_dir, seed=spec.seed)
        # The cube's hash names the data (and the frozen generator's output).
        state.setdefault("data_hash", {})[where] = final.cube.hash
        reason = not_applicable(variant, final.cube)
        if reason is not None:
            state["skipped"][name] = reason
            self.say(f"{where} {name}: skipped ({reason})")
            self.progress.drop(len(seeds) + (settings.trials if variant.tuned else 0))
            return
        # What `hpo train` records too: a test score where the inputs leave the
        # training range measures extrapolation.
        shifted = outside_training(final.cube, final.norm, final.source_names,
                                   final.splits.test)
        far = shifted_channels(shifted)
        if far:
            self.say(f"{where} {name}: warning: test inputs far outside the training "
                     f"range: {far}")
        params = (tune_variant(vspec, variant, final, state, label, fold, self.fresh,
                               self.device, self.say, where, self.progress)
                  if variant.tuned else defaults_of(vspec))
        for i, s in enumerate(seeds):
            self.train((label, fold, name), vspec, params, final, spec.seed + s, shifted,
                       f"{where} {name} seed {spec.seed + s}: training (run {i + 1}/"
                       f"{len(seeds)} of this variant)")
        self.ensemble((label, fold, name), members, where)

    def train(self, key: tuple[str, int | None, str], vspec: StudySpec,
              params: Mapping[str, Any], final: FinalData, seed: int,
              shifted: dict[str, float], started: str) -> None:
        """Train one seed of a variant, score it on test, store and report the run."""
        label, fold, name = key
        self.progress.begin()
        self.say(started)
        probs = (probs_path(self.out_dir, label, fold, name, seed)
                 if self.settings.ensemble else None)
        row = train_and_test(vspec, params, final, seed, self.device, probs)
        row.update(split=label, fold=fold, variant=name, test_outside_training=shifted)
        self.state["rows"].append(row)
        save_state(self.out_dir, self.state, self.settings)
        self.progress.unit()
        test = row["test"]["at_threshold"] or row["test"]["at_0.5"]
        where = label + (f" fold {fold}" if fold is not None else "")
        self.say(f"{where} {name} seed {row['seed']}: test F1 {test['f1']:.3f} "
                 f"MIoU {test['miou']:.3f} AUC {metric_text(test['auc'])} "
                 f"({row['seconds']:.0f}s) | {self.progress.status()}")

    def ensemble(self, key: tuple[str, int | None, str], members: Sequence[int],
                 where: str) -> None:
        """Add, store and report the seed ensemble of one (split, fold, variant) when due."""
        if not add_ensemble(self.state, self.out_dir, *key, members):
            return
        save_state(self.out_dir, self.state, self.settings)
        test = self.state["ensembles"][-1]["test"]
        test = test["at_threshold"] or test["at_0.5"]
        self.say(f"{where} {key[2]} ensemble of {len(members)} seeds: test F1 "
                 f"{test['f1']:.3f} MIoU {test['miou']:.3f} AUC {metric_text(test['auc'])}")


def _plan(
    spec: StudySpec,
    settings: CompareSettings,
    state: Mapping[str, Any],
    done: set[tuple[Any, ...]],
    say: Callable[[str], None],
) -> Progress:
    """Count the model trainings still to run and say so.

    With a time estimate when an earlier run of this comparison stored its pace.
    """
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
                                         label + (f"-f{fold}" if fold is not None else ""),
                                         settings.epochs)
                    evaluations += settings.trials - stored_evaluations(vspec)
    seconds = sum(s.get("seconds") or 0.0 for s in state["searches"]) + sum(
        r.get("seconds") or 0.0 for r in state["rows"])
    units = sum(s.get("evaluations") or 0 for s in state["searches"]) + len(state["rows"])
    pace = seconds / units if units and seconds else None
    total = evaluations + runs
    estimate = (f", about {format_duration(pace * total)} at the stored pace"
                if pace is not None and total else
                "; the ETA follows after the first one" if total else "")
    most = spec.tuning.max_repeats or spec.tuning.repeats
    each = f" (each up to {most} replicates, [tuning])" if most > 1 else ""
    if total:
        say(f"plan: {total} model trainings: {evaluations} tuning evaluations{each} in "
            f"{searches} search(es) and {runs} training run(s){estimate}")
    else:
        say("plan: nothing left to train, every run is stored")
    return Progress(total, pace)


def _found(state: Mapping[str, Any], label: str, fold: int | None, name: str) -> bool:
    return any(
        s["split"] == label and s["fold"] == fold and s["variant"] == name and s["finished"]
        for s in state["searches"]
    )


__all__ = [
    "CompareResult",
    "CompareSettings",
    "compare_settings",
    "defaults_of",
    "not_applicable",
    "run_compare",
    "split_label",
    "variant_spec",
    "variant_stages",
]
