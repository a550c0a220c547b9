"""``hpo status``: a search's stages, trials and best values."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.console import Console
from rich.table import Table

from hpo import study as st
from hpo.cli import _common as common
from hpo.engine import SearchResult
from hpo.engine.progress import format_params, format_value
from hpo.engine.replicates import gain_text, replicates_of, search_gain
from hpo.engine.replicates import summary as replicate_summary
from hpo.study.learning import short_training_lines

_STATES = {"finished": "finished (ledger written)", "open": "open", "pending": "pending"}
_COLUMNS = (
    "#", "stage", "state", "complete", "failed", "pruned", "running", "best {metric}",
    "trial", "best params",
)


def add_parser(subparsers: Any) -> None:
    """Add ``hpo status`` and its arguments."""
    p = common.add_command(
        subparsers,
        "status",
        "show a search's stages, trials and best values",
        "Show each stage of a search: trials complete / failed / pruned / running, "
        "best value and parameters, and whether its ledger entry is written.",
    )
    p.add_argument("target", metavar="STUDY.toml|URL", help="a study file or a storage URL")
    p.add_argument(
        "--study", metavar="NAME", help="the search's name (with a URL that holds several searches)"
    )
    common.add_storage(p)
    p.add_argument("--json", action="store_true", help="print JSON (for scripts)")
    common.add_allow_outside(p)


def run(args: argparse.Namespace, out: Console, err: Console) -> int:
    """Run ``hpo status``; returns the exit status."""
    spec, result, metric = common.target_search(args)
    if args.json:
        print(json.dumps(st.result_to_dict(result), indent=2))
        return common.EXIT_OK
    _print_status(out, result, metric)
    if spec is not None:
        for line in st.validation_lines(st.validation_of(spec)):
            out.print(line, soft_wrap=True, markup=False)
    if spec is not None and not st.storage_exists(spec.storage):
        out.print(f"not started yet: run [bold]{common.command('hpo', 'tune', args.target)}[/bold]")
    return common.EXIT_OK


def _stage_rows(result: SearchResult) -> list[tuple[str, ...]]:
    rows = []
    n = len(result.stages)
    for s in result.stages:
        best = s.best_trial
        value = best.value if best is not None else None
        rows.append(
            (
                f"{s.index + 1}/{n}",
                s.name,
                _STATES.get(s.state, s.state),
                f"{s.n_complete}/{s.budget}",
                str(s.n_fail),
                str(s.n_pruned),
                str(s.n_running),
                replicate_summary(value, replicates_of(best)) if best is not None
                else format_value(value),
                f"#{best.number}" if best is not None else "-",
                format_params(best.params) if best is not None else "-",
            )
        )
    return rows


def _print_status(console: Console, result: SearchResult, metric: str) -> None:
    console.print(
        f"search [bold]{result.study_name}[/bold] in {result.storage} ({result.direction} {metric})"
    )
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in _COLUMNS:
        table.add_column(column.format(metric=metric), no_wrap=column != "best params")
    for row in _stage_rows(result):
        table.add_row(*row)
    console.print(table)
    done = sum(s.state == "finished" for s in result.stages)
    console.print(
        f"{done}/{len(result.stages)} stages finished; best {metric} "
        f"{format_value(result.best_value)}"
    )
    console.print(f"best params: {format_params(result.best_params)}", soft_wrap=True)
    gain = search_gain(result)
    if gain is not None:
        console.print(gain.text(metric), soft_wrap=True, markup=False)
    for s in result.stages:
        noise = s.ledger.noise if s.ledger is not None else None
        if noise:
            gained = s.ledger.gain
            console.print(
                f"  {s.name}: noise sd {noise['sd']:.4f} per run ({noise['trials']} trials "
                f"replicated)" + (f"; best {gain_text(gained)} over its incumbent"
                                  if gained else ""),
                soft_wrap=True, markup=False,
            )
    for line in short_training_lines(result, metric):
        console.print(line, soft_wrap=True, markup=False)
