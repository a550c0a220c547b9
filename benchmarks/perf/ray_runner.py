"""Cost per trial of the ray runner against the local runner, with and without actor reuse.

Two objectives, each run as one stage of sequential trials (``max_concurrent=1``, one
CPU and one torch thread per trial) on an SQLite storage:

- ``empty``: returns a number at once (the runner's own cost per trial);
- ``network``: the fusion network, 1 epoch on 8 random ``(3, 2, 8, 8)`` samples
  (the smallest real training; the worker also pays for importing torch).

Per runner: the stage's wall time per trial (everything from the first ask to the last
tell: a Tune experiment's start and end, the first worker's start) and the steady cost
per trial (median time between consecutive tells after the first trial), both also as
ratios to the local runner measured in the same run. Ray is started once (its start
time is reported on its own), as ``hpo tune`` does once per search.

    python -m benchmarks.perf.ray_runner            # writes benchmarks/results/ray_runner.*
    python -m benchmarks.perf.ray_runner --quick    # fewer trials; prints the table only
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._harness import Row, Run, add_common_flags, melt, results_dir

TITLE = "ray runner benchmark: cost per trial"


TINY = {
    "optim.epochs": 1,
    "optim.batch_size": 4,
    "temporal.conv_channels": 2,
    "temporal.lstm_hidden": 2,
    "temporal.downsample": 2,
    "dbn.hidden": (2,),
    "dbn.pretrain_epochs": 1,
    "dbn.max_pixels": 100,
    "dcnn.depth": 1,
    "dcnn.width": 2,
}


def empty_objective(params: dict[str, Any]) -> float:
    """The near-zero objective: the runner's own cost per trial is all there is."""
    return float(params["x"])


def random_tiles(
    n: int, seed: int, shape: tuple[int, int, int, int] = (3, 2, 8, 8), cut: float = 0.3
) -> list:
    """``n`` seeded ``(x (S, T, h, w), y, valid)`` samples; the label follows one input.

    A pixel is a landslide where the first source's last date is above ``cut`` (0.3: about
    38 % of the pixels, 0.8: about 21 %).
    """
    import torch

    g = torch.Generator().manual_seed(seed)
    items = []
    for _ in range(n):
        x = torch.randn(*shape, generator=g)
        items.append((x, (x[0, -1] > cut).float(), torch.ones(shape[2:], dtype=torch.bool)))
    return items


def _network_objective() -> Any:
    from hpo import NetworkObjective
    from networks.config import ModelConfig

    return NetworkObjective(
        random_tiles(8, 0), random_tiles(4, 1), base_config=ModelConfig.from_params(TINY),
        metric="val_loss", device="cpu",
    )


def _stage(n_trials: int, name: str) -> Any:
    from optuna.distributions import FloatDistribution

    from hpo import Stage

    key = "optim.lr" if name == "network" else "x"
    space = {key: FloatDistribution(1e-4, 1e-2, log=True)}
    return Stage(name, space, defaults={key: 1e-3}, n_random=n_trials, n_bayes=0,
                 sampler="random")


def measure(objective: Any, n_trials: int, runner: Any, label: str, folder: Path) -> dict:
    """Run one stage of ``n_trials`` and time it."""
    return timed_stage(objective, n_trials, runner, label, folder)[0]


def timed_stage(
    objective: Any, n_trials: int, runner: Any, label: str, folder: Path
) -> tuple[dict, Any]:
    """:func:`measure`, also returning the stage's result (its study, for trial attrs)."""
    from hpo import LayerwiseSearch

    tells: list[float] = []
    name = f"{label}-{len(list(folder.iterdir()))}"
    search = LayerwiseSearch(
        [_stage(n_trials, "network" if "network" in label else "empty")],
        objective,
        storage=f"sqlite:///{folder / (name + '.db')}",
        study_name=name,
        runner=runner,
        direction="minimize",
        callbacks=[lambda study, trial: tells.append(time.perf_counter())],
    )
    start = time.perf_counter()
    result = search.run()
    wall = time.perf_counter() - start
    stage = result.stages[0]
    if stage.n_complete != n_trials:
        raise RuntimeError(f"{label}: {stage.n_complete}/{n_trials} trials complete")
    gaps = [b - a for a, b in zip(tells, tells[1:], strict=False)]
    return {
        "trials": n_trials,
        "wall_s": wall,
        "per_trial_s": wall / n_trials,
        "steady_per_trial_s": statistics.median(gaps) if gaps else wall,
        "first_trial_s": tells[0] - start if tells else wall,
    }, stage


def _runner(kind: str) -> Any:
    if kind == "local":
        return "local"
    from hpo.engine.runners.ray.runner import RayRunner

    return RayRunner(cpu=1, max_concurrent=1, reuse_actors=kind == "ray-reuse",
                     log_to_driver=False)


def _markdown(rows: list[dict], setup: dict[str, Any]) -> str:
    lines = [
        f"One stage of sequential trials (max_concurrent=1, cpu=1, 1 torch thread), SQLite "
        f"storage; {setup['cpus']} CPUs ({setup['machine']}), load average "
        f"{setup['load_before']:.1f} before the run; Ray {setup['ray']}, torch "
        f"{setup['torch']}, {setup['date']}. Ray started once in {setup['ray_init_s']:.1f} s "
        f"(not counted below).",
        "",
        "`per trial` = stage wall time / trials (includes the Tune experiment's start and "
        "end and the first worker's start); `steady` = median time between consecutive "
        "trials after the first. Ratios are against the local runner in the same run.",
        "",
        "| objective | runner | trials | first trial (s) | per trial (s) | × local | "
        "steady (s) | × local |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['objective']} | {r['runner']} | {r['trials']} | {r['first_trial_s']:.2f} | "
            f"{r['per_trial_s']:.3f} | {r['per_trial_vs_local']:.1f} | "
            f"{r['steady_per_trial_s']:.3f} | {r['steady_vs_local']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def quiet() -> None:
    """No token for a local Ray instance; only warnings from Optuna and the engine."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("hpo").setLevel(logging.WARNING)


def start_ray(num_cpus: int = 2) -> float:
    """:func:`quiet`, one torch thread in the driver, and a local Ray; returns its start (s).

    Ray is started here, not by each runner, so that every configuration of a benchmark
    shares one instance (as ``hpo tune`` does once per search) and its start is timed
    on its own.
    """
    quiet()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import ray
    import torch

    # The local runner trains in the driver: one thread, like a cpu=1 Ray trial.
    torch.set_num_threads(1)
    start = time.perf_counter()
    ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    return time.perf_counter() - start


def compare(counts: dict[tuple[str, str], int], objectives: dict[str, Any],
            folder: Path) -> list[dict]:
    """Time each ``(objective, runner kind): trials`` in order, with ratios to ``local``.

    Every objective needs a ``local`` and a ``ray-reuse`` entry (the ratios' bases).
    """
    rows = []
    for (objective, kind), n in counts.items():
        print(f"{objective} / {kind}: {n} trials ...", file=sys.stderr, flush=True)
        row = measure(objectives[objective], n, _runner(kind), f"{objective}-{kind}", folder)
        rows.append({"objective": objective, "runner": kind, **row})
    for row in rows:
        local = next(r for r in rows if r["objective"] == row["objective"]
                     and r["runner"] == "local")
        row["per_trial_vs_local"] = row["per_trial_s"] / local["per_trial_s"]
        row["steady_vs_local"] = row["steady_per_trial_s"] / local["steady_per_trial_s"]
        reuse = next(r for r in rows if r["objective"] == row["objective"]
                     and r["runner"] == "ray-reuse")
        row["steady_vs_reuse"] = row["steady_per_trial_s"] / reuse["steady_per_trial_s"]
    return rows


def to_rows(results: list[dict[str, Any]]) -> list[Row]:
    """One row per objective, runner and measure."""
    return melt("ray_runner", results, dataset="", dataset_key="objective", model_key="runner")


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark; write the results unless ``--quick``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_flags(parser, seed=None)
    args = parser.parse_args(argv)
    recorder = Run("ray_runner", results_dir(args))
    load = os.getloadavg()[0]
    ray_init = start_ray()
    import ray
    import torch

    counts = {
        ("empty", "local"): 10 if args.quick else 30,
        ("empty", "ray-reuse"): 10 if args.quick else 30,
        ("empty", "ray-no-reuse"): 3 if args.quick else 6,
        ("network", "local"): 3 if args.quick else 6,
        ("network", "ray-reuse"): 3 if args.quick else 6,
        ("network", "ray-no-reuse"): 2 if args.quick else 4,
    }
    objectives = {"empty": empty_objective, "network": _network_objective()}
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
        rows = compare(counts, objectives, Path(tmp))
    ray.shutdown()
    setup = {
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "ray": ray.__version__,
        "torch": torch.__version__,
        "date": recorder.machine["utc"][:10],
        "ray_init_s": ray_init,
        "load_before": load,
        "quick": args.quick,
    }
    table = _markdown(rows, setup)
    print(table)
    recorder.write(to_rows(rows), settings=setup, markdown=table, title=TITLE)


if __name__ == "__main__":
    main()
