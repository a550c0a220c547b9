"""Trials per hour of the ray runner with real trainings: 1 vs 2 trials at once on 2 CPUs.

Every configuration runs one stage of the same trainings: the fusion network
(:class:`hpo.NetworkObjective`, a few seconds per trial) on a small seeded synthetic
cube, prepared once through the study pipeline ``hpo tune`` uses (synthetic scene ->
cached, memory-mapped cube -> tuning splits), with the trials differing only by their
learning rate. Configurations, on one local Ray instance of 2 CPUs started once:

- ``local``: the local runner, one torch thread (reference);
- ``ray-c1``: ``cpu=1``, one trial at a time, one torch thread;
- ``ray-c2``: ``cpu=1``, two trials at a time, one torch thread each (goal: >= 1.7x the
  trials per hour of ``ray-c1``);
- ``ray-c1-2t``: ``cpu=2``, one trial at a time with two torch threads (reference: one
  training spread over both cores instead of two trainings side by side).

Per configuration: trials per hour over the stage's wall time (Tune's experiment start
and end and the workers' start included: what a short stage gets) and in steady state
(from the completion of the first ``concurrency`` trials to the last one), the median
trial time, and the ratios to ``ray-c1``. Ray's own cost per trial against the local
runner on a near-zero objective comes from :mod:`benchmarks.perf.ray_runner` in the same run.

The machine's load averages before and after are recorded: on a shared machine the
figures are only as good as the cores were idle.

    python -m benchmarks.perf.ray_scaling            # writes benchmarks/results/ray_scaling.*
    python -m benchmarks.perf.ray_scaling --quick    # 3 shorter trials each; prints the table only
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._harness import Row, Run, add_common_flags, melt, results_dir
from benchmarks.perf.ray_runner import compare, empty_objective, start_ray, timed_stage

# The [data] section of the study: a 128 x 128 px scene with 3 dates, 16 px tiles
# (38 training and 13 validation tiles), built once per run.
DATA = {
    "scene": "scene/scene.toml",
    "patch_size": 16,
    "fractions": [0.6, 0.2, 0.2],
    "cache_dir": "cubes",
    "synthetic": {"size": 128, "n_dates": 3, "seed": 0},
}
DATASET = "synthetic-128px-3dates-seed0-patch16"
MODEL = "fusion"
# measure() minimizes; val_loss is defined for every trial (F1 at 0.5 is often 0 after
# a few epochs, which would make the trials indistinguishable).
METRIC = "val_loss"
# Default layer sizes; a short DBN pretraining so that the epochs, not the CD-k warm-up,
# dominate a trial. One epoch is ~0.4 s on one idle core.
FIXED = {"optim.batch_size": 8, "dbn.pretrain_epochs": 1, "dbn.max_pixels": 2000}

# (name, cpu per trial, trials at once, share of the trials); cpu=None is the local
# runner. Two threads on two cores that other processes also use can run 10x slower
# than one (OpenMP threads wait for each other at every barrier), so that reference
# runs half the trials to keep the run short; trials per hour stay comparable.
CONFIGS = [
    ("local", None, 1, 1.0),
    ("ray-c1", 1, 1, 1.0),
    ("ray-c2", 1, 2, 1.0),
    ("ray-c1-2t", 2, 1, 0.5),
]
BASE = "ray-c1"


def make_objective(folder: Path, epochs: int) -> Any:
    """The network objective on the seeded synthetic cube, prepared under ``folder``."""
    from hpo import NetworkObjective
    from hpo.study import ensure_scene, prepare_data
    from hpo.study.schema import parse_study
    from networks.config import ModelConfig

    # The study only carries the data: a study's metric cannot be val_loss, so the
    # objective is built here rather than by hpo.study.tune.make_objective.
    raw = {
        "name": "ray-scaling",
        "seed": 0,
        "data": DATA,
        "model": {"name": MODEL},
        "stages": [{"name": "optim", "n_random": 1, "n_bayes": 0,
                    "params": {"optim.lr": {"type": "float", "low": 1e-4, "high": 1e-2,
                                            "log": True, "default": 1e-3}}}],
    }
    spec = parse_study(raw, file=folder / "study.toml", check_paths=False)
    ensure_scene(spec, say=lambda _: None)
    tuning = prepare_data(spec)
    return NetworkObjective(
        tuning.train_set, tuning.val_set, model=MODEL, metric=METRIC,
        base_config=ModelConfig.from_params({**FIXED, "optim.epochs": epochs}),
        device="cpu", seed=0,
    )


def _runner(cpu: int | None, concurrent: int) -> Any:
    if cpu is None:
        return "local"
    from hpo.engine.runners.ray.runner import RayRunner

    return RayRunner(cpu=cpu, max_concurrent=concurrent, log_to_driver=False)


def _steady_rate(completed: list[float], concurrent: int) -> float:
    """Trials per hour after the first ``concurrent`` completions (the workers' start).

    Concurrent trials tend to finish in groups, so the median gap between completions
    says little; the rate from the ``concurrent``-th completion to the last does not
    depend on how they group.
    """
    if len(completed) <= concurrent:
        return float("nan")
    return 3600 * (len(completed) - concurrent) / (completed[-1] - completed[concurrent - 1])


def run_config(objective: Any, name: str, cpu: int | None, concurrent: int, trials: int,
               folder: Path) -> dict[str, Any]:
    """One stage of ``trials`` trainings under one configuration."""
    print(f"{name}: {trials} trials ...", file=sys.stderr, flush=True)
    timing, stage = timed_stage(objective, trials, _runner(cpu, concurrent),
                                f"network-{name}", folder)
    done = [t for t in stage.study.trials if t.datetime_complete is not None]
    completed = sorted(t.datetime_complete.timestamp() for t in done)
    return {
        "config": name,
        "runner": "local" if cpu is None else "ray",
        "cpu_per_trial": cpu or 1,
        "threads_per_trial": cpu or 1,
        "concurrent": concurrent,
        **timing,
        "trials_per_hour": 3600 * trials / timing["wall_s"],
        "steady_trials_per_hour": _steady_rate(completed, concurrent),
        "median_trial_s": statistics.median(
            (t.datetime_complete - t.datetime_start).total_seconds() for t in done
        ),
    }


def _ratios(rows: list[dict]) -> dict[str, float]:
    by = {r["config"]: r for r in rows}

    def ratio(a: str, b: str, key: str) -> float:
        return by[a][key] / by[b][key]

    return {
        "c2_vs_c1": ratio("ray-c2", BASE, "trials_per_hour"),
        "c2_vs_c1_steady": ratio("ray-c2", BASE, "steady_trials_per_hour"),
        "c1_2threads_vs_c1": ratio("ray-c1-2t", BASE, "trials_per_hour"),
        "c1_2threads_vs_c1_steady": ratio("ray-c1-2t", BASE, "steady_trials_per_hour"),
        "c1_vs_local": ratio(BASE, "local", "trials_per_hour"),
        "c1_vs_local_steady": ratio(BASE, "local", "steady_trials_per_hour"),
    }


def _markdown(rows: list[dict], ratios: dict[str, float], cost: list[dict],
              setup: dict[str, Any]) -> str:
    load = "/".join(f"{x:.1f}" for x in setup["load_before"])
    load_after = "/".join(f"{x:.1f}" for x in setup["load_after"])
    lines = [
        f"Data set `{setup['dataset']}`, model `{setup['model']}` ({setup['epochs']} epochs, "
        f"{setup['train_tiles']} training / {setup['val_tiles']} validation tiles), metric "
        f"`{setup['metric']}`; one Ray instance of 2 CPUs for all configurations (started "
        f"in {setup['ray_init_s']:.1f} s, not counted); {setup['cpus']} CPUs "
        f"({setup['machine']}), load average (1/5/15 min) {load} before and {load_after} "
        f"after; Ray {setup['ray']}, torch {setup['torch']}, {setup['date']}; total "
        f"{setup['total_s']:.0f} s.",
        "",
        "`trials/h` = trials / stage wall time (the workers' start included); `steady` = "
        f"from the completion of the first `concurrent` trials to the last; `median "
        f"trial` = a trial's start in Optuna to its end (a Ray trial starts when Tune asks "
        f"for it, so the first ones include their worker's start). Ratios are against "
        f"`{BASE}`.",
        "",
        "| config | runner | cpu | threads | concurrent | trials | wall (s) | trials/h | "
        "× c1 | steady trials/h | × c1 | median trial (s) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    base = next(r for r in rows if r["config"] == BASE)
    for r in rows:
        lines.append(
            f"| {r['config']} | {r['runner']} | {r['cpu_per_trial']} | "
            f"{r['threads_per_trial']} | {r['concurrent']} | {r['trials']} | "
            f"{r['wall_s']:.1f} | {r['trials_per_hour']:.0f} | "
            f"{r['trials_per_hour'] / base['trials_per_hour']:.2f} | "
            f"{r['steady_trials_per_hour']:.0f} | "
            f"{r['steady_trials_per_hour'] / base['steady_trials_per_hour']:.2f} | "
            f"{r['median_trial_s']:.2f} |"
        )
    goal = "met" if ratios["c2_vs_c1"] >= 1.7 else "not met"
    lines += [
        "",
        f"2 trials at once vs 1: **{ratios['c2_vs_c1']:.2f}×** trials/h "
        f"({ratios['c2_vs_c1_steady']:.2f}× steady; goal >= 1.7×: {goal}). One trial with "
        f"two threads vs one: {ratios['c1_2threads_vs_c1']:.2f}× "
        f"({ratios['c1_2threads_vs_c1_steady']:.2f}× steady). Ray c1 vs local: "
        f"{ratios['c1_vs_local']:.2f}× ({ratios['c1_vs_local_steady']:.2f}× steady).",
        "",
        "Ray's cost per trial on a near-zero objective (`benchmarks/perf/ray_runner.py`, "
        "sequential, actors reused):",
        "",
        "| runner | trials | per trial (s) | × local | steady (s) | × local |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in cost:
        lines.append(
            f"| {r['runner']} | {r['trials']} | {r['per_trial_s']:.3f} | "
            f"{r['per_trial_vs_local']:.1f} | {r['steady_per_trial_s']:.3f} | "
            f"{r['steady_vs_local']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def to_rows(results: list[dict], ratios: dict[str, float], cost: list[dict]) -> list[Row]:
    """Per configuration and measure, the ratios, and Ray's cost per trial (``empty``)."""
    rows = melt("ray_scaling", results, dataset=DATASET, model_key="config",
                setup_keys=("runner", "cpu_per_trial", "threads_per_trial", "concurrent"))
    rows += [Row("ray_scaling", DATASET, "ratios", k, v) for k, v in ratios.items()]
    return rows + melt("ray_scaling-cost", cost, dataset="", dataset_key="objective",
                       model_key="runner")


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark; write the results unless ``--quick``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_flags(parser, seed=None)  # --quick: 3 shorter trials per configuration
    args = parser.parse_args(argv)
    recorder = Run("ray_scaling", results_dir(args))
    trials, epochs, empty_trials = (3, 3, 10) if args.quick else (8, 8, 30)
    start = time.perf_counter()
    load_before = os.getloadavg()
    ray_init = start_ray(num_cpus=2)
    import ray
    import torch

    with tempfile.TemporaryDirectory(prefix="bench-ray-scaling-") as tmp:
        folder = Path(tmp)
        objective = make_objective(folder / "study", epochs)
        (folder / "runs").mkdir()
        rows = [run_config(objective, name, cpu, concurrent, max(2, round(trials * share)),
                           folder / "runs")
                for name, cpu, concurrent, share in CONFIGS]
        cost = compare({("empty", "local"): empty_trials, ("empty", "ray-reuse"): empty_trials},
                       {"empty": empty_objective}, folder / "runs")
    ray.shutdown()
    ratios = _ratios(rows)
    setup = {
        "dataset": DATASET,
        "data": DATA,
        "train_tiles": len(objective.train_set),
        "val_tiles": len(objective.val_set),
        "model": MODEL,
        "model_fixed": {**FIXED, "optim.epochs": epochs},
        "epochs": epochs,
        "metric": METRIC,
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "ray": ray.__version__,
        "torch": torch.__version__,
        "date": recorder.machine["utc"][:10],
        "ray_init_s": ray_init,
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "total_s": time.perf_counter() - start,
        "quick": args.quick,
    }
    table = _markdown(rows, ratios, cost, setup)
    print(table)
    recorder.write(to_rows(rows, ratios, cost), settings=setup, markdown=table,
                   title="ray runner scaling: trials per hour with real trainings")


if __name__ == "__main__":
    main()
