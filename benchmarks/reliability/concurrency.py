"""Several drivers on one search: N = 2, 4, 8 processes on PostgreSQL and on Redis.

Per (storage, N), ``--repeats`` searches (two stages and a refine stage of the engine
tests' quadratic, every trial sleeping ``--sleep`` s) each run by N driver processes
(``benchmarks/reliability/driver.py``) started at once. The audit
(``benchmarks/reliability/chaos_kit.py``) counts lost, duplicated and corrupt trials and
ledgers; a stage may end over its budget only by trials that were running when it filled
(its barrier), at most N - 1.

Reported per storage and N: searches, lost / duplicated / corrupt (each should be 0),
the most COMPLETE trials a stage had over its budget, whether every driver ended with
the same result (ledgers, best value), how many drivers ran trials, COMPLETE trials and
the median wall time of a search (all drivers' start included).

    python -m benchmarks.reliability.concurrency   # writes benchmarks/results/concurrency.*
    python -m benchmarks.reliability.concurrency --quick --drivers 2 --repeats 1
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks._harness import Row, Run, add_common_flags, results_dir, rows_of
from benchmarks.reliability.chaos import PG_URL, REDIS_URL, objective_key, reachable
from benchmarks.reliability.chaos_kit import Plan, concurrent_search

STORAGES = ("postgres", "redis")


def url_for(kind: str) -> str:
    """A storage URL; Redis gets a key prefix of its own per search."""
    if kind == "postgres":
        return PG_URL
    return f"{REDIS_URL}?prefix=conc-{uuid.uuid4().hex[:8]}"


def run(kind: str, drivers: int, plan: Plan, repeats: int, folder: Path) -> dict[str, Any]:
    """``repeats`` searches of ``drivers`` drivers each on one storage; the summary."""
    lost = duplicated = corrupt = complete = 0
    over, walls, sharing, same, problems = 0, [], [], True, []
    for _ in range(repeats):
        result = concurrent_search(url_for(kind), folder, plan, drivers)
        tally = result["tally"]
        lost += tally.lost
        duplicated += tally.duplicated
        corrupt += tally.corrupt
        complete += tally.complete
        problems += tally.problems
        over = max(over, max(result["over_budget"]))
        walls.append(result["wall_s"])
        sharing.append(result["pids"])
        same = same and all(out == result["outputs"][0] for out in result["outputs"])
        print(f"  {kind} N={drivers}: {result['wall_s']:.1f} s, over budget "
              f"{result['over_budget']}, problems {tally.problems[:3]}", flush=True)
    return {
        "storage": kind,
        "drivers": drivers,
        "searches": repeats,
        "lost": lost,
        "duplicated": duplicated,
        "corrupt": corrupt,
        "max_over_budget": over,
        "allowed_over_budget": drivers - 1,
        "same_result_in_every_driver": same,
        "drivers_that_ran_trials": min(sharing),
        "complete_trials": complete,
        "median_search_s": round(statistics.median(walls), 1),
        "problems": problems[:10],
    }


def to_rows(results: dict[str, Any]) -> list[Row]:
    """One row per storage / objective / N and measure."""
    rows: list[Row] = []
    for key, r in results.items():
        objective = key.split("/")[1]
        values = {k: v for k, v in r.items() if k not in ("storage", "drivers", "problems")}
        values["median_search"] = values.pop("median_search_s")
        rows += rows_of("concurrency", objective, r["storage"], values,
                        {"median_search": "s"}, {"drivers": r["drivers"]})
    return rows


def main(argv: list[str] | None = None) -> None:
    """Run the sweep; write the results unless ``--quick``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drivers", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--storages", nargs="+", default=list(STORAGES), choices=STORAGES)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sleep", type=float, default=0.1, help="seconds per trial")
    add_common_flags(parser, seed=None)
    args = parser.parse_args(argv)
    recorder = Run("concurrency", results_dir(args))

    plan = Plan(n_random=4, n_bayes=6, refine=4, sleep=args.sleep, lease=10.0)
    skipped = {k: why for k in args.storages if (why := reachable(k))}
    started = time.monotonic()
    rows = []
    with tempfile.TemporaryDirectory(prefix="hpo-concurrency-") as tmp:
        for kind in (k for k in args.storages if k not in skipped):
            for drivers in args.drivers:
                rows.append(run(kind, drivers, plan, args.repeats, Path(tmp)))
    wall = time.monotonic() - started
    head = ["storage / objective", "drivers", "searches", "lost", "duplicated", "corrupt",
            "max over budget (allowed)", "same result in every driver",
            "drivers that ran trials (min)", "complete trials", "median search (s)"]
    lines = ["| " + " | ".join(head) + " |", "| --- |" + " ---: |" * (len(head) - 1)]
    for r in rows:
        lines.append("| " + " | ".join(str(v) for v in [
            f"{r['storage']}/{objective_key(plan)}", r["drivers"], r["searches"], r["lost"],
            r["duplicated"], r["corrupt"],
            f"{r['max_over_budget']} ({r['allowed_over_budget']})",
            "yes" if r["same_result_in_every_driver"] else "**no**",
            r["drivers_that_ran_trials"], r["complete_trials"], r["median_search_s"],
        ]) + " |")
    for kind, why in skipped.items():
        lines.append(f"| {kind} | skipped: {why} |" + " |" * (len(head) - 2))
    md = "\n\n".join([
        f"Each search: two stages of {plan.n_random} random + {plan.n_bayes} Bayesian trials "
        f"(TPE) and a refine stage of 1 + {plan.refine}, every trial sleeping "
        f"{plan.sleep:g} s, lease {plan.lease:g} s; N driver processes started at once, "
        f"{args.repeats} searches per row; total {wall:.0f} s.",
        "\n".join(lines),
        "A stage may end over its budget by the trials other drivers were running when it "
        "filled (at most N - 1): they finish and count, they are never cut off. Every "
        "other extra COMPLETE trial, and two COMPLETE trials with equal parameters, count "
        "as duplicated.",
    ]) + "\n"
    print(md)
    results = {f"{r['storage']}/{objective_key(plan)}/N={r['drivers']}": r for r in rows}
    recorder.write(
        to_rows(results),
        settings={"plan": dataclasses.asdict(plan), "repeats": args.repeats},
        details={"wall_s": round(wall, 1), "skipped": skipped,
                 "problems": {k: r["problems"] for k, r in results.items()}},
        markdown=md, title="concurrency: N drivers on one search",
    )

if __name__ == "__main__":
    main()
