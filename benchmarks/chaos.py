"""Chaos: layer-wise searches whose driver is SIGKILLed at random moments, per storage.

Per storage (SQLite, journal file, PostgreSQL, Redis; a server that is not reachable is
skipped and says so), searches run one after another until the time budget is spent.
Each search (two stages and a refine stage of the engine tests' quadratic, every trial
sleeping ``--sleep`` s) is driven by ``tests/hpo/_driver.py``; every life of the driver
is SIGKILLed at a random moment and the driver restarted, until a life completes and
exports the best configuration; then more lives are killed while they export. After
every kill and at the end the harness (``tests/reliability/_chaos.py``) audits the
storage, the side log of evaluations and the export file.

Reported per storage and objective: kills survived, driver lives, searches completed,
COMPLETE trials, **lost**, **duplicated** and **corrupt** (each should be 0), evaluations
that finished while their driver was killed before storing them (``unrecorded``: work
a kill loses by nature, not a lost trial), half-written export files left beside the
export (never under its name) and the kills by moment (what the driver was doing, from
its side log: ``startup`` (imports, storage, waiting for orphaned trials), ``trial``,
``tell`` (objective returned, outcome not yet stored), ``between-trials``, ``stage-end``
(ledger write, next stage), ``export``, ``exit``). Storages run at once, one thread
each: the drivers mostly sleep.

    python -m benchmarks.chaos --minutes 12      # writes benchmarks/results/chaos.*
    python -m benchmarks.chaos --minutes 1 --quick --storages sqlite
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import random
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.reliability._chaos import Plan, Tally, chaos_search, storage_url  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
REDIS_URL = "redis://127.0.0.1:6379/0"
STORAGES = ("sqlite", "journal", "postgres", "redis")
PORTS = {"postgres": 5432, "redis": 6379}


def reachable(kind: str) -> str | None:
    """``None`` when the storage can be used, else why not."""
    if kind not in PORTS:
        return None
    try:
        with socket.create_connection(("127.0.0.1", PORTS[kind]), timeout=1):
            return None
    except OSError as exc:
        return f"no server at 127.0.0.1:{PORTS[kind]} ({exc})"


def objective_key(plan: Plan) -> str:
    """The objective's name in the results: the quadratic, its sleep and budgets."""
    return (f"quadratic-sleep{plan.sleep:g}s-budget{'+'.join(map(str, plan.budgets()))}")


def run_storage(kind: str, plan: Plan, seconds: float, seed: int, folder: Path,
                max_delay: float, export_kills: int) -> dict[str, Any]:
    """Searches on one storage until ``seconds`` are spent; the summed tally."""
    rng = random.Random(seed)
    total = Tally()
    started = time.monotonic()
    walls = []
    while time.monotonic() - started < seconds:
        url = storage_url(kind, folder, pg_url=PG_URL, redis_url=REDIS_URL)
        began = time.monotonic()
        tally = chaos_search(url, folder, rng, plan, max_delay=max_delay,
                             export_kills=export_kills)
        walls.append(time.monotonic() - began)
        total.add(tally)
        print(f"  {kind}: search {total.searches} done in {walls[-1]:.0f} s, "
              f"{tally.kills} kills; total {total.kills} kills, lost {total.lost}, "
              f"duplicated {total.duplicated}, corrupt {total.corrupt}", flush=True)
    record = total.to_dict()
    record["wall_s"] = round(time.monotonic() - started, 1)
    record["median_search_s"] = round(sorted(walls)[len(walls) // 2], 1) if walls else None
    return record


def table(results: dict[str, Any], skipped: dict[str, str]) -> str:
    """The markdown table of the results."""
    moments = sorted({m for r in results.values() for m in r["moments"]})
    head = ["storage / objective", "kills", "lives", "searches", "complete trials", "lost",
            "duplicated", "corrupt", "unrecorded", "temp files", "wall (s)"] + moments
    lines = ["| " + " | ".join(head) + " |", "| --- |" + " ---: |" * (len(head) - 1)]
    for key, r in results.items():
        row = [key, r["kills"], r["lives"], r["searches"], r["complete"], r["lost"],
               r["duplicated"], r["corrupt"], r["unrecorded"], r["temp_files"], r["wall_s"]]
        row += [r["moments"].get(m, 0) for m in moments]
        lines.append("| " + " | ".join(str(v) for v in row) + " |")
    for kind, why in skipped.items():
        lines.append(f"| {kind} | skipped: {why} |" + " |" * (len(head) - 2))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Run the chaos benchmark; write the results unless ``--quick``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=12.0,
                        help="time budget per storage (storages run at once)")
    parser.add_argument("--storages", nargs="+", default=list(STORAGES), choices=STORAGES)
    parser.add_argument("--sleep", type=float, default=0.2, help="seconds per trial")
    parser.add_argument("--max-delay", type=float, default=1.5,
                        help="kill window after a life's first side-log line (s)")
    parser.add_argument("--export-kills", type=int, default=2,
                        help="kills of export-only lives per finished search")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="print only, write nothing")
    args = parser.parse_args(argv)

    plan = Plan(n_random=3, n_bayes=3, refine=3, sleep=args.sleep, lease=1.0)
    skipped = {k: why for k in args.storages if (why := reachable(k))}
    kinds = [k for k in args.storages if k not in skipped]
    load_before = os.getloadavg()
    results: dict[str, Any] = {}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="hpo-chaos-") as tmp:

        def work(index: int, kind: str) -> None:
            folder = Path(tmp) / kind
            folder.mkdir()
            results[f"{kind}/{objective_key(plan)}"] = run_storage(
                kind, plan, args.minutes * 60, args.seed * 100 + index, folder,
                args.max_delay, args.export_kills,
            )

        threads = [threading.Thread(target=work, args=(i, k)) for i, k in enumerate(kinds)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    wall = time.monotonic() - started
    results = {k: results[k] for k in sorted(results)}
    totals = {name: sum(r[name] for r in results.values())
              for name in ("kills", "lives", "searches", "complete", "lost", "duplicated",
                           "corrupt", "unrecorded")}
    md = "\n\n".join([
        "# chaos: SIGKILLed drivers, per storage",
        f"Each search: two stages of {plan.n_random} random + {plan.n_bayes} Bayesian trials "
        f"(TPE) and a refine stage of 1 + {plan.refine}, every trial sleeping {plan.sleep:g} s"
        f", lease {plan.lease:g} s; each driver life killed with SIGKILL uniform(0, "
        f"{args.max_delay:g} s) after its first side-log line (15 % of lives: uniform(0, 2 s)"
        f" after it started), the window growing by half after a life that stored nothing; "
        f"{args.export_kills} more kills per search while a finished search exports. "
        f"{args.minutes:g} min per storage, storages at once; {os.cpu_count()} CPUs "
        f"({platform.machine()}), load average {load_before[0]:.1f}/{load_before[1]:.1f}/"
        f"{load_before[2]:.1f} before and {os.getloadavg()[0]:.1f} after; "
        f"{datetime.date.today()}; total {wall:.0f} s.",
        table(results, skipped),
        f"Total: **{totals['kills']} kills** survived over {totals['searches']} searches "
        f"({totals['complete']} COMPLETE trials): **{totals['lost']} lost, "
        f"{totals['duplicated']} duplicated, {totals['corrupt']} corrupt**; "
        f"{totals['unrecorded']} evaluations finished by a driver killed before it stored "
        f"them (re-run as new trials, never counted twice).",
        "`lost`: a trial seen COMPLETE (after a kill, or told COMPLETE in the side log) and "
        "not COMPLETE with the same value later. `duplicated`: one trial evaluated twice, "
        "two COMPLETE trials with the same parameters, two incumbents, or a stage over its "
        "budget. `corrupt`: an export that is not a whole valid file after a kill; a ledger "
        "that differs from the one recomputed from the stored trials (ties: lowest trial "
        "number) or that changed once written; an incumbent that is not the previous "
        "stage's ledger entry; a COMPLETE trial without an evaluation. `temp files`: "
        "the most half-written `.<export>.*.tmp.yaml` files found beside an export at once "
        "(its own name always held a whole file).",
    ]) + "\n"
    print(md)
    if not args.quick:
        RESULTS.mkdir(exist_ok=True)
        record = {
            "benchmark": "chaos",
            "date": str(datetime.date.today()),
            "settings": {"plan": dataclasses.asdict(plan), "minutes_per_storage": args.minutes,
                         "max_delay_s": args.max_delay, "export_kills": args.export_kills,
                         "seed": args.seed},
            "machine": {"cpus": os.cpu_count(), "load_before": load_before,
                        "load_after": os.getloadavg()},
            "wall_s": round(wall, 1),
            "results": results,
            "skipped": skipped,
            "totals": totals,
        }
        (RESULTS / "chaos.json").write_text(json.dumps(record, indent=2) + "\n")
        (RESULTS / "chaos.md").write_text(md)


if __name__ == "__main__":
    main()
