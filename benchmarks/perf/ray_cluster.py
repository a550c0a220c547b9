"""Trials per hour of the ray runner on a real Ray cluster: 1 node vs 2 nodes.

A Ray cluster on this machine (``ray.cluster_utils.Cluster``: a head node and worker
nodes as separate raylets, as ``ray start --head`` / ``ray start --address`` start them
on several machines), one CPU per node, in a Ray folder of its own (``RAY_TMPDIR``).
The driver joins it with ``address`` (as ``[runner] address`` or ``RAY_ADDRESS`` do) and
runs one stage of short trials, ``cpu = 1`` per trial, so the runner fits as many trials
at once as the cluster has nodes:

- ``1 node``: the head node alone (the reference);
- ``2 nodes``: the head node and one worker node.

The trials are a fixed amount of CPU work each: a seeded least-squares fit by SGD (a
fixed number of steps, one torch thread), so a trial costs the same wherever it runs.
Per configuration: trials per hour over the stage's wall time (Tune's experiment start
and the workers' start included: what a short stage gets), in steady state (from the
completion of the first ``concurrent`` trials to the last), the median trial time, the
trials per node (``ray:node_id``), and the ratio to ``1 node``.

The cluster's nodes share this machine's cores with whatever else runs on it; the load
averages before and after are recorded, and 2 nodes can at most double the rate when
two cores are free.

    python -m benchmarks.perf.ray_cluster            # writes benchmarks/results/ray_cluster.*
    python -m benchmarks.perf.ray_cluster --quick    # fewer trials; prints the table only
"""

from __future__ import annotations

import argparse
import collections
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._harness import Row, Run, add_common_flags, melt, results_dir

DATASET = "seeded-regression-512x64"
METHOD = "ray runner, sgd least squares (fixed steps)"
METRIC = "trials_per_hour"
STEPS = 4000  # ~2.5 s of one core per trial on an idle machine
BASE = "1 node"
TITLE = "ray runner on a multi-node Ray cluster: trials per hour, 1 node vs 2 nodes"


class FixedWork:
    """A trial of fixed CPU work: SGD on a seeded least-squares problem (one thread)."""

    def __init__(self, steps: int) -> None:
        self.steps = steps

    def __call__(self, params: dict[str, Any], trial: Any) -> float:
        import torch

        torch.set_num_threads(1)
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(512, 64, generator=generator)
        y = x @ torch.randn(64, 1, generator=generator)
        w = torch.zeros(64, 1, requires_grad=True)
        optimizer = torch.optim.SGD([w], lr=params["lr"])
        for _ in range(self.steps):
            optimizer.zero_grad()
            loss = ((x @ w - y) ** 2).mean()
            loss.backward()
            optimizer.step()
        return float(loss.detach())


def _steady_rate(completed: list[float], concurrent: int) -> float:
    if len(completed) <= concurrent:
        return float("nan")
    return 3600 * (len(completed) - concurrent) / (completed[-1] - completed[concurrent - 1])


def run_config(name: str, address: str, nodes: int, trials: int, steps: int,
               folder: Path) -> dict[str, Any]:
    """One stage of ``trials`` trials on the cluster as it is now."""
    from optuna.distributions import FloatDistribution

    from hpo import LayerwiseSearch, Stage
    from hpo.engine.runners.ray.runner import RayRunner
    from hpo.engine.runners.ray.searcher import NODE_ATTR

    print(f"{name}: {trials} trials ...", file=sys.stderr, flush=True)
    stage = Stage("fit", {"lr": FloatDistribution(1e-3, 1e-2, log=True)},
                  defaults={"lr": 3e-3}, n_random=trials, n_bayes=0, sampler="random")
    label = name.replace(" ", "-")
    runner = RayRunner(cpu=1, address=address, storage_path=folder / f"tune-{label}",
                       log_to_driver=False)
    search = LayerwiseSearch([stage], FixedWork(steps), study_name=label,
                             storage=f"sqlite:///{folder / (label + '.db')}",
                             direction="minimize", runner=runner)
    start = time.perf_counter()
    result = search.run()
    wall = time.perf_counter() - start
    done = [t for t in result.stages[0].study.trials if t.datetime_complete is not None]
    if result.stages[0].n_complete != trials:
        raise RuntimeError(f"{name}: {result.stages[0].n_complete}/{trials} trials complete")
    completed = sorted(t.datetime_complete.timestamp() for t in done)
    per_node = collections.Counter(t.user_attrs.get(NODE_ATTR, "?") for t in done)
    return {
        "config": name,
        "nodes": nodes,
        "cpu_per_node": 1,
        "cpu_per_trial": 1,
        "concurrent": nodes,
        "trials": trials,
        "wall_s": wall,
        "trials_per_hour": 3600 * trials / wall,
        "steady_trials_per_hour": _steady_rate(completed, nodes),
        "median_trial_s": statistics.median(
            (t.datetime_complete - t.datetime_start).total_seconds() for t in done
        ),
        "trials_per_node": sorted(per_node.values(), reverse=True),
    }


def _autogroup() -> bool | None:
    """Whether the kernel shares CPU time between sessions first (Linux autogroup)."""
    try:
        return Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() == "1"
    except OSError:
        return None


def _markdown(rows: list[dict], setup: dict[str, Any]) -> str:
    load = "/".join(f"{x:.1f}" for x in setup["load_before"])
    load_after = "/".join(f"{x:.1f}" for x in setup["load_after"])
    base = next(r for r in rows if r["config"] == BASE)
    lines = [
        f"A Ray cluster on this machine (`ray.cluster_utils.Cluster`, separate raylets), "
        f"1 CPU per node, joined by the driver with `address`; `cpu = 1` per trial. Trials: "
        f"{setup['method']} on `{setup['dataset']}`, {setup['steps']} steps each (fixed "
        f"work, one torch thread). Cluster start {setup['cluster_start_s']:.1f} s, worker "
        f"node start {setup['node_start_s']:.1f} s (not counted). {setup['cpus']} CPUs "
        f"({setup['machine']}) shared with other work: load average (1/5/15 min) {load} "
        f"before and {load_after} after; Ray {setup['ray']}, torch {setup['torch']}, "
        f"{setup['date']}; total {setup['total_s']:.0f} s.",
        "",
        "`trials/h` = trials / stage wall time (Tune's start and the workers' start "
        "included); `steady` = from the completion of the first `concurrent` trials to the "
        "last; `median trial` = a trial's start in Optuna to its end; `per node` = trials "
        "each node ran (`ray:node_id`). Ratios are against `1 node`.",
        "",
        "| config | nodes | concurrent | trials | wall (s) | trials/h | × 1 node | "
        "steady trials/h | × 1 node | median trial (s) | per node |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['config']} | {r['nodes']} | {r['concurrent']} | {r['trials']} | "
            f"{r['wall_s']:.1f} | {r['trials_per_hour']:.0f} | "
            f"{r['trials_per_hour'] / base['trials_per_hour']:.2f} | "
            f"{r['steady_trials_per_hour']:.0f} | "
            f"{r['steady_trials_per_hour'] / base['steady_trials_per_hour']:.2f} | "
            f"{r['median_trial_s']:.2f} | {' + '.join(map(str, r['trials_per_node']))} |"
        )
    two = next(r for r in rows if r["config"] == "2 nodes")
    lines += [
        "",
        f"2 nodes vs 1: **{two['trials_per_hour'] / base['trials_per_hour']:.2f}×** "
        f"trials/h ({two['steady_trials_per_hour'] / base['steady_trials_per_hour']:.2f}× "
        f"steady).",
    ]
    if setup.get("sched_autogroup"):
        lines += [
            "",
            "The kernel here shares CPU time between sessions before processes (autogroup) "
            "and other sessions kept the 2 cores busy: these ratios are what a busy shared "
            "machine gives; two machines, or idle cores, give more.",
        ]
    return "\n".join(lines) + "\n"


def to_rows(results: list[dict], ratios: dict[str, float]) -> list[Row]:
    """Per configuration and measure (trials per node in ``setup``), and the ratios."""
    rows = melt("ray_cluster", results, dataset=DATASET, model_key="config",
                setup_keys=("nodes", "cpu_per_node", "cpu_per_trial", "concurrent",
                            "trials_per_node"))  # fmt: skip
    return rows + [Row("ray_cluster", DATASET, "ratios", k, v) for k, v in ratios.items()]


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark; write the results unless ``--quick``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_flags(parser, seed=None)  # --quick: 6 shorter trials per configuration
    args = parser.parse_args(argv)
    recorder = Run("ray_cluster", results_dir(args))
    trials, steps = (6, STEPS // 4) if args.quick else (24, STEPS)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import logging

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("hpo").setLevel(logging.WARNING)
    import ray
    import torch
    from ray.cluster_utils import Cluster

    start = time.perf_counter()
    load_before = os.getloadavg()
    # A Ray folder of its own: `ray.init()` elsewhere on this machine never finds it.
    ray_dir = tempfile.mkdtemp(prefix="hporb", dir="/tmp")
    os.environ["RAY_TMPDIR"] = ray_dir
    cluster = Cluster(initialize_head=True,
                      head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.wait_for_nodes()
    cluster_start = time.perf_counter() - start
    try:
        with tempfile.TemporaryDirectory(prefix="bench-ray-cluster-") as tmp:
            folder = Path(tmp)
            rows = [run_config(BASE, cluster.address, 1, trials, steps, folder)]
            node_start = time.perf_counter()
            cluster.add_node(num_cpus=1)
            cluster.wait_for_nodes()
            node_start = time.perf_counter() - node_start
            rows.append(run_config("2 nodes", cluster.address, 2, trials, steps, folder))
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(ray_dir, ignore_errors=True)
    base = rows[0]
    ratios = {
        "two_vs_one_node": rows[1]["trials_per_hour"] / base["trials_per_hour"],
        "two_vs_one_node_steady": rows[1]["steady_trials_per_hour"]
        / base["steady_trials_per_hour"],
    }
    setup = {
        "dataset": DATASET,
        "method": METHOD,
        "steps": steps,
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "ray": ray.__version__,
        "torch": torch.__version__,
        "date": recorder.machine["utc"][:10],
        "cluster_start_s": cluster_start,
        "node_start_s": node_start,
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "sched_autogroup": _autogroup(),
        "total_s": time.perf_counter() - start,
        "quick": args.quick,
    }
    table = _markdown(rows, setup)
    print(table)
    recorder.write(to_rows(rows, ratios), settings=setup, markdown=table, title=TITLE)


if __name__ == "__main__":
    main()
