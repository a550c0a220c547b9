"""``hpo train``: train an export's best configuration and evaluate it on the test split."""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console

from hpo.cli import _common as common
from hpo.engine.errors import ExportError
from hpo.engine.progress import format_duration, format_value
from hpo.study.files import CHECKPOINT_FILE, METRICS_FILE


def add_parser(subparsers: Any) -> None:
    """Add ``hpo train`` and its arguments."""
    p = common.add_command(
        subparsers,
        "train",
        "train the exported best configuration and evaluate it on the test split",
        "Train the model of an export (`hpo export`) on the training split (or training + "
        "validation), evaluate it once on the test split tuning never saw (MIoU, F1, AUC at "
        "0.5 and at the validation-chosen threshold) and write a run folder: model.pt "
        "(checkpoint), metrics.json, curves.png, roc.png.",
    )
    p.add_argument("export", metavar="BEST.yaml", help="the export file (.yaml or .json)")
    p.add_argument("-o", "--output", metavar="RUN_DIR",
                   help="run folder (default: runs/<search>-<timestamp>)")
    p.add_argument(
        "--train-on",
        choices=("train", "train+val"),
        default="train",
        help="the tiles to fit on (default: train; train+val adds the validation tiles)",
    )
    p.add_argument("--seed", type=int, help="training seed (default: the study's seed)")
    p.add_argument(
        "--members",
        type=int,
        default=1,
        help="train N seeds (SEED, SEED+1, ...) and save them as one ensemble that "
        "averages their probabilities (default: 1, a single model)",
    )
    p.add_argument("--epochs", type=int, help="epochs (default: the exported optim.epochs)")
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: CUDA when available)")
    common.add_allow_outside(p, "the export's cube cache (data.cache_dir)")


def run(args: argparse.Namespace, out: Console, err: Console) -> int:
    """Run ``hpo train``; returns the exit status."""
    # Not at the top: every command imports this module, and these load torch.
    from hpo.study.export import load_export
    from hpo.study.retrain import train_export

    try:
        load_export(args.export)  # a file that is no export is a wrong argument (exit 2)
    except ExportError as exc:
        raise common.UsageError(str(exc)) from exc

    def on_epoch(epoch: int, metrics: dict[str, Any]) -> None:
        shown = ", ".join(
            f"{k} {format_value(metrics.get(k))}" for k in ("train_loss", "val_loss", "f1", "miou")
        )
        out.print(f"epoch {epoch}: {shown}")

    result = train_export(
        args.export,
        args.output,
        train_on=args.train_on,
        seed=args.seed,
        epochs=args.epochs,
        device=args.device,
        say=lambda text: out.print(text, soft_wrap=True),
        on_epoch=on_epoch,
        members=args.members,
        allow_outside=args.allow_outside,
    )
    _print_metrics(result.metrics, result.seconds, out)
    out.print(
        f"wrote {result.run_dir}/: {CHECKPOINT_FILE}, {METRICS_FILE}, curves.png, roc.png",
        soft_wrap=True,
    )
    checkpoint = str(result.checkpoint)
    out.print(
        f"predict with it: [bold]{common.command('hpo', 'predict', checkpoint, '--scene', 'SCENE')}"
        "[/bold]",
        soft_wrap=True,
    )
    return common.EXIT_OK


def _print_metrics(m: dict[str, Any], seconds: float, out: Console) -> None:
    """What was trained and its test-split scores, at 0.5 and at the chosen threshold."""
    seeds = m["seeds"]
    trained = f"seed {m['seed']}" if len(seeds) == 1 else (
        f"ensemble of {len(seeds)}, seeds {seeds[0]}-{seeds[-1]}"
    )
    out.print(
        f"trained {m['model']} on {m['train_on']} in {format_duration(seconds)} "
        f"({trained}); test split ({m['test']['pixels']} valid pixels):"
    )
    chosen = f"{m.get('threshold_source', 'validation')} threshold"
    for key, label in (("at_0.5", "threshold 0.5"), ("at_threshold", chosen)):
        row = m["test"].get(key)
        if row:
            name = f"{label} {row['threshold']:.3f}" if "threshold" in row else label
            out.print(
                f"  {name}: MIoU {format_value(row['miou'])}, F1 {format_value(row['f1'])}, "
                f"AUC {format_value(row['auc'])}"
            )
    tuned = m["tuned"]
    if tuned.get("validation_value") is not None:
        out.print(
            f"  (tuning's best validation {tuned['metric']}: "
            f"{format_value(tuned['validation_value'])})"
        )
