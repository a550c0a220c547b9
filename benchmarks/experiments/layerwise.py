"""Layer-wise search against joint search on layered test functions (issue 5, "Benchmark").

**Regret.** On problems that are sums of one block per stage (see
``benchmarks/experiments/_functions.py``), at equal numbers of objective evaluations:
layer-wise search (random then gp / tpe / skopt, each with and without ``refine``) against
plain Optuna studies on the joint space (random, TPE, GP, skopt). Regret = best value
found - f*, as the median and IQR over seeds, and the best-so-far curve against
evaluations. The engine's own cost per trial is :mod:`benchmarks.perf.overhead`.

Runtime: the regret runs share one queue between this process and one child, seed by
seed; no run starts after ``--time-limit`` minutes and only seeds that every cell
finished are kept, so all methods are compared on the same seeds.

Budget rules (the same for every method, so the comparison is at equal evaluations):

* A budget counts objective *evaluations*. A layer-wise stage after the first starts
  with the previous stage's best copied in as a COMPLETE trial that costs nothing, so
  its ``Stage`` budget is its evaluations + 1 (the refine stage likewise).
* With refine, ``REFINE_SHARE`` of the budget goes to the refine stage; the rest is split
  over the stages in proportion to their number of parameters (largest remainder).
* Every stage, the refine stage and every joint study spend ``round(budget / 3)``
  trials (at least 1) on random search, the first of them the defaults (layer-wise:
  the measured defaults or the copied incumbent; joint: the defaults enqueued), then
  the Bayesian sampler from ``hpo.make_sampler`` (``joint-random``: random throughout).

    python -m benchmarks.experiments.layerwise             # full run, 2 processes
    python -m benchmarks.experiments.layerwise --quick     # a few minutes, prints the tables
    python -m benchmarks.experiments.layerwise --time-limit 0   # every seed, however long
    python -m benchmarks.experiments.layerwise --report    # rebuild layerwise.md and the plot
    python -m benchmarks.experiments.layerwise --seeds 10 --budgets 60 120 \
        --problems network4 network4-coupled   # the 4-stage problems (~3x the cost)
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import multiprocessing as mp
import platform
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna

import hpo
from benchmarks._harness import (
    RESULTS,
    Row,
    Run,
    add_common_flags,
    load_average,
    results_dir,
    rows_of,
    write_record,
)
from benchmarks.experiments._functions import (
    Problem,
    basin_floors,
    numerical_optimum,
    problems,
    stagewise_optimum,
)
from hpo.engine.budget import RANDOM_SHARE, REFINE_SHARE, n_random, plan_stages
from hpo.engine.samplers.shared import TIMES as SURROGATE

TITLE = "Layer-wise vs joint search (benchmarks/experiments/layerwise.py)"
BO_SAMPLERS = ("gp", "tpe", "skopt")


# -------------------------------------------------------------------------- methods


@dataclass(frozen=True)
class Method:
    """A way to spend a budget: layer-wise (refine, passes, strategy) or one joint study.

    ``layerwise-*`` is the paper's stage-wise method (``strategy="stagewise"``);
    ``shared-*`` the shared surrogate over all trials (``strategy="shared"``).
    ``+cycles``: two passes over the stages at the same total (see :func:`pass_plan`).
    """

    kind: str  # "layerwise" or "joint"
    sampler: str
    refine: bool = False
    strategy: str = "stagewise"
    cycles: int = 1

    @property
    def name(self) -> str:
        if self.kind == "joint":
            return f"joint-{self.sampler}"
        head = "shared" if self.strategy == "shared" else "layerwise"
        return (
            f"{head}-{self.sampler}"
            + ("+refine" if self.refine else "")
            + ("+cycles" if self.cycles > 1 else "")
        )


ALL_METHODS = [
    Method("layerwise", "gp", strategy="shared", cycles=2),
    Method("layerwise", "gp", strategy="shared"),
    Method("layerwise", "gp", refine=True, strategy="shared"),
    *(Method("layerwise", s, refine) for s in BO_SAMPLERS for refine in (False, True)),
    *(Method("layerwise", s, cycles=2) for s in ("gp", "tpe")),
    *(Method("joint", s) for s in ("random", "tpe", "gp", "skopt")),
]
NEW_DEFAULT = "shared-gp"
"""The engine's default (``strategy="shared"``, one pass), judged by issue 22's goals."""
CANDIDATES = (NEW_DEFAULT, "shared-gp+cycles")
"""The configurations whose goals are checked (the second: two passes, same total)."""
DEFAULT_METHODS = [
    NEW_DEFAULT, "shared-gp", "shared-gp+refine", "layerwise-gp", "layerwise-gp+refine",
    "layerwise-gp+cycles", "joint-tpe", "joint-gp", "joint-random",
]
METHODS = [m for m in ALL_METHODS if m.name in DEFAULT_METHODS]
SECOND_PASS_SHARE = 0.4
"""Share of the evaluations the ``+cycles`` methods spend on the second pass."""


def pass_plan(total: int, dims: Sequence[int], share: float = SECOND_PASS_SHARE) -> tuple[
    list[Any], tuple[int, int]
]:
    """Two passes at ``total`` evaluations: first-pass stage budgets and ``cycle_budget``.

    The second pass gives every stage the same ``k = floor(share * total / stages)``
    Bayesian evaluations after its copied incumbent (``cycle_budget = (1, k)``: no
    random phase, the incumbent is free); the first pass gets the rest, split as
    :func:`hpo.engine.budget.plan_stages` splits a one-pass budget.
    """
    k = max(1, int(share * total) // len(dims))
    stages, _ = plan_stages(total - k * len(dims), dims, False)
    return stages, (1, k)


def layerwise_plan(
    problem: Problem, total: int, refine: bool, cycles: int = 1
) -> dict[str, Any]:
    """Stage budgets (in COMPLETE trials, the copied incumbent included) for a budget."""
    dims = [len(b.space) for b in problem.blocks]
    if cycles > 1:
        stages, cycle_budget = pass_plan(total, dims)
        return {
            "stages": [
                {"stage": block.name, "evaluations": s.evaluations, "n_random": s.n_random,
                 "n_bayes": s.n_bayes}
                for block, s in zip(problem.blocks, stages, strict=True)
            ],
            "refine": None,
            "cycles": 2,
            "cycle_budget": list(cycle_budget),
        }
    stages, refined = plan_stages(total, dims, refine)
    return {
        "stages": [
            {"stage": block.name, "evaluations": s.evaluations, "n_random": s.n_random,
             "n_bayes": s.n_bayes}
            for block, s in zip(problem.blocks, stages, strict=True)
        ],
        "refine": None if refined is None else {
            "evaluations": refined.evaluations, "n_random": refined.n_random,
            "n_bayes": refined.n_bayes,
        },
    }


# ---------------------------------------------------------------------------- runs


class Recorder:
    """The objective, logging every evaluation's value (the regret curve's x axis)."""

    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        self.values: list[float] = []

    def __call__(self, params: dict[str, Any]) -> float:
        value = float(self.problem(params))
        self.values.append(value)
        return value


def run_layerwise(problem: Problem, method: Method, total: int, seed: int) -> list[float]:
    plan = layerwise_plan(problem, total, method.refine, method.cycles)
    stages = [
        hpo.Stage(
            b.name, b.space, defaults=b.defaults, n_random=s["n_random"], n_bayes=s["n_bayes"]
        )
        for b, s in zip(problem.blocks, plan["stages"], strict=True)
    ]
    refine = plan["refine"] and hpo.Refine(
        n_random=plan["refine"]["n_random"], n_bayes=plan["refine"]["n_bayes"]
    )
    objective = Recorder(problem)
    result = hpo.LayerwiseSearch(
        stages,
        objective,
        direction="minimize",
        storage=None,
        sampler=method.sampler,
        seed=seed,
        refine=refine or None,
        study_name=f"bench-{seed}",
        strategy=method.strategy,
        cycles=plan.get("cycles", 1),
        cycle_budget=tuple(plan["cycle_budget"]) if "cycle_budget" in plan else None,
    ).run()
    # The engine's answer must be the best evaluation, and the budget exactly spent.
    if len(objective.values) != total or not math.isclose(
        result.best_value, min(objective.values), rel_tol=0, abs_tol=1e-12
    ):
        raise RuntimeError(
            f"{method.name}: {len(objective.values)} evaluations for a budget of {total}, "
            f"best {result.best_value} vs {min(objective.values)}"
        )
    return objective.values


def run_joint(problem: Problem, method: Method, total: int, seed: int) -> list[float]:
    objective = Recorder(problem)
    space = problem.space
    study = optuna.create_study(
        direction="minimize", sampler=optuna.samplers.RandomSampler(seed=seed)
    )
    study.enqueue_trial(problem.defaults)  # the same first point as layer-wise
    n_start = total if method.sampler == "random" else n_random(total)
    for number in range(total):
        if number == n_start:
            # make_sampler's BO samplers model from their first call; the random phase
            # before them is what optuna's n_startup_trials would otherwise do.
            study.sampler = hpo.make_sampler(method.sampler, seed)
        trial = study.ask(space)
        study.tell(trial, objective(trial.params))
    return objective.values


def run_one(task: tuple[str, str, int, int]) -> dict[str, Any]:
    """One (problem, method, budget, seed): the best-so-far regret curve and wall time."""
    problem_name, method_name, total, seed = task
    problem = PROBLEMS[problem_name]
    method = next(m for m in ALL_METHODS if m.name == method_name)
    SURROGATE.reset()
    start = time.perf_counter()
    runner = run_layerwise if method.kind == "layerwise" else run_joint
    values = runner(problem, method, total, seed)
    return {
        "problem": problem_name,
        "method": method_name,
        "budget": total,
        "seed": seed,
        "best_so_far": np.minimum.accumulate(values).tolist(),
        "seconds": time.perf_counter() - start,
        # The shared surrogate's own time (fit + acquisition), inside "seconds".
        "surrogate_seconds": SURROGATE.fit + SURROGATE.acquisition,
    }


def optimum_task(task: tuple[str, int]) -> dict[str, Any]:
    """f* of a coupled problem and its lock-in floors, numerically (a worker task)."""
    name, n_dense = task
    start = time.perf_counter()
    f_star, x_star = numerical_optimum(PROBLEMS[name], n_dense=n_dense)
    floor, x_floor = stagewise_optimum(PROBLEMS[name])
    return {
        "optimum": name,
        "f_star": f_star,
        "n_dense": n_dense,
        "x_star": x_star,
        "stagewise_value": floor,
        "x_stagewise": x_floor,
        "basin_floors": basin_floors(PROBLEMS[name], f_star),
        "seconds": time.perf_counter() - start,
    }


PROBLEMS = {p.name: p for p in problems()}


# --------------------------------------------------------------- two processes


def _quiet() -> None:
    # One thread per process: two processes on two shared cores, and GPSampler's torch
    # (and BLAS under numpy / scikit-learn) would otherwise start one thread per core,
    # whose spinning made skopt and GP runs ~3x slower in CPU time. threadpoolctl only
    # limits libraries already loaded, so load skopt's and torch's first.
    import skopt  # noqa: F401
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    threadpool_limits(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("hpo").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore")


def _serve(tasks: mp.Queue, results: mp.Queue, deadline: float) -> None:
    _quiet()
    while (task := tasks.get()) is not None:
        if time.monotonic() > deadline:
            results.put({"task": list(task), "skipped": True})  # keeps the count right
            continue
        fn = optimum_task if len(task) == 2 else run_one
        try:
            result = fn(task)
        except Exception as exc:  # noqa: BLE001 - report, do not hang the other process
            result = {"task": list(task), "error": f"{type(exc).__name__}: {exc}"}
        results.put(result)
        left = f"; {(deadline - time.monotonic()) / 60:.0f} min to the time limit"
        print(
            f"  {'/'.join(map(str, task))}: {result.get('seconds', 0):.1f} s"
            + (left if math.isfinite(deadline) else ""),
            flush=True,
        )


def run_all(tasks: list[tuple], *, deadline: float) -> list[dict[str, Any]]:
    """Run tasks in this process and one child, both pulling from one queue in order.

    Tasks not started by ``deadline`` (``time.monotonic()``, the same clock in both
    processes) come back as skipped.
    """
    ctx = mp.get_context("fork")
    todo, done = ctx.Queue(), ctx.Queue()
    for task in tasks:
        todo.put(task)
    todo.put(None)
    todo.put(None)  # one stop sign per process
    child = ctx.Process(target=_serve, args=(todo, done, deadline), daemon=True)
    child.start()
    _serve(todo, done, deadline)
    out = [done.get() for _ in tasks]
    child.join()
    errors = [r for r in out if "error" in r]
    if errors:
        raise RuntimeError(f"{len(errors)} runs failed, first: {errors[0]}")
    return out


def _runs_on(method: Method, problem: str, gp_problems: Sequence[str] | None) -> bool:
    """Whether a cell is run: Optuna-GP methods only on ``gp_problems`` (None: all)."""
    optuna_gp = method.sampler == "gp" and method.strategy == "stagewise"
    return gp_problems is None or not optuna_gp or problem in gp_problems


def task_order(
    problem_names: Sequence[str],
    budgets: Sequence[int],
    seeds: int,
    n_dense: int,
    gp_problems: Sequence[str] | None = None,
) -> list[tuple]:
    """f* first, then seed by seed, the slowest runs of a seed first.

    Seed-major order means a deadline cuts whole seeds, never some methods' seeds, so
    every method is compared on the same seeds; slowest first balances the processes.
    """
    optima: list[tuple] = [(n, n_dense) for n in problem_names if PROBLEMS[n].f_star is None]
    runs = []
    for seed in range(seeds):
        cells = [
            (p, m, b, seed)
            for p in problem_names
            for m in METHODS
            for b in budgets
            if _runs_on(m, p, gp_problems)
        ]
        cells.sort(key=lambda c: -c[2] * _SECONDS_PER_TRIAL[c[1].sampler])
        runs += [(p, m.name, b, s) for p, m, b, s in cells]
    return optima + runs


# Rough sampler cost, only to order tasks.
_SECONDS_PER_TRIAL = {"skopt": 0.3, "gp": 0.15, "tpe": 0.005, "random": 0.001}


def complete_seeds(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Runs of the seeds that every cell finished (a deadline may cut the last seeds)."""
    runs = [r for r in results if "best_so_far" in r]
    cells = {(r["problem"], r["method"], r["budget"]) for r in runs}
    per_seed: dict[int, int] = {}
    for r in runs:
        per_seed[r["seed"]] = per_seed.get(r["seed"], 0) + 1
    keep = {seed for seed, n in per_seed.items() if n == len(cells)}
    return [r for r in runs if r["seed"] in keep]


# ------------------------------------------------------------------ reporting


def summarize(runs: list[dict[str, Any]], f_star: dict[str, float]) -> list[dict[str, Any]]:
    """Median / q25 / q75 of the final regret and the median curve per cell."""
    cells: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for r in runs:
        cells.setdefault((r["problem"], r["method"], r["budget"]), []).append(r)
    rows = []
    for (problem, method, budget), group in sorted(cells.items()):
        group.sort(key=lambda g: g["seed"])
        curves = np.array([g["best_so_far"] for g in group]) - f_star[problem]
        q25, median, q75 = np.percentile(curves[:, -1], [25, 50, 75])
        rows.append(
            {
                "problem": problem,
                "method": method,
                "budget": budget,
                "metric": "regret",
                "median": float(median),
                "q25": float(q25),
                "q75": float(q75),
                "n_seeds": len(group),
                "final_by_seed": curves[:, -1].tolist(),
                "median_curve": np.median(curves, axis=0).tolist(),
                "seconds_per_run": float(np.median([g["seconds"] for g in group])),
                "surrogate_seconds_per_run": float(
                    np.median([g.get("surrogate_seconds", 0.0) for g in group])
                ),
            }
        )
    return rows


def _fmt(x: float) -> str:
    return f"{x:.3g}" if abs(x) >= 1e-3 else f"{x:.1e}"


def markdown_tables(rows: list[dict[str, Any]], budgets: Sequence[int]) -> str:
    """One table per problem: methods down, budgets across, 'median [q25, q75]'."""
    lines = []
    for problem in dict.fromkeys(r["problem"] for r in rows):
        cell = {(r["method"], r["budget"]): r for r in rows if r["problem"] == problem}
        lines += [
            f"### {problem}",
            "",
            "| method | "
            + " | ".join(f"regret @ {b}" for b in budgets)
            + " | s/run @ "
            + str(budgets[-1])
            + " | surrogate s/run |",
            "|---|" + "---|" * (len(budgets) + 2),
        ]
        for m in METHODS:
            if (m.name, budgets[0]) not in cell:
                continue
            best = {
                b: min(cell[(k.name, b)]["median"] for k in METHODS if (k.name, b) in cell)
                for b in budgets
            }
            parts = []
            for b in budgets:
                r = cell[(m.name, b)]
                text = f"{_fmt(r['median'])} [{_fmt(r['q25'])}, {_fmt(r['q75'])}]"
                parts.append(f"**{text}**" if r["median"] == best[b] else text)
            lines.append(
                f"| {m.name} | "
                + " | ".join(parts)
                + f" | {cell[(m.name, budgets[-1])]['seconds_per_run']:.1f}"
                + f" | {cell[(m.name, budgets[-1])].get('surrogate_seconds_per_run', 0):.1f} |"
            )
        lines.append("")
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    problems_ = list(dict.fromkeys(r["problem"] for r in rows))
    budget = max(r["budget"] for r in rows)
    fig, axes = plt.subplots(1, len(problems_), figsize=(5.2 * len(problems_), 4.2), squeeze=False)
    styles = {"layerwise": "-", "joint": "--"}
    colors = dict(zip(BO_SAMPLERS + ("random",), ("C0", "C1", "C2", "C7"), strict=True))
    shared_colors = {1: "C3", 2: "C4"}  # the shared-surrogate strategy: one or two passes
    for ax, problem in zip(axes[0], problems_, strict=True):
        for m in METHODS:
            r = next(
                (
                    r
                    for r in rows
                    if (r["problem"], r["method"], r["budget"]) == (problem, m.name, budget)
                ),
                None,
            )
            if r is None:
                continue
            curve = np.maximum(np.asarray(r["median_curve"]), 1e-6)  # log axis
            ax.plot(
                np.arange(1, len(curve) + 1),
                curve,
                styles[m.kind],
                color=shared_colors[m.cycles] if m.strategy == "shared" else colors[m.sampler],
                lw=2.2 if m.refine or m.name == NEW_DEFAULT else 1.3,
                alpha=1.0 if m.refine or m.kind == "joint" else 0.75,
                label=m.name,
            )
        ax.set_yscale("log")
        ax.set_title(f"{problem} (budget {budget})")
        ax.set_xlabel("objective evaluations")
        ax.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel("best-so-far regret (median over seeds)")
    axes[0][-1].legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ------------------------------------------------------------------------- main


DEFAULT_PROBLEMS = [
    "branin+hartmann3", "branin+hartmann3-coupled", "cnn4-coupled", "fusion5-coupled"
]
SEPARABLE = ("branin+hartmann3", "network4")


def goals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Issue 22's goals, checked on the medians (where the cells were run)."""
    med = {(r["problem"], r["method"], r["budget"]): r["median"] for r in rows}
    out: dict[str, Any] = {}
    for problem in dict.fromkeys(r["problem"] for r in rows):
        for method in CANDIDATES:
            new60 = med.get((problem, method, 60))
            new120 = med.get((problem, method, 120))
            key = f"{problem} / {method}"
            if problem in SEPARABLE:
                gp120 = med.get((problem, "joint-gp", 120))
                if new120 is not None and gp120 is not None:
                    ratio = gp120 / max(new120, 1e-12)
                    out[key] = {"goal": "joint-gp@120 / new@120 >= 10", "value": ratio,
                                "met": ratio >= 10}
            else:
                tpe120 = med.get((problem, "joint-tpe", 120))
                if new60 is not None and tpe120 is not None:
                    out[key] = {"goal": "new@60 <= joint-tpe@120", "new@60": new60,
                                "joint-tpe@120": tpe120, "met": new60 <= tpe120}
    return out
READING = "## Reading"


def markdown(record: dict[str, Any], old: str) -> str:
    """layerwise.md below its title: the generated part, then the '## Reading' section of
    ``old`` (the file as it was: that section is written by hand)."""
    reading = old[old.index(READING) :] if READING in old else f"{READING}\n\n(to write)\n"
    s = record["settings"]
    tables = markdown_tables(record["results"], s["budgets"])
    cut = (
        f" (of {s['seeds_asked']} asked: the {s['time_limit_min']:g}-minute time limit "
        "stopped the rest)"
        if s["seeds"] < s["seeds_asked"]
        else ""
    )
    lines = [
        f"{record['machine']}; wall {record['wall_seconds'] / 60:.1f} min. Regenerate with "
        "`python -m benchmarks.experiments.layerwise`; the Reading section below is kept.",
        "",
        f"Final regret (best value - f*, minimize), median [q25, q75] over {s['seeds']} "
        f"seeds{cut}, at equal objective evaluations; bold = best median of the column. "
        f"s/run = median seconds per run (sampler cost; the objective is free).",
        "",
        "Problems:",
        "",
    ]
    for name, p in record["problems"].items():
        lines.append(
            f"- **{name}**: {p['description']}; f* = {p['f_star']:.6f} ({p['f_star_how']})."
        )
        if p.get("basin_floors_regret"):
            floors = "; ".join(f"({k}): {v:.3g}" for k, v in p["basin_floors_regret"].items())
            lines.append(
                f"  Lock-in floors (least regret once stage 1 sits in each of its equal "
                f"minima): {floors}."
            )
    lines += [
        "",
        "Budget rules: a budget counts objective evaluations. Layer-wise: "
        f"{s['refine_share']:.0%} of it to `refine` when enabled, the rest split over "
        "stages in proportion to their parameter counts (largest remainder); each stage "
        "(and refine) spends round(budget/3) trials on random search, the measured "
        "defaults or the copied incumbent first, then the BO sampler. A stage's copied "
        "incumbent is a free COMPLETE trial, so its Stage budget is evaluations + 1. "
        "Joint: one optuna study over all parameters, the defaults enqueued first, "
        "round(budget/3) random trials (the same share), then `hpo.make_sampler`'s "
        "sampler (joint-random: random throughout). `+cycles`: two passes at the same "
        f"total: the second gets floor({s.get('second_pass_share', 0.4):.0%} of the budget "
        "/ stages) Bayesian evaluations per stage after its free copied incumbent, the "
        "first pass the rest (split as above). `layerwise-*` = the paper's stage-wise "
        "method (`strategy=\"stagewise\"`), `shared-*` = one surrogate over all trials "
        "(`strategy=\"shared\"`); surrogate s/run = the shared surrogate's fitting and "
        "acquisition time inside s/run.",
        "",
        tables,
        "![regret against evaluations](layerwise_regret.png)",
        "",
        *_goal_lines(record.get("goals", {}), s.get("new_default", NEW_DEFAULT)),
    ]
    return "\n".join(lines) + "\n\n" + reading


def _goal_lines(checked: dict[str, Any], new: str) -> list[str]:
    if not checked:
        return []
    lines = [
        f"## Goals (issue 22): the engine default `{new}` (strategy `shared`, one pass) "
        "and `shared-gp+cycles` (two passes at the same total)",
        "",
    ]
    for key, g in checked.items():
        detail = (
            f"{g['new@60']:.3g} vs {g['joint-tpe@120']:.3g}" if "new@60" in g
            else f"{g['value']:.3g}"
        )
        lines.append(f"- {key}: {g['goal']}: {detail}: {'met' if g['met'] else 'NOT met'}")
    return [*lines, ""]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_flags(parser, seed=None)  # --quick: 2 seeds, budget 16
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--budgets", type=int, nargs="+", default=[30, 60, 120])
    parser.add_argument(
        "--methods",
        nargs="+",
        default=DEFAULT_METHODS,
        choices=[m.name for m in ALL_METHODS],
        help=f"methods to run (default: {' '.join(DEFAULT_METHODS)})",
    )
    parser.add_argument(
        "--problems",
        nargs="+",
        default=DEFAULT_PROBLEMS,
        choices=list(PROBLEMS),
        help="the 4- and 5-stage network problems cost ~3x as much per run",
    )
    parser.add_argument(
        "--gp-problems",
        nargs="+",
        default=None,
        choices=list(PROBLEMS),
        help="run the Optuna-GP methods (layerwise-gp*, joint-gp) only on these problems "
        "(they take minutes per run on the 17-20-parameter problems); default: all",
    )
    parser.add_argument(
        "--time-limit",
        type=float,
        default=36.0,
        help="minutes (from the start) after which no run starts; whole seeds are kept "
        "(0: no limit)",
    )
    parser.add_argument(
        "--report",
        action="store_true",
        help="only rebuild layerwise.md and the plot from <out>/layerwise.json",
    )
    args = parser.parse_args(argv)
    METHODS[:] = [m for m in ALL_METHODS if m.name in args.methods]
    if args.report:
        _report(args.out or RESULTS)
        return
    recorder = Run("layerwise", results_dir(args))
    if args.quick:
        args.seeds, args.budgets = 2, [16]
    start = time.perf_counter()
    deadline = time.monotonic() + 60 * args.time_limit if args.time_limit else math.inf
    _quiet()
    n_dense = 2**12 if args.quick else 2**15
    tasks = task_order(args.problems, args.budgets, args.seeds, n_dense, args.gp_problems)
    print(f"{len(tasks)} tasks on 2 processes, none started after {args.time_limit:g} min")
    results = run_all(tasks, deadline=deadline)
    wall = time.perf_counter() - start
    runs = complete_seeds(results)
    n_seeds = len({r["seed"] for r in runs})
    skipped = sum("skipped" in r for r in results)
    if n_seeds < args.seeds:
        print(f"time limit: {n_seeds} of {args.seeds} seeds complete ({skipped} runs skipped)")

    optima = {r["optimum"]: r for r in results if "optimum" in r}
    f_star = {n: optima[n]["f_star"] if n in optima else PROBLEMS[n].f_star for n in args.problems}
    rows = summarize(runs, f_star)
    print(markdown_tables(rows, args.budgets))
    print(f"wall {wall / 60:.1f} min")
    if recorder.out is None:
        return
    record = {
        "machine": f"{platform.machine()}, {mp.cpu_count()} cores shared with other work, "
        "2 processes",
        "wall_seconds": wall,
        "settings": {
            "seeds": n_seeds,
            "seeds_asked": args.seeds,
            "time_limit_min": args.time_limit,
            "budgets": args.budgets,
            "refine_share": REFINE_SHARE,
            "random_share": RANDOM_SHARE,
            "plans": {
                f"{n}/{b}/{kind}": layerwise_plan(
                    PROBLEMS[n], b, kind == "refine", 2 if kind == "cycles" else 1
                )
                for n in args.problems
                for b in args.budgets
                for kind in ("plain", "refine", "cycles")
            },
            "methods": [m.name for m in METHODS],
            "gp_problems": args.gp_problems,
            "new_default": NEW_DEFAULT,
            "candidates": list(CANDIDATES),
            "second_pass_share": SECOND_PASS_SHARE,
        },
        "problems": {n: _problem_record(n, f_star[n], optima.get(n)) for n in args.problems},
        "results": rows,
        "goals": goals(rows),
    }
    _write(recorder.out, record, {**recorder.machine, "load_after": load_average()},
           recorder.command)


DETAILS = ("machine", "wall_seconds", "problems", "results", "goals")
"""The record's parts kept in the JSON's ``details`` (``results`` with the curves)."""


def to_rows(results: list[dict[str, Any]], checked: dict[str, Any]) -> list[Row]:
    """Per problem, method and budget the final regret (median, quartiles) and the time
    per run; per problem and candidate whether its goal is met."""
    rows = []
    for r in results:
        values = {"regret_median": r["median"], "regret_q25": r["q25"], "regret_q75": r["q75"],
                  "seconds_per_run": r["seconds_per_run"],
                  "surrogate_seconds_per_run": r.get("surrogate_seconds_per_run", 0.0)}
        rows += rows_of("layerwise", r["problem"], r["method"], values,
                        {"seconds_per_run": "s", "surrogate_seconds_per_run": "s"},
                        {"budget": r["budget"], "seeds": r["n_seeds"]})
    for key, g in checked.items():
        problem, method = key.split(" / ")
        rows.append(Row("layerwise", problem, method, "goal_met", g["met"], "",
                        {k: v for k, v in g.items() if k != "met"}))
    return rows


def _write(out: Path, record: dict[str, Any], machine: dict[str, Any], command: str) -> None:
    md = out / "layerwise.md"
    write_record(
        out, "layerwise", to_rows(record["results"], record["goals"]), machine=machine,
        command=command, settings=record["settings"],
        details={k: record[k] for k in DETAILS},
        markdown=markdown(record, md.read_text() if md.exists() else ""), title=TITLE,
    )  # fmt: skip
    plot(record["results"], out / "layerwise_regret.png")
    print(f"wrote {out}/layerwise.json, layerwise.md, layerwise_regret.png")


def _report(out: Path) -> None:
    """Rebuild layerwise.md and the plot from ``out/layerwise.json`` (goals rechecked)."""
    saved = json.loads((out / "layerwise.json").read_text())
    record = {"settings": saved["settings"], **saved["details"]}
    if "methods" in record["settings"]:
        METHODS[:] = [m for m in ALL_METHODS if m.name in record["settings"]["methods"]]
    record["goals"] = goals(record["results"])
    record["settings"]["new_default"] = NEW_DEFAULT
    record["settings"]["candidates"] = list(CANDIDATES)
    _write(out, record, saved["machine"], saved["command"])


def _problem_record(name: str, f_star: float, optimum: dict[str, Any] | None) -> dict[str, Any]:
    problem = PROBLEMS[name]
    out = {
        "description": problem.description,
        "eps": problem.eps,
        "f_star": f_star,
        "stages": [b.name for b in problem.blocks],
    }
    if optimum is None:
        return {**out, "f_star_how": problem.note}
    return {
        **out,
        "f_star_how": "numerical: every combination of the coupled discrete parameters "
        f"enumerated; per combination {optimum['n_dense']} scrambled-Sobol points over the "
        "continuous ones (own scale), L-BFGS-B from the best 12",
        "x_star": optimum["x_star"],
        # A perfect one-pass layer-wise search (each stage exactly optimal given the
        # earlier stages' results and the later ones' defaults; ties broken by the dense
        # search) reaches this value.
        "stagewise_floor_regret": optimum["stagewise_value"] - f_star,
        "x_stagewise": optimum["x_stagewise"],
        # The same, per global minimum of the first block (equal while later stages sit
        # at their defaults, so which one stage 1 ends in is chance).
        "basin_floors_regret": optimum["basin_floors"],
    }


if __name__ == "__main__":
    main()
