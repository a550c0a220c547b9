"""The paper's Tables 2-4 rerun with ``hpo compare``, one process per (split, variant).

``hpo compare`` runs the variants one after another; on a machine with many cores (or a
GPU) this script runs them side by side, each (split, variant) a job with its own SQLite
storage and results folder under ``--runs``, and merges the jobs into one ``compare.json``
/ ``compare.md`` per study, plus ``benchmarks/results/paper_tables.json`` and ``.md``
(``--out``; a ``--quick`` run writes them only with ``--out``) with the paper's figures
beside (DESIGN.md, quoting the paper's Table 2). A rerun resumes every job where it stopped.

    python -m benchmarks.experiments.paper_tables studies/compare-synthetic.toml --jobs 8
    python -m benchmarks.experiments.paper_tables studies/compare-l4s.toml --quick --jobs 2
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from benchmarks._harness import Row, Run, add_common_flags, results_dir
from hpo.study import ensure_scene, load_study
from hpo.study.compare import CompareSettings, compare_settings, run_compare, split_label
from hpo.study.compare_paired import paired_against
from hpo.study.compare_tables import RESULTS_FILE, paired_lines, save_state, summarize

TITLE = "The paper's comparison (benchmarks/experiments/paper_tables.py)"

# The paper's Table 2 (MIoU, F1, AUC), as DESIGN.md quotes it.
PAPER = {
    "segnet": (0.6901, 0.6654, 0.7139),
    "deeplabv3": (0.7235, 0.7313, 0.7869),
    "pspnet": (0.8053, 0.8211, 0.8137),
    "fusion": (0.8624, 0.8352, 0.8976),
    "optical-only": (0.7532, 0.7289, 0.7841),
    "factors-only": (0.6327, 0.4359, 0.6781),
    "no-temporal": (0.7216, 0.7042, 0.7153),
}
# Longest first, so the pool's tail is short (order of the L4S job times, session 4).
_COST = {"segnet": 0, "hgb": 1, "fusion": 2, "no-pretrain": 3, "optical-only": 4, "no-dbn": 5,
         "factors-only": 6, "no-temporal": 7, "pspnet": 8, "deeplabv3": 9, "untuned": 10}


@dataclasses.dataclass(frozen=True)
class Job:
    """One (split, variant) of one study, in its own folder and storage."""

    study: str
    settings: CompareSettings
    folder: Path
    threads: int
    device: str | None

    @property
    def label(self) -> str:
        return f"{split_label(self.settings.splits[0])}/{self.settings.variants[0]}"


def run_job(job: Job) -> tuple[str, float]:
    """Run one job (in a worker process); returns its label and wall seconds."""
    import torch

    torch.set_num_threads(job.threads)
    spec = load_study(job.study)
    spec = dataclasses.replace(spec, storage=f"sqlite:///{job.folder / 'search.db'}")
    started = time.monotonic()
    run_compare(spec, job.settings, job.folder, device=job.device, say=lambda _: None)
    return job.label, time.monotonic() - started


def jobs_of(study: str, settings: CompareSettings, out: Path, jobs: int,
            device: str | None) -> list[Job]:
    """One job per (split, variant), longest first."""
    threads = max(1, (os.cpu_count() or 1) // max(1, jobs))
    out_jobs = []
    for override in settings.splits:
        for variant in sorted(settings.variants, key=lambda v: _COST.get(v, 0)):
            single = dataclasses.replace(settings, splits=(override,), variants=(variant,))
            folder = out / "jobs" / f"{split_label(override)}-{variant}"
            out_jobs.append(Job(study, single, folder, threads, device))
    return sorted(out_jobs, key=lambda j: _COST.get(j.settings.variants[0], 0))


def merge(study: str, settings: CompareSettings, out: Path) -> dict:
    """Every job's results under ``out`` as one comparison state, written to ``out``.

    Jobs of earlier runs with other variants count too (the variants are not part of a
    comparison's settings), so variants can be added one run at a time.
    """
    spec = load_study(study)
    state: dict[str, Any] = {"format": "landslide-hpo/compare/1", "study": spec.name,
                             "rows": [], "searches": [], "skipped": {}, "ensembles": []}
    for path in sorted((out / "jobs").glob(f"*/{RESULTS_FILE}")):
        part = json.loads(path.read_text(encoding="utf-8"))
        state["rows"] += part["rows"]
        state["searches"] += part["searches"]
        state["ensembles"] += part.get("ensembles", [])
        state["skipped"].update(part["skipped"])
    save_state(out, state, settings)
    return state


def add_wall(out: Path, seconds: float) -> list[float]:
    """Add one invocation's wall seconds to ``out/wall.json``; every invocation's so far.

    A resumed run's record then counts the time its earlier, interrupted invocations
    spent, not only the last one's.
    """
    path = out / "wall.json"
    walls = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []
    walls.append(round(seconds, 1))
    path.write_text(json.dumps(walls) + "\n", encoding="utf-8")
    return walls


def record_of(state: dict[str, Any], study: str, wall: float, jobs: int,
              device: str | None) -> dict[str, Any]:
    """The JSON record of one study: data set, split, model and metric named as keys."""
    import torch

    tables, ensembles = _by_split(state["rows"]), _by_split(state.get("ensembles", []))
    return {
        "dataset": state["study"],
        "study_file": study,
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {jobs} jobs at once",
        "device": device or ("cuda: " + torch.cuda.get_device_name(0)
                             if torch.cuda.is_available() else "cpu"),
        "settings": state["settings"],
        "wall_seconds": round(wall, 1),
        "tuning_seconds": {f"{s['split']}/{s['variant']}": round(s["seconds"], 1)
                           for s in state["searches"]},
        "skipped": state["skipped"],
        "tables": tables,
        "ensemble_tables": ensembles,
        "paper_table2": {k: dict(zip(("miou", "f1", "auc"), v, strict=True))
                         for k, v in PAPER.items()},
        "versions": state.get("versions"),
    }


def _by_split(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``{split: {variant: summary}}`` of runs (or seed ensembles)."""
    tables: dict[str, dict[str, Any]] = {}
    for entry in summarize(rows):
        tables.setdefault(entry["split"], {})[entry["variant"]] = {
            k: v for k, v in entry.items() if k not in ("split", "variant")
        }
    return tables


def to_rows(datasets: dict[str, dict[str, Any]]) -> list[Row]:
    """Per data set, split, variant and metric: mean and std over seeds (and folds), and
    each variant's paired F1 difference against the reference with its interval."""
    rows = []
    for name, rec in datasets.items():
        kinds = {"runs": rec["tables"], "ensembles": rec.get("ensemble_tables", {})}
        cells = [(kind, split, variant, m) for kind, tables in kinds.items()
                 for split, table in tables.items() for variant, m in table.items()]
        for kind, split, variant, m in cells:
            setup = {"split": split, "of": kind, "runs": m["runs"]}
            for metric, stat in ((k, v) for k, v in m.items() if k != "runs"):
                rows += [Row("paper_tables", name, variant, metric, stat["mean"], "", setup),
                         Row("paper_tables", name, variant, f"{metric}_std", stat["std"], "",
                             setup)]  # fmt: skip
        for p in rec.get("paired", []):
            setup = {"split": p["split"], "of": "paired by test tile and seed",
                     "runs": p["runs"], "tiles": p["tiles"]}
            rows += [Row("paper_tables", name, p["variant"],
                         f"f1_vs_{p['reference']}{end}", p[key], "", setup)
                     for key, end in (("mean", ""), ("low", "_low"), ("high", "_high"))]
    return rows


def markdown(datasets: dict[str, dict[str, Any]]) -> str:
    """Every data set's tables beside the paper's figures."""
    lines = ["Test-split metrics, mean ± std over training seeds (and folds); F1 and MIoU "
             "at the threshold chosen on validation. Paper: Li, Han and Li, Table 2, as "
             "DESIGN.md quotes it (their data, not these).", ""]
    for name, rec in datasets.items():
        s = rec["settings"]
        lines += [f"## {name}", "",
                  f"{rec['date']}, {rec['machine']}, {rec['device']}; {s['trials']} "
                  f"evaluations per tuned variant, {s['seeds']} seed(s)"
                  + (f", {s['folds']}-fold CV" if s.get("folds") else "")
                  + f"; wall {rec['wall_seconds'] / 60:.1f} min"
                  + (f" over {rec['invocations']} invocations"
                     if rec.get("invocations", 1) > 1 else "")
                  + f". {rec.get('note', '')}", ""]
        for split, table in rec["tables"].items():
            lines += [f"### split: {split}", "",
                      "| variant | MIoU | F1 | AUC | F1@0.5 | paper MIoU / F1 / AUC |",
                      "|---|---|---|---|---|---|"]
            for variant, m in table.items():
                paper = rec["paper_table2"].get(variant)
                ref = " / ".join(f"{paper[k]:.4f}" for k in ("miou", "f1", "auc")) if paper else ""
                lines.append(f"| {variant} | {_cell(m['miou'])} | {_cell(m['f1'])} | "
                             f"{_cell(m['auc'])} | {_cell(m['f1@0.5'])} | {ref} |")
            lines.append("")
            ensembles = rec.get("ensemble_tables", {}).get(split)
            if ensembles:
                lines += [f"Seed ensembles ({s['seeds']} seeds' probabilities averaged; "
                          "mean ± std over folds):", "",
                          "| variant | MIoU | F1 | AUC | F1@0.5 | ensembles |",
                          "|---|---|---|---|---|---|"]
                lines += [f"| {variant} | {_cell(m['miou'])} | {_cell(m['f1'])} | "
                          f"{_cell(m['auc'])} | {_cell(m['f1@0.5'])} | {m['runs']} |"
                          for variant, m in ensembles.items()]
                lines.append("")
        lines += paired_lines(rec.get("paired", []))
        for variant, reason in rec["skipped"].items():
            lines.append(f"- {variant}: not run ({reason})")
        lines.append("")
    return "\n".join(lines)


def write_results(recorder: Run, records: dict[str, dict[str, Any]]) -> None:
    """``<name>.json`` (merged with other data sets' earlier records) and ``.md``."""
    path = recorder.out / f"{recorder.name}.json" if recorder.out else None
    datasets = (json.loads(path.read_text())["details"]["datasets"]
                if path is not None and path.is_file() else {})
    datasets.update(records)
    recorder.write(to_rows(datasets), details={"datasets": datasets},
                   markdown=markdown(datasets), title=TITLE)


def _cell(stat: dict[str, Any]) -> str:
    return "-" if stat["mean"] is None else f"{stat['mean']:.3f} ± {stat['std']:.3f}"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("studies", nargs="+", metavar="STUDY.toml")
    parser.add_argument("--jobs", type=int, default=2, help="(split, variant) jobs at once")
    parser.add_argument("--variants", nargs="+")
    parser.add_argument("--trials", type=int)
    parser.add_argument("--seeds", type=int)
    add_common_flags(parser, seed=None)  # --quick: hpo compare --quick's budgets
    parser.add_argument("--full", action="store_true", help="hpo compare --full's budgets")
    parser.add_argument("--device", help="cpu or cuda (default: CUDA when available)")
    parser.add_argument("--runs", default="runs/paper-tables", help="jobs' folders")
    parser.add_argument("--name", default="paper_tables",
                        help="results file: <out>/<name>.json, .md (a variant of the run "
                        "kept beside the main record)")
    parser.add_argument("--paired", default="fusion", metavar="VARIANT",
                        help="measure every variant against this one, paired by test tile "
                        "and seed, with a bootstrap interval over both (default: fusion)")
    parser.add_argument("--note", default="",
                        help="recorded with the results, e.g. where earlier runs of the "
                        "resumed jobs ran")
    args = parser.parse_args(argv)
    if args.quick and args.full:
        parser.error("--quick and --full exclude each other")
    recorder = Run(args.name, results_dir(args))
    records = {}
    for study in args.studies:
        spec = load_study(study)
        settings = compare_settings(spec, variants=args.variants, trials=args.trials,
                                    seeds=args.seeds, quick=args.quick, full=args.full)
        ensure_scene(spec)  # once, before the jobs read it
        out = Path(args.runs) / spec.name
        jobs = jobs_of(study, settings, out, args.jobs, args.device)
        print(f"{spec.name}: {len(jobs)} jobs, {args.jobs} at once, "
              f"{jobs[0].threads} threads each")
        started = time.monotonic()
        with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
            futures = {pool.submit(run_job, job): job for job in jobs}
            for future in as_completed(futures):
                try:
                    label, seconds = future.result()
                    print(f"  {label}: {seconds:.0f}s", flush=True)
                except Exception as exc:  # noqa: BLE001 - one failed job must not stop the rest
                    print(f"  {futures[future].label}: FAILED {type(exc).__name__}: {exc}",
                          flush=True)
        state = merge(study, settings, out)
        print((out / "compare.md").read_text())
        walls = add_wall(out, time.monotonic() - started)
        records[spec.name] = record_of(state, study, sum(walls), args.jobs, args.device)
        records[spec.name]["invocations"] = len(walls)
        records[spec.name]["note"] = args.note
        if args.paired in settings.variants:
            records[spec.name]["paired"] = paired_against(
                spec, settings, state["rows"], args.paired,
                lambda label, variant, out=out: out / "jobs" / f"{label}-{variant}")
    write_results(recorder, records)


if __name__ == "__main__":
    main()
