"""Chaos: layer-wise searches whose driver is SIGKILLed at random moments, per storage.

Per storage (SQLite, journal file, PostgreSQL, Redis; a server that is not reachable is
skipped and says so), searches run one after another until the time budget is spent.
Each search (two stages and a refine stage of the engine tests' quadratic, every trial
sleeping ``--sleep`` s) is driven by ``benchmarks/reliability/driver.py``; every life of the driver
is SIGKILLed at a random moment and the driver restarted, until a life completes and
exports the best configuration; then more lives are killed while they export. After
every kill and at the end the harness (``benchmarks/reliability/chaos_kit.py``) audits the
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

    python -m benchmarks.reliability.chaos --minutes 12   # writes benchmarks/results/chaos.*
    python -m benchmarks.reliability.chaos --minutes 1 --quick --storages sqlite
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks._harness import Row, Run, add_common_flags, results_dir, rows_of
from benchmarks.reliability.chaos_kit import Plan, Tally, chaos_search, storage_url

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
REDIS_URL = "redis://127.0.0.1:6379/0"
TITLE = "chaos: SIGKILLed drivers, per storage"
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


COUNTS = ("kills", "lives", "searches", "complete", "lost", "duplicated", "corrupt",
          "unrecorded", "temp_files")


def to_rows(results: dict[str, Any]) -> list[Row]:
    """One row per storage / objective and count (kills per moment as ``kills_at_<moment>``)."""
    rows: list[Row] = []
    for key, r in results.items():
        kind, objective = key.split("/", 1)
        values = {name: r[name] for name in COUNTS}
        values |= {f"kills_at_{m}": n for m, n in sorted(r["moments"].items())}
        values |= {"wall": r["wall_s"], "median_search": r["median_search_s"]}
        rows += rows_of("chaos", objective, kind, values,
                        {"wall": "s", "median_search": "s"}, {"storage": kind})
    return rows


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
    add_common_flags(parser)
    args = parser.parse_args(argv)
    recorder = Run("chaos", results_dir(args))

    plan = Plan(n_random=3, n_bayes=3, refine=3, sleep=args.sleep, lease=1.0)
    skipped = {k: why for k in args.storages if (why := reachable(k))}
    kinds = [k for k in args.storages if k not in skipped]
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
        f"Each search: two stages of {plan.n_random} random + {plan.n_bayes} Bayesian trials "
        f"(TPE) and a refine stage of 1 + {plan.refine}, every trial sleeping {plan.sleep:g} s"
        f", lease {plan.lease:g} s; each driver life killed with SIGKILL uniform(0, "
        f"{args.max_delay:g} s) after its first side-log line (15 % of lives: uniform(0, 2 s)"
        f" after it started), the window growing by half after a life that stored nothing; "
        f"{args.export_kills} more kills per search while a finished search exports. "
        f"{args.minutes:g} min per storage, storages at once; total {wall:.0f} s.",
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
    recorder.write(
        to_rows(results),
        settings={"plan": dataclasses.asdict(plan), "minutes_per_storage": args.minutes,
                  "max_delay_s": args.max_delay, "export_kills": args.export_kills,
                  "seed": args.seed},
        details={"wall_s": round(wall, 1), "skipped": skipped, "totals": totals,
                 "problems": {k: r["problems"] for k, r in results.items()}},
        markdown=md, title=TITLE,
    )

if __name__ == "__main__":
    main()
