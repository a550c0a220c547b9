"""The engine's cost per trial: ``LayerwiseSearch.run()`` against a bare ``study.optimize``.

Milliseconds per trial of one layer-wise stage against a bare Optuna study with the same
sampler, parameters and SQLite storage (both opened by ``hpo.make_storage``), on a free
objective (the ``network4`` test problem of ``benchmarks/experiments/_functions.py``:
its parameters, no training), interleaved in one process in ABBA order so that drift in
the machine's load hits both alike. Per sampler (``random``, ``tpe`` and ``shared``: the
shared-surrogate strategy's GP in both, its fitting and acquisition time subtracted from
both sides of the ratio): engine and bare ms/trial (medians), the median of the paired
ratios and their range. Goal (issue 22): ``shared`` ratio <= 1.15. Wants a quiet machine.

    python -m benchmarks.perf.overhead           # writes benchmarks/results/overhead.*
    python -m benchmarks.perf.overhead --quick   # 20 trials, 2 repetitions; prints only
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

import hpo
from benchmarks._harness import Row, Run, add_common_flags, melt, results_dir
from benchmarks.experiments._functions import Problem, problems
from hpo.engine.samplers.shared import TIMES as SURROGATE
from hpo.engine.samplers.shared import SharedGPSampler

PROBLEM = "network4"
SAMPLERS = ("random", "tpe", "shared")
GOAL = 1.15
"""Issue 22: engine / bare ms per trial (surrogate excluded) of ``shared``, at most."""


def _quiet() -> None:
    # As the regret runs of benchmarks/experiments/layerwise.py measured it: one thread
    # (GPSampler's torch and the BLAS under numpy would start one per core) and no logs.
    # threadpoolctl only limits libraries already loaded, so load skopt's and torch's first.
    import skopt  # noqa: F401
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    threadpool_limits(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("hpo").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore")


def suggest(trial: optuna.Trial, name: str, dist: BaseDistribution) -> Any:
    """What a user writes in a bare optuna objective for one distribution."""
    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    assert isinstance(dist, FloatDistribution)
    return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)


def _engine(url: str, problem: Problem, sampler: str, n_trials: int, seed: int) -> None:
    # One stage over the same parameters; trial 0 measures the defaults, then the sampler.
    # "shared": the shared-surrogate strategy's GP (one stage: no other studies to read).
    stage = hpo.Stage(
        "all", problem.space, defaults=problem.defaults, n_random=1, n_bayes=n_trials - 1
    )
    hpo.LayerwiseSearch(
        [stage],
        problem,
        direction="minimize",
        storage=url,
        sampler="gp" if sampler == "shared" else sampler,
        seed=seed,
        study_name="overhead",
        strategy="shared" if sampler == "shared" else "stagewise",
    ).run()


def _bare(url: str, problem: Problem, sampler: str, n_trials: int, seed: int) -> None:
    space = problem.space
    bo = (
        SharedGPSampler(space=space, active=space, fixed={}, seed=seed)
        if sampler == "shared"
        else hpo.make_sampler(sampler, seed)
    )
    study = optuna.create_study(storage=hpo.make_storage(url), direction="minimize", sampler=bo)
    study.enqueue_trial(problem.defaults)  # as the engine's trial 0
    study.optimize(
        lambda t: problem({k: suggest(t, k, d) for k, d in space.items()}), n_trials=n_trials
    )


def measure_overhead(
    problem: Problem, samplers: Iterable[str], n_trials: int, reps: int, seed: int = 0
) -> dict[str, Any]:
    """ms/trial of the engine and a bare study, interleaved (ABBA order) in this process."""
    out: dict[str, Any] = {
        "problem": problem.name,
        "n_trials": n_trials,
        "reps": reps,
        "storage": "sqlite (temp file, hpo.make_storage: WAL, synchronous=NORMAL)",
        "samplers": {},
    }
    runners = {"engine": _engine, "bare": _bare}
    for sampler in samplers:
        ms: dict[str, list[float]] = {"engine": [], "bare": []}
        fit: dict[str, list[float]] = {"engine": [], "bare": []}  # surrogate ms/trial
        for rep in range(reps):
            # Alternate who goes first, so drift in machine load hits both alike.
            order = ("engine", "bare") if rep % 2 == 0 else ("bare", "engine")
            for kind in order:
                with tempfile.TemporaryDirectory() as tmp:
                    url = f"sqlite:///{tmp}/overhead.db"
                    SURROGATE.reset()
                    start = time.perf_counter()
                    runners[kind](url, problem, sampler, n_trials, seed + rep)
                    ms[kind].append(1e3 * (time.perf_counter() - start) / n_trials)
                    fit[kind].append(
                        1e3 * (SURROGATE.fit + SURROGATE.acquisition) / n_trials
                    )
        # The shared surrogate's own time is counted apart: the ratio compares the rest
        # (the same sampler runs in both, so its cost is not the engine's).
        ratios = [
            (e - fe) / (b - fb)
            for e, b, fe, fb in zip(
                ms["engine"], ms["bare"], fit["engine"], fit["bare"], strict=True
            )
        ]
        out["samplers"][sampler] = {
            "surrogate_ms_per_trial": statistics.median(fit["engine"] + fit["bare"]),
            "engine_ms_per_trial": statistics.median(ms["engine"]),
            "bare_ms_per_trial": statistics.median(ms["bare"]),
            "ratio": statistics.median(ratios),  # of paired (same rep) ratios
            "ratio_min": min(ratios),
            "ratio_max": max(ratios),
            "engine_ms_all": ms["engine"],
            "bare_ms_all": ms["bare"],
        }
        print(
            f"  overhead {sampler}: engine {statistics.median(ms['engine']):.1f} ms/trial, "
            f"bare {statistics.median(ms['bare']):.1f} ms/trial, "
            f"ratio {statistics.median(ratios):.2f}"
        )
    return out


def to_rows(overhead: dict[str, Any]) -> list[Row]:
    """Per sampler and measure; the goal's check as a row of ``shared``."""
    records = [{"sampler": name, **o} for name, o in overhead["samplers"].items()]
    rows = melt("overhead", records, dataset=overhead["problem"], model_key="sampler")
    shared = overhead["samplers"].get("shared")
    if shared is not None:
        rows.append(Row("overhead", overhead["problem"], "shared", f"ratio_le_{GOAL}",
                        shared["ratio"] <= GOAL, "", {"goal": "issue 22"}))  # fmt: skip
    return rows


def markdown(overhead: dict[str, Any]) -> str:
    """The overhead table, one row per sampler."""
    lines = [
        f"`LayerwiseSearch.run()` (one stage over the {overhead['problem']} parameters, trial "
        f"0 the defaults) against `study.optimize` with the same sampler from "
        f"`hpo.make_sampler` (defaults enqueued), {overhead['n_trials']} trials, "
        f"{overhead['storage']}, free objective, {overhead['reps']} interleaved repetitions "
        f"(alternating order). Ratio = median of paired ratios (goal <= {GOAL}); `shared` is "
        "the shared-surrogate strategy's GP in both, its fitting and acquisition time "
        "(surrogate ms/trial) subtracted from both sides of the ratio.",
        "",
        "| sampler | engine ms/trial | bare ms/trial | ratio [min, max] | surrogate ms/trial |",
        "|---|---|---|---|---|",
    ]
    for name, o in overhead["samplers"].items():
        lines.append(
            f"| {name} | {o['engine_ms_per_trial']:.1f} | {o['bare_ms_per_trial']:.1f}"
            f" | {o['ratio']:.2f} [{o['ratio_min']:.2f}, {o['ratio_max']:.2f}] |"
            f" {o.get('surrogate_ms_per_trial', 0.0):.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    """Measure the overhead (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_flags(parser)  # --quick: 20 trials, 2 repetitions
    parser.add_argument("--trials", type=int, default=None, help="trials per run (default 60)")
    # 12: on a shared machine one repetition's paired ratio spreads from 0.8 to 1.5
    parser.add_argument("--reps", type=int, default=None, help="repetitions (default 12)")
    parser.add_argument("--samplers", nargs="+", default=list(SAMPLERS), choices=SAMPLERS)
    args = parser.parse_args(argv)
    recorder = Run("overhead", results_dir(args))
    n_trials = args.trials or (20 if args.quick else 60)
    reps = args.reps or (2 if args.quick else 12)
    _quiet()
    problem = next(p for p in problems() if p.name == PROBLEM)
    overhead = measure_overhead(problem, args.samplers, n_trials, reps, args.seed)
    table = markdown(overhead)
    print(table)
    recorder.write(
        to_rows(overhead),
        settings={k: overhead[k] for k in ("problem", "n_trials", "reps", "storage")},
        details={name: {k: o[k] for k in ("engine_ms_all", "bare_ms_all")}
                 for name, o in overhead["samplers"].items()},
        markdown=table, title="Engine overhead per trial (benchmarks/perf/overhead.py)",
    )  # fmt: skip


if __name__ == "__main__":
    main()
