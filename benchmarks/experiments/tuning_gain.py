"""Does tuning's gain hold on seeds and data it never saw? Single-seed vs noise-aware search.

For each data set, the same study is tuned twice at (about) equal training compute:

- ``single``: the plain layer-wise search, one training run per trial (``repeats = 1``);
- ``noisy``: the noise-aware search (``[tuning] repeats``, racing), with every stage's
  budget scaled down so that it trains about as many networks.
- ``stagewise`` / ``joint-tpe`` (issue 22): the paper's stage-wise search, and one joint
  TPE stage over every parameter, each training as many networks as ``single`` (whose
  strategy is the engine's default, the shared surrogate).

Then the exported best configuration of each and the untuned defaults are trained again
with fresh seeds that tuning never used, and scored on the validation split and on the
test split (which tuning never read). Per data set and method it reports the gain the
search claimed (best over untuned, as `hpo report` prints it) and the realised gain,
paired by seed: mean and 95 % confidence interval (Student's t), on validation and test.

One search is one draw: which configuration it hands on depends on its own seed (its
samplers, its replicate seeds, its validation draw). ``--searches N`` tunes every method
N times (study seeds 0..N-1) and trains each search's choice with the fresh seeds; the
untuned defaults train on each search's splits. Gains are then averaged over the fresh
seeds within a search and their CI is taken over the N searches (Student's t, N - 1
degrees of freedom): what a user who tunes once can expect, tuning's luck included.

    python -m benchmarks.experiments.tuning_gain                         # quickstart and blocked
    python -m benchmarks.experiments.tuning_gain --datasets quickstart --seeds 5
    python -m benchmarks.experiments.tuning_gain --datasets quickstart \
        --methods single,stagewise,joint-tpe --name strategy_gain     # issue 22
    python -m benchmarks.experiments.tuning_gain --datasets quickstart \
        --methods single-x3 --seeds 10 --name tuning_gain_equal       # 3x the trials

A record keeps the runs of earlier invocations (each replaces only its own data set and
method), and every run is compared with the others of its data set that share its fresh
seeds: a method run later pairs with the stored ones.

Results: ``benchmarks/results/tuning_gain.json`` (one row per data set, method and
metric) and ``tuning_gain.md``. Not part of CI: about an hour per data set on 2 CPUs.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import re
import statistics
import subprocess
import sys
import time
import tomllib
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from benchmarks._harness import ROOT, Row, Run, add_common_flags, results_dir
from hpo.engine.budget import n_random
from hpo.engine.ledger import COPIED_ATTR
from hpo.engine.replicates import REPLICATES_ATTR, continued, search_gain
from hpo.study import (
    data_section,
    ensure_scene,
    make_objective,
    make_search,
    prepare_data,
    prepare_final_data,
)
from hpo.study.schema import parse_study

# Two-sided 95 % Student's t quantiles by degrees of freedom.
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
        9: 2.262, 10: 2.228, 15: 2.131, 20: 2.086, 30: 2.042}

DATASETS: dict[str, dict[str, Any]] = {
    # the README's tour: 256 px synthetic scene, random 16 px tiles
    "quickstart": {"study": "studies/quickstart.toml", "data": {}},
    # the same scene, spatially blocked: validation and test are other places
    "synthetic-blocked": {"study": "studies/quickstart.toml",
                          "data": {"split": "blocked", "block_size": 4}},
    # two synthetic regions (benchmarks/experiments/region_shift.py): tune in a, test in b
    "region-shift": {"study": "region-shift/grouped.toml", "data": {}, "shift": "strong"},
    "region-shift-mild": {"study": "region-shift/grouped.toml", "data": {}, "shift": "mild"},
    # four regions drawn from one family, three to train (and validate), b to test
    "region-shift-drawn": {"study": "region-shift/grouped.toml", "data": {}, "shift": "drawn",
                           "build": ["--regions", "4", "--size", "192"]},
    # a second draw: six other regions, five to train (enough groups for grouped folds)
    "region-shift-drawn6": {"study": "region-shift/grouped.toml", "data": {}, "shift": "drawn",
                            "build": ["--regions", "6", "--size", "160", "--draw", "29"]},
    # the Kashmir inventory, factors only, spatially blocked (metric f1_best)
    "kashmir": {"study": "studies/kashmir.toml", "data": {}},
    # the Landslide4Sense sample in hpo compare's outer folds: fold k's patches are the test
    **{f"l4s-fold{k}": {"study": "studies/l4s.toml",
                        "data": {"folds": 3, "fold": k, "fold_role": "test"}} for k in range(3)},
}


def _scale_budgets(raw: dict[str, Any], factor: float) -> None:
    for stage in raw["stages"]:
        stage["n_random"] = max(2, round(stage["n_random"] * factor))
        stage["n_bayes"] = max(1, round(stage["n_bayes"] * factor))


def _noisy(raw: dict[str, Any], repeats: int, scale: float, folds: int = 0,
           most: int | None = None) -> None:
    raw["tuning"] = ({"repeats": repeats, "racing": True} | ({"folds": folds} if folds else {})
                     | ({"max_repeats": most} if most else {}))
    _scale_budgets(raw, scale)


def _by_region(raw: dict[str, Any], repeats: int, scale: float, *, folds: bool) -> None:
    """Groups by training region (region-shift data sets): validation, or with ``folds``
    every replicate, holds out whole regions, as the test does."""
    raw["data"]["group"].update(column="region")
    if folds:
        _noisy(raw, repeats, scale, folds=repeats)


def _joint(raw: dict[str, Any], sampler: str) -> None:
    """One stage over every parameter, trained as often as the layer-wise search.

    The layer-wise search trains each stage's trials but the first (after stage 1 it is
    the copied incumbent); the joint stage gets that many, the engine's random share of
    them (trial 0 the defaults), as ``benchmarks/experiments/layerwise.py`` splits a joint
    budget.
    """
    stages = raw["stages"]
    trainings = sum(s["n_random"] + s["n_bayes"] for s in stages) - (len(stages) - 1)
    n_start = n_random(trainings)
    raw["stages"] = [{
        "name": "joint", "sampler": sampler, "n_random": n_start,
        "n_bayes": trainings - n_start,
        "params": {k: v for s in stages for k, v in s["params"].items()},
    }]


# How each method changes the study (``raw``) before it is tuned.
# their stage budgets are scaled
NOISY = ("noisy", "noisy-intensify", "grouped-folds", "grouped-folds-intensify", "region-folds")
METHODS: dict[str, Any] = {
    # the study as written: its strategy, or the engine's default (the shared surrogate)
    "single": lambda raw, repeats, scale: None,
    # issue 22: the paper's stage-wise search and joint TPE at the same trainings
    "stagewise": lambda raw, repeats, scale: raw.update(strategy="stagewise"),
    "joint-tpe": lambda raw, repeats, scale: _joint(raw, "tpe"),
    "noisy": _noisy,
    # with intensification: the incumbent and close contenders run up to twice as many
    "noisy-intensify": lambda raw, repeats, scale: _noisy(raw, repeats, scale,
                                                          most=2 * repeats),
    # validation on random patches of the training region, though the test is elsewhere
    "random-val": lambda raw, repeats, scale: raw["data"].update(validation="random"),
    # the default where the test is another region: held-out groups (blocks)
    "grouped-val": lambda raw, repeats, scale: None,
    # grouped folds as the replicates of the noise-aware search
    "grouped-folds": lambda raw, repeats, scale: _noisy(raw, repeats, scale, folds=repeats),
    # ... with intensification: up to two seeds a fold for the incumbent and close contenders
    "grouped-folds-intensify": lambda raw, repeats, scale: _noisy(raw, repeats, scale,
                                                                  folds=repeats, most=2 * repeats),
    # groups by training region: validation holds out whole regions, as the test does
    "region-val": lambda raw, repeats, scale: _by_region(raw, repeats, scale, folds=False),
    "region-folds": lambda raw, repeats, scale: _by_region(raw, repeats, scale, folds=True),
}


def split_method(method: str) -> tuple[str, float]:
    """``"single-x3"`` -> ``("single", 3.0)``: a method whose stage budgets are multiplied,
    e.g. to give the single-seed search the compute a noise-aware search spent."""
    found = re.fullmatch(r"(.+)-x(\d+(?:\.\d+)?)", method)
    name, factor = (found[1], float(found[2])) if found else (method, 1.0)
    if name not in METHODS:
        raise SystemExit(f"unknown method {method!r}: one of {', '.join(METHODS)}, "
                         "optionally with a budget factor such as single-x3")
    return name, factor


def budget_scale(method: str, scale: float) -> float:
    """A method's stage budgets relative to the study file's."""
    name, factor = split_method(method)
    return factor * (scale if name in NOISY else 1.0)


def _t95(dof: int) -> float:
    known = [d for d in _T95 if d <= dof]
    return _T95[max(known)] if known else _T95[1]


def paired(tuned: list[float], base: list[float]) -> dict[str, float]:
    """Mean paired difference with its 95 % confidence interval."""
    diffs = [a - b for a, b in zip(tuned, base, strict=True)]
    mean = statistics.fmean(diffs)
    half = _t95(len(diffs) - 1) * statistics.stdev(diffs) / math.sqrt(len(diffs))
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": len(diffs)}


def paired_searches(tuned: list[list[float]], base: list[list[float]]) -> dict[str, float]:
    """:func:`paired` over searches: one list of fresh-seed scores per search.

    One search: paired by seed. Several: each search's mean paired difference is one
    unit, and the CI is over the searches (the seeds within one share its choice).
    """
    if len(tuned) == 1:
        return paired(tuned[0], base[0])
    means = [paired(a, b)["mean"] for a, b in zip(tuned, base, strict=True)]
    return paired(means, [0.0] * len(means)) | {"n": len(means), "seeds": len(tuned[0])}


def _study(dataset: str, method: str, work: Path, repeats: int, scale: float,
           search: int | None = None) -> Any:
    """The study of ``method`` on ``dataset``; ``search``: its seed (``None``: the file's)."""
    setup = DATASETS[dataset]
    path = (_region_shift(work / dataset, setup["shift"], setup.get("build", []))
            if "shift" in setup else ROOT / setup["study"])
    raw = tomllib.loads(path.read_text(encoding="utf-8"))
    raw = copy.deepcopy(raw)
    raw["name"] = f"gain-{dataset}-{method}" + (f"-s{search}" if search is not None else "")
    if search is not None:
        raw["seed"] = search
    raw["data"].update(setup["data"])
    name, factor = split_method(method)
    METHODS[name](raw, repeats, scale)
    if factor != 1.0:
        _scale_budgets(raw, factor)
    work.mkdir(parents=True, exist_ok=True)
    raw["storage"] = f"sqlite:///{work / (raw['name'] + '.db')}"
    raw["artifacts"] = str(work / "artifacts" / raw["name"])
    # tune() generates a missing synthetic scene (ensure_scene) once the spec is read
    return parse_study(raw, file=path, explicit=("storage", "artifacts"), check_paths=False)


def _region_shift(out: Path, shift: str, flags: list[str]) -> Path:
    """The region-shift study files, built once in ``out``."""
    if not (out / "grouped.toml").is_file():
        subprocess.run([sys.executable, "-m", "benchmarks.experiments.region_shift", str(out),
                        "--shift", shift, *flags], check=True, cwd=ROOT)
    return out / "grouped.toml"


def _compute(result: Any) -> tuple[int, int]:
    """Networks trained by the search (every replicate of every trial that ran) and the
    epochs they trained: the compute, where a search also tunes ``optim.epochs``.

    A trial's epochs per replicate are the ones its first replicate reported (a later
    stage trains at the length an earlier one handed on, which its params do not show);
    a confirmation run trains only the replicates it adds to the run it continues.
    """
    trainings = epochs = 0
    for stage in result.stages:
        trials = stage.study.get_trials(deepcopy=False) if stage.study else []
        for t in trials:
            if COPIED_ATTR in t.user_attrs:
                continue
            first = continued(t, trials)
            runs = len(t.user_attrs.get(REPLICATES_ATTR) or [None]) - (
                len(first.user_attrs.get(REPLICATES_ATTR) or []) if first else 0)
            trainings += runs
            epochs += runs * len((first or t).intermediate_values)
    return trainings, epochs


def tune(dataset: str, method: str, work: Path, repeats: int, scale: float,
         search: int | None = None) -> dict[str, Any]:
    """Tune one study; its best params, the defaults, the claimed gain, the compute."""
    spec = _study(dataset, method, work, repeats, scale, search)
    ensure_scene(spec)
    started = time.monotonic()
    tuning = prepare_data(spec)
    search = make_search(spec, make_objective(spec, tuning, device="cpu"))
    result = search.run()
    gain = search_gain(result)
    defaults = {k: v for stage in spec.stages for k, v in stage.to_stage().defaults.items()}
    trainings, epochs = _compute(result)
    return {
        "spec": spec,
        "best": dict(result.best_params),
        "defaults": defaults,
        "claimed": gain.delta if gain else None,
        "claimed_se": gain.se if gain else None,
        "trainings": trainings,
        "epochs_trained": epochs,
        "configurations": sum(s.n_complete for s in result.stages),
        "seconds": time.monotonic() - started,
    }


def _train_once(job: tuple) -> dict[str, Any]:
    """One fresh-seed training of one configuration, scored on validation and test."""
    section, base_dir, split_seed, fixed, params, seed, model, train_on = job
    import networks
    from networks.config import ModelConfig

    final = prepare_final_data(section, base_dir, seed=split_seed, train_on=train_on)
    config = ModelConfig.from_params({**fixed, **params})
    history = networks.train(config, final.train_set, final.val_set, seed=seed, model=model,
                             device="cpu")
    val = networks.evaluate(history.model, final.val_set, device="cpu")
    test = networks.evaluate(history.model, final.test_set, device="cpu",
                             threshold=val["threshold"])
    return {"val_f1": val["f1"], "test_f1": test["f1"], "test_auc": test["auc"],
            "val_f1_best": val["f1_best"], "test_f1_at_val_threshold": test["f1_at_threshold"]}


def evaluate(configs: dict[Any, tuple[Any, dict, str | None]], seeds: list[int], workers: int,
             train_on: str = "train") -> dict[Any, list[dict[str, Any]]]:
    """Every ``name: (spec, params, model)`` trained with every fresh seed on the spec's data.

    Each method keeps its own study's splits (validation differs between them); the test
    split is the same, so the test scores pair by seed. ``model`` ``None`` is the study's
    network; a baseline's name trains it at its defaults, with the study's fixed keys.
    With ``train_on = "train+val"`` every configuration trains on the same tiles (all but
    the test's), whatever its method's validation held out: the comparison is then of
    the configurations alone (validation scores are in-sample, the test's are not).
    """
    jobs = {(name, s): (data_section(spec), spec.base_dir, spec.seed, dict(spec.model.fixed),
                        params, s, model or spec.model.name, train_on)
            for name, (spec, params, model) in configs.items() for s in seeds}
    with ProcessPoolExecutor(workers, mp_context=get_context("forkserver")) as pool:
        done = dict(zip(jobs, pool.map(_train_once, jobs.values()), strict=True))
    return {name: [done[(name, s)] for s in seeds] for name in configs}


def run(datasets: list[str], methods: list[str], seeds: list[int], work: Path, repeats: int,
        scale: float, workers: int, baselines: list[str] = (), train_on: str = "train",
        searches: int = 1) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    ks = [None] if searches == 1 else list(range(searches))
    for dataset in datasets:
        tuned = {(m, k): tune(dataset, m, work, repeats, scale, k) for k in ks for m in methods}
        # the untuned defaults train on the first method's splits of every search, the
        # baselines (at their defaults) on the first search's
        firsts = {k: tuned[(methods[0], k)] for k in ks}
        configs = {("untuned", k): (f["spec"], f["defaults"], None) for k, f in firsts.items()}
        configs |= {key: (t["spec"], t["best"], None) for key, t in tuned.items()}
        configs |= {(b, k): (firsts[ks[0]]["spec"], {}, b) for b in baselines for k in ks[:1]}
        scores = evaluate(configs, seeds, workers, train_on)

        def of(name: str, metric: str, scores: dict = scores) -> list[list[float]]:
            # a baseline's one set of scores stands beside every search
            return [[r[metric] for r in scores[(name, k if (name, k) in scores else ks[0])]]
                    for k in ks]

        for method in methods:
            runs = [tuned[(method, k)] for k in ks]
            spec = runs[0]["spec"]
            tuning = spec.tuning
            setup = {"seeds": seeds, "train_on": train_on, "searches": searches,
                     "repeats": tuning.repeats, "folds": tuning.folds,
                     "max_repeats": tuning.max_repeats,
                     "switch_z": tuning.switch_z if tuning.repeats > 1 else None,
                     "budget_scale": budget_scale(method, scale),
                     **{key: _per_search([t[key] for t in runs])
                        for key in ("trainings", "epochs_trained", "configurations")},
                     "tuning_seconds": round(sum(t["seconds"] for t in runs), 1)}
            claimed = [t["claimed"] for t in runs if t["claimed"] is not None]
            ses = [t["claimed_se"] for t in runs if t["claimed_se"] is not None]
            row = {"benchmark": "tuning_gain", "dataset": dataset, "method": method,
                   "model": spec.model.name, "metric": spec.metric, "setup": setup,
                   "claimed_gain": statistics.fmean(claimed) if claimed else None,
                   "claimed_gain_se": statistics.fmean(ses) if ses else None,
                   "best_params": runs[0]["best"] if searches == 1 else [t["best"] for t in runs]}
            for metric in GAINS:
                a, b = of(method, metric), of("untuned", metric)
                row[metric] = {"tuned": _flat(a), "untuned": _flat(b),
                               "gain": paired_searches(a, b)}
            # how far validation overstates the test, for the tuned configuration
            val, test = realised(row)
            row["val_to_test_gap"] = statistics.fmean(
                v - t for v, t in zip(row[val]["tuned"], row[test]["tuned"], strict=True))
            row["baselines"] = {b: {m: _flat(of(b, m)[:1]) for m in GAINS} for b in baselines}
            rows.append(row)
            print(json.dumps({k: row[k] for k in ("dataset", "method", "claimed_gain")}
                             | {m: row[m]["gain"] for m in ("val_f1", "test_f1")}), flush=True)
    return rows


VERSUS = ("test_f1", "test_auc", "test_f1_at_val_threshold")


def realised(row: dict[str, Any]) -> tuple[str, str]:
    """The validation and test scores that realise what a run's search claimed.

    A study tuned on ``f1_best`` (F1 at the threshold chosen on validation) claims a gain
    in that, and its exported threshold is what the test is scored at; every other study
    is read at 0.5 (``f1``). Runs recorded before the metric was kept read as ``f1``.
    """
    if row.get("metric") == "f1_best":
        return "val_f1_best", "test_f1_at_val_threshold"
    return "val_f1", "test_f1"


def add_versus(rows: list[dict[str, Any]]) -> None:
    """Each run's test scores against every other method's and its baselines', paired.

    Runs of other invocations count where they share the data set, the fresh seeds, the
    number of searches and what the trainings trained on: a method added later (say the
    single-seed search at a noise-aware search's compute) is compared with the stored ones
    on the same test split and seeds, but only where the untuned defaults, trained again
    in each run, scored the same: on another CPU (or after a change to training) the same
    seed trains another network, and a seed no longer pairs. Such runs are listed in
    ``unpaired`` with the largest difference of the defaults' test F1.
    """
    def key(r: dict[str, Any]) -> tuple:
        setup = r["setup"]
        return (r["dataset"], tuple(setup["seeds"]), setup.get("searches", 1),
                setup.get("train_on", "train"))

    for r in rows:
        n, searches = len(r["setup"]["seeds"]), r["setup"].get("searches", 1)
        metrics = [m for m in VERSUS if m in r]
        mine = {m: _nested(r[m]["tuned"], n) for m in metrics}
        same = [o for o in rows if o is not r and key(o) == key(r)]
        apart = {o["method"]: _defaults_moved(r, o) for o in same}
        r["unpaired"] = {m: d for m, d in apart.items() if d > REPRODUCED}
        others = {o["method"]: {m: _nested(o[m]["tuned"], n) for m in metrics if m in o}
                  for o in same if o["method"] not in r["unpaired"]}
        # a baseline's one set of scores stands beside every search
        others |= {b: {m: [scores[m]] * searches for m in metrics if m in scores}
                   for b, scores in r.get("baselines", {}).items()}
        # a run recorded before a metric existed pairs on the metrics both have
        r["versus"] = {other: {m: paired_searches(mine[m], theirs[m])
                               for m in theirs if m in mine}
                       for other, theirs in others.items()}


REPRODUCED = 1e-6
"""The defaults' test F1 of two runs agree to this, seed by seed, where a seed pairs."""


def _defaults_moved(a: dict[str, Any], b: dict[str, Any]) -> float:
    """The largest difference, seed by seed, of two runs' untuned test F1 (0 when unknown)."""
    mine, theirs = a["test_f1"].get("untuned"), b["test_f1"].get("untuned")
    if mine is None or theirs is None:
        return 0.0
    return max(abs(x - y) for x, y in zip(mine, theirs, strict=True))


def unpaired_lines(rows: list[dict[str, Any]]) -> list[str]:
    """The markdown note naming the runs :func:`add_versus` could not pair (none: [])."""
    apart = {(r["dataset"], *sorted((r["method"], o))): d
             for r in rows for o, d in r.get("unpaired", {}).items()}
    if not apart:
        return []
    return (["", "Not paired: the untuned defaults, trained in each run with the same seeds, "
             "scored differently (another machine or training code):", ""]
            + [f"- {dataset}: {a} and {b}, defaults' test F1 up to {d:.3f} apart"
               for (dataset, a, b), d in apart.items()])


def _nested(flat: list[float], n: int) -> list[list[float]]:
    return [flat[i:i + n] for i in range(0, len(flat), n)]


def _flat(nested: list[list[float]]) -> list[float]:
    return [v for inner in nested for v in inner]


def _per_search(values: list[int]) -> int | float:
    """A compute count of one search: the count itself, or the mean over searches."""
    return values[0] if len(values) == 1 else round(statistics.fmean(values), 1)


GAINS = ("val_f1", "test_f1", "test_auc", "val_f1_best", "test_f1_at_val_threshold")


def to_rows(runs: list[dict[str, Any]]) -> list[Row]:
    """Per data set and method: the claimed gain, each realised gain (mean, 95 % CI) and
    each gain against the other methods; the model is the network, the method in setup."""
    rows = []
    for r in runs:
        setup = {"method": r["method"], **r["setup"]}
        values: dict[str, Any] = {"claimed_gain": r["claimed_gain"],
                                  "claimed_gain_se": r["claimed_gain_se"]}
        for metric in (m for m in GAINS if m in r):
            g = r[metric]["gain"]
            values |= {f"{metric}_gain": g["mean"], f"{metric}_gain_low": g["low"],
                       f"{metric}_gain_high": g["high"]}
        if "val_to_test_gap" in r:
            values["val_to_test_gap"] = r["val_to_test_gap"]
        for other, pairs in r.get("versus", {}).items():
            for metric, g in pairs.items():
                values |= {f"{metric}_vs_{other}": g["mean"],
                           f"{metric}_vs_{other}_low": g["low"],
                           f"{metric}_vs_{other}_high": g["high"]}
        rows += [Row("tuning_gain", r["dataset"], r["model"], k, v, "", setup)
                 for k, v in values.items()]
        for baseline, scores in r.get("baselines", {}).items():
            rows += [Row("tuning_gain", r["dataset"], baseline, f"{m}_mean",
                         statistics.fmean(v), "", {"method": "untuned baseline",
                                                   "seeds": r["setup"]["seeds"]})
                     for m, v in scores.items()]
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "Exported best configuration vs the untuned defaults, each trained with the same "
        "fresh seeds (never used in tuning); gains are paired by seed, mean [95 % CI]. "
        "Validation and test are scored in the study's metric: F1 at 0.5, or for a study "
        "tuned on f1_best F1 at the threshold chosen on validation.",
        "",
        "| data set | method | trainings (configs) / epochs | claimed gain | "
        "realised val gain | realised test gain | test AUC gain | val - test |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        def cell(metric: str, r: dict = r) -> str:
            g = r[metric]["gain"]
            return f"{g['mean']:+.3f} [{g['low']:+.3f}, {g['high']:+.3f}]"

        claimed = (f"{r['claimed_gain']:+.3f}" if r["claimed_gain"] is not None else "-") + (
            f" ± {r['claimed_gain_se']:.3f}" if r["claimed_gain_se"] else "")
        val, test = realised(r)
        at = " (F1 at the val threshold)" if val != "val_f1" else ""
        lines.append(
            f"| {r['dataset']}{at} | {_label(r)} | {r['setup']['trainings']} "
            f"({r['setup']['configurations']}) / {r['setup'].get('epochs_trained', '-')} | "
            f"{claimed} | {cell(val)} | "
            f"{cell(test)} | {cell('test_auc')} | {r.get('val_to_test_gap', math.nan):+.3f} |")
    versus = [(r["dataset"], r["method"], other, pairs)
              for r in rows for other, pairs in r.get("versus", {}).items()]
    lines += unpaired_lines(rows)
    if versus:
        lines += ["", "Between methods (row minus column method, same seeds, test split):", "",
                  "| data set | method | versus | test F1 | test AUC | test F1 at val threshold |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for dataset, method, other, g in versus:
            cells = " | ".join(f"{g[m]['mean']:+.3f} [{g[m]['low']:+.3f}, {g[m]['high']:+.3f}]"
                               if m in g else "-" for m in VERSUS)
            lines.append(f"| {dataset} | {method} | {other} | {cells} |")
    lines += ["", "Scores, mean ± sd over the fresh seeds (baselines untuned, on the first "
              "method's splits):", "",
              "| data set | configuration | val F1 | test F1 | test AUC |",
              "| --- | --- | --- | --- | --- |"]
    for dataset, name, scores in _scores(rows):
        cells = " | ".join(f"{statistics.fmean(scores[m]):.3f} ± {statistics.stdev(scores[m]):.3f}"
                           for m in ("val_f1", "test_f1", "test_auc"))
        lines.append(f"| {dataset} | {name} | {cells} |")
    return "\n".join(lines) + "\n"


def _label(row: dict[str, Any]) -> str:
    searches = row["setup"].get("searches", 1)
    return row["method"] + (f" ({searches} searches)" if searches > 1 else "")


def _scores(rows: list[dict[str, Any]]) -> list[tuple[str, str, dict[str, list[float]]]]:
    """Per data set: the untuned defaults, each method's tuned configuration and each
    baseline, with their per-seed scores."""
    out = []
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        runs = [r for r in rows if r["dataset"] == dataset]
        # runs recorded before a metric existed lack it
        out.append((dataset, "untuned", {m: runs[0][m]["untuned"] for m in GAINS
                                         if m in runs[0]}))
        out += [(dataset, r["method"], {m: r[m]["tuned"] for m in GAINS if m in r})
                for r in runs]
        out += [(dataset, f"{b} (baseline)", v)
                for b, v in runs[0].get("baselines", {}).items()]
    return out


def main() -> None:
    """Tune, retrain on fresh seeds, and merge the rows into ``<out>/<name>.json``."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_flags(p, seed=None)  # --quick: 2 fresh seeds; --seeds counts from 1000
    p.add_argument("--datasets", default="quickstart,synthetic-blocked")
    p.add_argument("--methods", default="single,noisy",
                   help=f"comma-separated, of {', '.join(METHODS)}; a suffix -xK multiplies "
                        "a method's stage budgets by K (single-x3: three times the trials)")
    p.add_argument("--seeds", type=int, default=5, help="fresh seeds per configuration")
    p.add_argument("--repeats", type=int, default=3, help="replicates of the noisy search")
    p.add_argument("--scale", type=float, default=0.5,
                   help="stage budgets of the noisy search, relative to the study's")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--work", type=Path, default=Path("/tmp/tuning_gain"))
    p.add_argument("--name", default="tuning_gain", help="results file: <out>/<name>.json, .md")
    p.add_argument("--train-on", choices=("train", "train+val"), default="train",
                   help="what the fresh-seed trainings train on: their method's training "
                        "split, or every non-test tile (the same for every method)")
    p.add_argument("--baselines", default="",
                   help="e.g. unet,hgb: trained untuned with the same seeds and splits, and "
                        "every tuned configuration paired against them")
    p.add_argument("--searches", type=int, default=1,
                   help="tune every method this many times (study seeds 0..N-1); CIs are "
                        "then over the searches")
    args = p.parse_args()
    recorder = Run(args.name, results_dir(args))
    seeds = [1000 + i for i in range(2 if args.quick else args.seeds)]
    methods = args.methods.split(",")
    for method in methods:
        split_method(method)  # a typo fails now, not after an hour of tuning
    runs = run(args.datasets.split(","), methods, seeds, args.work,
               args.repeats, args.scale, args.workers,
               [b for b in args.baselines.split(",") if b], args.train_on, args.searches)
    target = recorder.out / f"{args.name}.json" if recorder.out else None
    # Runs of other data sets or methods stay: each run replaces only its own rows.
    old = (json.loads(target.read_text())["details"]["runs"]
           if target is not None and target.is_file() else [])
    ran = {(r["dataset"], r["method"]) for r in runs}
    runs = [r for r in old if (r["dataset"], r["method"]) not in ran] + runs
    add_versus(runs)
    print(markdown(runs))
    recorder.write(to_rows(runs), details={"runs": runs}, markdown=markdown(runs),
                   title="Tuning gain on fresh seeds")


if __name__ == "__main__":
    main()
