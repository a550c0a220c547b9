"""``hpo report``: a markdown report of a search with PNG plots."""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console

from hpo.cli import _common as common
from hpo.engine.storage import mask_url


def add_parser(subparsers: Any) -> None:
    """Add ``hpo report`` and its arguments."""
    p = common.add_command(
        subparsers,
        "report",
        "write a markdown report of a search with PNG plots",
        "Write a markdown report of a search: per stage trials, best value and parameters "
        "and the ledger entry, the improvement over the untuned defaults, the best value "
        "carried through the stages, optimization history and parameter importances per "
        "stage; with --run, the test metrics, training curves, ROC curve and confusion "
        "matrices of an `hpo train` run, and its prediction map (--map, or a map.tif that "
        "`hpo predict` wrote into the run folder).",
    )
    p.add_argument("study", metavar="STUDY.toml|URL", help="a study file or a storage URL")
    p.add_argument("-o", "--output", metavar="report/|REPORT.md", default="report",
                   help="a folder (report.md and PNGs inside) or a .md file (PNGs beside "
                   "it); default: report/")
    common.add_storage(p)
    p.add_argument("--study", dest="search", metavar="NAME", help="the search's name (with a URL)")
    p.add_argument("--run", metavar="RUN_DIR", help="include this `hpo train` run folder")
    p.add_argument(
        "--map",
        metavar="MAP.tif",
        help="include this `hpo predict` map (default: the newest .tif in RUN_DIR, if any)",
    )
    common.add_allow_outside(p)


def run(args: argparse.Namespace, out: Console, err: Console) -> int:
    """Run ``hpo report``; returns the exit status."""
    # Not at the top: every command imports this module, and the report loads matplotlib, GDAL.
    from hpo.study.report import write_report

    target = argparse.Namespace(target=args.study, storage=args.storage, study=args.search,
                                allow_outside=args.allow_outside)
    spec, result, metric = common.target_search(target, started=True)
    # The search as the user named it, for the commands the report suggests; a URL's
    # password must not end up in a file that gets shared.
    named = [mask_url(args.study)] + (["--study", args.search] if args.search else [])
    report = write_report(
        result,
        args.output,
        metric=metric,
        run_dir=args.run,
        map_path=args.map,
        target=common.command(*named),
        scene=common.command(args.study) if spec is not None else "SCENE",
        say=lambda text: err.print(f"hpo: note: {text}", soft_wrap=True),
    )
    out.print(f"wrote {report.path} and {len(report.figures)} plots:", soft_wrap=True)
    for figure in report.figures:
        out.print(f"  {figure}", soft_wrap=True)
    if report.map is not None:
        out.print(f"map {report.map.path}: {report.map.line()}", soft_wrap=True)
    if report.gain is not None:
        out.print(report.gain.text(metric), soft_wrap=True, markup=False)
    return common.EXIT_OK
