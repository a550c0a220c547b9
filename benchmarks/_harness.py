"""What every benchmark shares: its common flags, a machine record and one result schema.

A benchmark builds :class:`Row` objects (one measured number each) and hands them to
:meth:`Run.write`, which writes ``<out>/<name>.json`` and ``<out>/<name>.md``
(``out`` is ``benchmarks/results`` unless ``--out`` says otherwise). The JSON record::

    {"schema": "benchmarks/1", "name": ..., "command": "python -m benchmarks...",
     "machine": {utc, cpu_count, load_before, load_after, python, platform, versions,
                 gpu, git_commit, git_dirty},
     "settings": {...},                       # the run's flags and fixed choices
     "rows": [{"benchmark", "dataset", "model", "metric", "value", "unit", "setup"}],
     "details": {...}}                        # what is not one number (curves, logs)

``value`` is one number (or a bool, a string, ``None`` for "not measured"); ``setup`` is
a dict of what else tells this row from its neighbours (budget, seed, storage, ...).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SCHEMA = "benchmarks/1"
ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
ROW_KEYS = ("benchmark", "dataset", "model", "metric", "value", "unit", "setup")
PACKAGES = ("torch", "optuna", "ray")

Value = float | int | bool | str | None


@dataclass(frozen=True)
class Row:
    """One measured number.

    Args:
        benchmark: The benchmark (and part) that measured it, e.g. ``"networks"``.
        dataset: The data it was measured on (a data set, a test problem, a storage).
        model: What was measured (a network, a method, a runner, a configuration).
        metric: What the number is, e.g. ``"pixels_per_s"``.
        value: The number (a bool or string where the measure is one; ``None``: not run).
        unit: Its unit (``""`` for counts and ratios).
        setup: What else tells this row from its neighbours.
    """

    benchmark: str
    dataset: str
    model: str
    metric: str
    value: Value
    unit: str = ""
    setup: dict[str, Any] = field(default_factory=dict)


def rows_of(
    benchmark: str,
    dataset: str,
    model: str,
    values: Mapping[str, Value],
    units: Mapping[str, str] | None = None,
    setup: Mapping[str, Any] | None = None,
) -> list[Row]:
    """One row per metric of a wide record (metric -> value), in the record's order."""
    units = units or {}
    return [
        Row(benchmark, dataset, model, metric, value, units.get(metric, ""), dict(setup or {}))
        for metric, value in values.items()
    ]


UNIT_SUFFIXES = (("_ms_per_trial", "ms/trial"), ("_per_hour", "1/h"), ("_mb_s", "MB/s"),
                 ("_mib", "MiB"), ("_mb", "MB"), ("_ms", "ms"), ("_px", "px"), ("_s", "s"))


def unit_of(metric: str) -> str:
    """The unit a metric's name ends with (``wall_s``: ``s``); ``""`` for the rest."""
    return next((unit for end, unit in UNIT_SUFFIXES if metric.endswith(end)), "")


def melt(
    benchmark: str,
    records: Iterable[Mapping[str, Any]],
    *,
    dataset: str,
    model_key: str,
    setup_keys: Sequence[str] = (),
    dataset_key: str | None = None,
) -> list[Row]:
    """Wide records (one dict per measured thing) as rows: one per scalar metric.

    Args:
        benchmark: The rows' benchmark.
        records: The wide records.
        dataset: The rows' data set (unless ``dataset_key`` names a record key for it).
        model_key: The record key that names the model.
        setup_keys: Record keys that go to ``setup`` rather than become metrics.
        dataset_key: A record key for the data set.

    Units come from the metric names (:func:`unit_of`); lists and dicts are left out
    (a benchmark keeps them in its ``details``).
    """
    rows = []
    skip = {model_key, dataset_key, *setup_keys}
    for rec in records:
        setup = {k: rec[k] for k in setup_keys if k in rec}
        where = str(rec[dataset_key]) if dataset_key else dataset
        rows += [
            Row(benchmark, where, str(rec[model_key]), k, v, unit_of(k), setup)
            for k, v in rec.items()
            if k not in skip and (v is None or isinstance(v, float | int | bool | str))
        ]
    return rows


def add_common_flags(parser: argparse.ArgumentParser, *, seed: int | None = 0) -> None:
    """``--quick``, ``--out DIR`` and (unless ``seed`` is None) ``--seed N``."""
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a short check of the script (minutes at most); writes only with --out",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"folder for <name>.json and <name>.md (default: {RESULTS.relative_to(ROOT)}; "
        "none with --quick)",
    )
    if seed is not None:
        parser.add_argument("--seed", type=int, default=seed, help=f"base seed (default {seed})")


def results_dir(args: argparse.Namespace) -> Path | None:
    """Where this run writes: ``--out``, else ``benchmarks/results``; None for a quick check."""
    if args.out is not None:
        return args.out
    return None if args.quick else RESULTS


def load_average() -> list[float]:
    """The 1-, 5- and 15-minute load averages, rounded."""
    return [round(x, 2) for x in os.getloadavg()]


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def _gpu() -> str | None:
    # nvidia-smi rather than torch.cuda: the record must not start CUDA (or import torch).
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        done = subprocess.run(
            [smi, "--query-gpu=name,memory.total", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=30, check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return "; ".join(line.strip() for line in done.stdout.splitlines() if line.strip()) or None


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine() -> dict[str, Any]:
    """This machine and its load now (``load_after`` is added when the run writes)."""
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "load_before": load_average(),
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "versions": {name: _version(name) for name in PACKAGES},
        "gpu": _gpu(),
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": None if status is None else bool(status),
    }


def markdown_table(rows: Iterable[Row]) -> str:
    """Every row as one line of a markdown table (setup as ``key=value`` pairs)."""
    lines = ["| benchmark | dataset | model | metric | value | unit | setup |",
             "|---|---|---|---|---:|---|---|"]  # fmt: skip
    for r in rows:
        value = f"{r.value:.4g}" if isinstance(r.value, float) else str(r.value)
        setup = ", ".join(f"{k}={v}" for k, v in r.setup.items())
        lines.append(
            f"| {r.benchmark} | {r.dataset} | {r.model} | {r.metric} | {value} | {r.unit} "
            f"| {setup} |"
        )
    return "\n".join(lines)


def machine_line(record: Mapping[str, Any]) -> str:
    """The markdown line that says where, when and from which commit a record comes."""
    m = record["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in m.get("versions", {}).items() if v)
    load = "/".join(str(x) for x in m.get("load_before") or []) or "?"
    after = "/".join(str(x) for x in m.get("load_after") or []) or "?"
    commit = (m.get("git_commit") or "?")[:10] + (" (dirty)" if m.get("git_dirty") else "")
    gpu = f", GPU {m['gpu']}" if m.get("gpu") else ""
    return (
        f"{m.get('utc', '?')}, {m.get('cpu_count', '?')} CPU cores{gpu}, load {load} before "
        f"and {after} after; {versions}; git {commit}. Command: `{record.get('command', '?')}`."
    )


def write_record(
    out: Path,
    name: str,
    rows: Sequence[Row],
    *,
    machine: Mapping[str, Any],
    command: str,
    settings: Mapping[str, Any] | None = None,
    details: Mapping[str, Any] | None = None,
    markdown: str | None = None,
    title: str | None = None,
) -> Path:
    """Write ``out/<name>.json`` and ``out/<name>.md``; the JSON path.

    The markdown is a title, the machine line, then ``markdown`` (the benchmark's own
    tables) or, without it, every row in one table.
    """
    record = {
        "schema": SCHEMA,
        "name": name,
        "command": command,
        "machine": dict(machine),
        "settings": dict(settings or {}),
        "rows": [asdict(r) for r in rows],
        "details": dict(details or {}),
    }
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    path.write_text(json.dumps(record, indent=1, default=str) + "\n")
    body = markdown if markdown is not None else markdown_table(rows)
    head = f"# {title or name}\n\n{machine_line(record)}\n\n"
    (out / f"{name}.md").write_text(head + body.rstrip("\n") + "\n")
    return path


class Run:
    """One run of a benchmark: the machine record taken at its start, the writer at its end.

    Args:
        name: The results' file name (``<name>.json``, ``<name>.md``).
        out: Where to write; ``None``: nowhere (a quick check prints only).
    """

    def __init__(self, name: str, out: Path | None) -> None:
        self.name = name
        self.out = out
        self.machine = machine()
        self.command = "python -m " + " ".join(
            [_module_of(sys.argv[0]), *sys.argv[1:]] if sys.argv and sys.argv[0] else ["?"]
        )

    def write(
        self,
        rows: Sequence[Row],
        *,
        settings: Mapping[str, Any] | None = None,
        details: Mapping[str, Any] | None = None,
        markdown: str | None = None,
        title: str | None = None,
    ) -> Path | None:
        """Write the results (with the load average now) unless this run writes nowhere."""
        if self.out is None:
            return None
        path = write_record(
            self.out, self.name, rows,
            machine={**self.machine, "load_after": load_average()}, command=self.command,
            settings=settings, details=details, markdown=markdown, title=title,
        )  # fmt: skip
        print(f"wrote {path} and {path.with_suffix('.md').name}")
        return path


def _module_of(script: str) -> str:
    """``benchmarks.perf.networks`` for ``.../benchmarks/perf/networks.py`` (else as given)."""
    path = Path(script).resolve()
    try:
        parts = path.with_suffix("").relative_to(ROOT).parts
    except ValueError:
        return script
    return ".".join(parts)
