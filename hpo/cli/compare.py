"""``hpo compare``: the fusion network, baselines and ablations tuned alike; test tables."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from hpo import study as st
from hpo.cli import _common as common


def add_parser(subparsers: Any) -> None:
    """Add ``hpo compare`` and its arguments."""
    p = common.add_command(
        subparsers,
        "compare",
        "tune the fusion network, baselines and ablations alike; test-split tables",
        "Tune every variant (fusion, SegNet, DeepLabV3, PSPNet, the fusion ablations, the "
        "boosting floor hgb, the untuned network) with the layer-wise engine at the same "
        "number of evaluations, train each best configuration with several seeds and "
        "score it on the test split. Settings come from the study's [compare] table; a "
        "rerun continues where the last stopped.",
    )
    p.add_argument("study", metavar="STUDY.toml", help="the study file")
    p.add_argument("--variants", nargs="+", metavar="NAME",
                   help="variants to run (default: [compare] variants, else the paper's)")
    p.add_argument("--trials", type=int, help="objective evaluations per tuned variant")
    p.add_argument("--seeds", type=int, help="training seeds per best configuration")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--quick", action="store_true",
                        help="10 evaluations and 1 seed per variant: a first look")
    budget.add_argument("--full", action="store_true",
                        help="60 evaluations and 3 seeds per variant (for a GPU machine)")
    p.add_argument("-o", "--out", metavar="DIR",
                   help="results folder (default: runs/compare-<study name>)")
    p.add_argument("--fresh", action="store_true",
                   help="delete these variants' stored searches and results first")
    common.add_storage(p)
    common.add_data_path(p)
    common.add_allow_outside(p)


def run(args: argparse.Namespace, out: Console, err: Console) -> int:
    """Run ``hpo compare``; returns the exit status."""
    # Not at the top: every command imports this module, and compare loads torch and GDAL.
    from hpo.study.compare import compare_settings, run_compare
    from hpo.study.compare_tables import TABLE_FILE

    spec = st.load_study(args.study, storage=args.storage, data_path=args.data_path,
                         allow_outside=args.allow_outside)
    settings = compare_settings(
        spec, variants=args.variants, trials=args.trials, seeds=args.seeds,
        quick=args.quick, full=args.full,
    )
    out_dir = Path(args.out) if args.out else Path("runs") / f"compare-{spec.name}"
    out.print(
        f"compare [bold]{spec.name}[/bold]: {', '.join(settings.variants)}; "
        f"{settings.trials} evaluations and {settings.seeds} seed(s) each; results in "
        f"{out_dir}",
        soft_wrap=True,
    )
    started = time.monotonic()
    try:
        result = run_compare(spec, settings, out_dir, fresh=args.fresh,
                             say=lambda text: out.print(text, soft_wrap=True, highlight=False))
    except KeyboardInterrupt:
        # as `hpo tune`: what is finished is stored, the same command (without --fresh)
        # continues; a trial cut off is recorded as interrupted and runs again
        err.print(
            "hpo: interrupted; finished trials and training runs are stored. Resume with: "
            f"{common.command('hpo', 'compare', *_rerun_args(args))}",
            soft_wrap=True,
        )
        return common.EXIT_INTERRUPTED
    out.print((result.out_dir / TABLE_FILE).read_text(encoding="utf-8"), soft_wrap=True,
              highlight=False, markup=False)
    out.print(f"done in {time.monotonic() - started:.0f}s", soft_wrap=True)
    return common.EXIT_OK


def _rerun_args(args: argparse.Namespace) -> list[str]:
    """The arguments that continue an interrupted ``hpo compare`` (without ``--fresh``)."""
    again = [args.study]
    for flag, value in (("--variants", args.variants), ("--trials", args.trials),
                        ("--seeds", args.seeds), ("-o", args.out),
                        ("--storage", args.storage), ("--data-path", args.data_path)):
        if value:
            again += [flag, *value] if isinstance(value, list) else [flag, str(value)]
    again += ["--quick"] if args.quick else ["--full"] if args.full else []
    for folder in args.allow_outside:
        again += ["--allow-outside", folder]
    return again
