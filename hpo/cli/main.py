"""The ``hpo`` command line.

``hpo tune | status | dashboard | export | train | predict | report | synth | compare``;
every subcommand has ``--help``. Errors a user can cause print one line on stderr
(``hpo: error: ...``, with a hint) and exit non-zero: 2 for a bad command line or a file it
names that is missing or not of its kind (study file, export, checkpoint), 1 otherwise.
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import time
import warnings
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from hpo.engine.storage import mask_url

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def _version() -> str:
    try:
        return version("landslide-hpo")
    except PackageNotFoundError:
        return "unknown"


class UsageError(Exception):
    """A wrong command line (exit status 2)."""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line: ``hpo: error: ... (see --help)``."""

    def error(self, message: str) -> Any:  # noqa: D102 - argparse's hook
        self.exit(EXIT_USAGE, f"hpo: error: {message} (see `{self.prog} --help`)\n")


# --------------------------------------------------------------------------- the parser


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser of the ``hpo`` command."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show tracebacks and the engine's log",
    )
    parser = _Parser(
        prog="hpo",
        description=(
            "Layer-wise hyperparameter optimization (random search, then Bayesian "
            "optimization, stage by stage) for a spatiotemporal fusion network that "
            "recognizes landslides from multi-source, multi-temporal rasters."
        ),
        epilog="Start with: hpo tune studies/quickstart.toml",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and the engine's log")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, help_: str, description: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_, description=description, parents=[common])

    p = add(
        "tune",
        "run (or resume) the layer-wise search of a study file",
        "Run the layer-wise search a study file describes: stage by stage, random "
        "search then Bayesian optimization. Resumes whatever the storage already holds; "
        "Ctrl-C stops cleanly and the next run continues.",
    )
    p.add_argument("study", metavar="STUDY.toml", help="the study file")
    p.add_argument(
        "--runner",
        choices=("local", "ray"),
        help="where trials run (default: the study's [runner] kind)",
    )
    p.add_argument(
        "--storage",
        metavar="URL",
        help="storage URL overriding the study's (sqlite:///f.db, "
        "postgresql://..., redis://..., journal:///f.log)",
    )
    p.add_argument(
        "--fresh",
        action="store_true",
        help="delete this search's stored trials and start over (asks first)",
    )
    p.add_argument("--yes", "-y", action="store_true", help="do not ask before --fresh")
    p.add_argument(
        "--from-stage",
        metavar="NAME",
        help="re-tune this stage and every later one (their trials are deleted)",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="check the study file and data, print the plan, train nothing",
    )
    p.add_argument(
        "--plain", action="store_true", help="one line per trial instead of the live table"
    )
    _add_data_path(p)
    _add_allow_outside(p)
    p.set_defaults(handler=_cmd_tune)

    p = add(
        "status",
        "show a search's stages, trials and best values",
        "Show each stage of a search: trials complete / failed / pruned / running, "
        "best value and parameters, and whether its ledger entry is written.",
    )
    p.add_argument("target", metavar="STUDY.toml|URL", help="a study file or a storage URL")
    p.add_argument(
        "--study", metavar="NAME", help="the search's name (with a URL that holds several searches)"
    )
    p.add_argument("--storage", metavar="URL", help="storage URL overriding the study's")
    p.add_argument("--json", action="store_true", help="print JSON (for scripts)")
    _add_allow_outside(p)
    p.set_defaults(handler=_cmd_status)

    p = add(
        "export",
        "write the best configuration with provenance (YAML or JSON)",
        "Write the merged best configuration of a search (every stage's tuned values, "
        "the full network config, the data section) with its provenance.",
    )
    p.add_argument("study", metavar="STUDY.toml", help="the study file")
    p.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        default="best.yaml",
        help="output file, .yaml or .json (default: best.yaml)",
    )
    p.add_argument("--storage", metavar="URL", help="storage URL overriding the study's")
    _add_data_path(p)
    _add_allow_outside(p)
    p.set_defaults(handler=_cmd_export)

    p = add(
        "dashboard",
        "open a search in optuna-dashboard",
        "Start optuna-dashboard on a search's storage (every stage is a study there) "
        "with its artifact folder. Ctrl-C stops it.",
    )
    p.add_argument("target", metavar="STUDY.toml|URL", help="a study file or a storage URL")
    p.add_argument("--storage", metavar="URL", help="storage URL overriding the study's")
    p.add_argument("--port", type=int, default=8080, help="port (default: 8080)")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0 lets "
        "anyone who can reach it see and edit the studies)",
    )
    p.add_argument(
        "--artifact-dir", metavar="DIR", help="artifact folder (default: the study's `artifacts`)"
    )
    _add_allow_outside(p)
    p.set_defaults(handler=_cmd_dashboard)

    p = add(
        "train",
        "train the exported best configuration and evaluate it on the test split",
        "Train the model of an export (`hpo export`) on the training split (or training + "
        "validation), evaluate it once on the test split tuning never saw (MIoU, F1, AUC at "
        "0.5 and at the validation-chosen threshold) and write a run folder: model.pt "
        "(checkpoint), metrics.json, curves.png, roc.png.",
    )
    p.add_argument("export", metavar="BEST.yaml", help="the export file (.yaml or .json)")
    p.add_argument(
        "-o",
        "--output",
        metavar="RUN_DIR",
        help="run folder (default: runs/<search>-<timestamp>)",
    )
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
    _add_allow_outside(p, "the export's cube cache (data.cache_dir)")
    p.set_defaults(handler=_cmd_train)

    p = add(
        "predict",
        "write a landslide-probability GeoTIFF of a scene with a trained checkpoint",
        "Run a checkpoint of `hpo train` over a whole scene, tile by tile with overlapping "
        "tiles blended, and write a float32 GeoTIFF of landslide probability (the scene's "
        "CRS, transform and size; nodata where the inputs are invalid) plus a PNG quick-look.",
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="model.pt of an `hpo train` run")
    p.add_argument(
        "--scene",
        required=True,
        metavar="DIR|SCENE.toml|STUDY.toml",
        help="the scene: a folder with scene.toml, a scene file, or a study file",
    )
    p.add_argument(
        "-o", "--output", metavar="MAP.tif", default="map.tif", help="output GeoTIFF (map.tif)"
    )
    p.add_argument(
        "--tile", type=int, help="tile side (default: 256, or the training patch when larger)"
    )
    p.add_argument("--overlap", type=int, help="pixels shared by neighbours (default: tile/4)")
    p.add_argument("--batch", type=int, default=8, help="tiles per forward pass (default: 8)")
    p.add_argument("--device", help="cpu, cuda, ... (default: CUDA when available)")
    p.add_argument("--cache-dir", metavar="DIR", help="where the scene's cube is cached")
    p.add_argument("--no-quicklook", action="store_true", help="do not write the PNG")
    p.set_defaults(handler=_cmd_predict)

    p = add(
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
    p.add_argument(
        "-o",
        "--output",
        metavar="report/|REPORT.md",
        default="report",
        help="a folder (report.md and PNGs inside) or a .md file (PNGs beside it); "
        "default: report/",
    )
    p.add_argument("--storage", metavar="URL", help="storage URL overriding the study's")
    p.add_argument("--study", dest="search", metavar="NAME", help="the search's name (with a URL)")
    p.add_argument("--run", metavar="RUN_DIR", help="include this `hpo train` run folder")
    p.add_argument(
        "--map",
        metavar="MAP.tif",
        help="include this `hpo predict` map (default: the newest .tif in RUN_DIR, if any)",
    )
    _add_allow_outside(p)
    p.set_defaults(handler=_cmd_report)

    p = add(
        "synth",
        "write the seeded synthetic landslide scene (GeoTIFFs + scene.toml)",
        "Write a seeded, multi-temporal synthetic scene (optical dates, DEM, geology, "
        "faults, precipitation, landslide labels) and its scene.toml.",
    )
    p.add_argument("out_dir", metavar="OUT_DIR", help="folder to write into")
    p.add_argument("--size", type=int, default=256, help="raster side in pixels (default: 256)")
    p.add_argument("--dates", type=int, default=5, help="optical dates (default: 5)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.set_defaults(handler=_cmd_synth)

    p = add(
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
    p.add_argument("--storage", metavar="URL", help="storage URL overriding the study's")
    _add_data_path(p)
    _add_allow_outside(p)
    p.set_defaults(handler=_cmd_compare)
    return parser


# --------------------------------------------------------------------------- helpers


def _add_data_path(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-path",
        metavar="DIR",
        help="where the data are, replacing the study's [data] path (a data folder) or "
        "scene (a scene file or its folder)",
    )


def _add_allow_outside(
    parser: argparse.ArgumentParser, what: str = "storage, artifacts and cube cache"
) -> None:
    parser.add_argument(
        "--allow-outside",
        action="append",
        default=[],
        metavar="DIR",
        help=f"let the file write its {what} under DIR too (repeatable; by default only "
        "its own folder and the working folder; the environment's HPO_ALLOW_OUTSIDE, "
        "folders separated by ':', adds more)",
    )


def _consoles() -> tuple[Any, Any]:
    from rich.console import Console

    out = Console(highlight=False, soft_wrap=True)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    for console in (out, err):
        if not console.is_terminal:  # logs and pipes: do not cut tables at 80 columns
            console.width = max(console.width, 160)
    return out, err


def _setup_logging(console: Any, debug: bool) -> Any:
    """The engine's warnings (failed trials, ...) through ``console``; INFO with --debug.

    Returns:
        A function that puts the loggers back as they were (``main`` runs in-process in
        tests and notebooks too).
    """
    import optuna
    from rich.logging import RichHandler

    saved_verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.DEBUG if debug else optuna.logging.WARNING)
    notice = _NoGreenletNotice()
    optuna_handlers = list(logging.getLogger("optuna").handlers)
    for optuna_handler in optuna_handlers:
        optuna_handler.addFilter(notice)
    handler = RichHandler(
        console=console, show_path=False, show_time=debug, rich_tracebacks=debug, markup=False
    )
    saved = {}
    for name in ("hpo", "networks", "data"):
        logger = logging.getLogger(name)
        saved[name] = (logger.handlers, logger.level, logger.propagate)
        logger.handlers = [handler]
        logger.setLevel(logging.INFO if debug and name == "hpo" else logging.WARNING)
        logger.propagate = False
    catcher = warnings.catch_warnings()
    catcher.__enter__()
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

    def restore() -> None:
        catcher.__exit__(None, None, None)
        for name, (handlers, level, propagate) in saved.items():
            logger = logging.getLogger(name)
            logger.handlers, logger.propagate = handlers, propagate
            logger.setLevel(level)
        for optuna_handler in optuna_handlers:
            optuna_handler.removeFilter(notice)
        optuna.logging.set_verbosity(saved_verbosity)

    return restore


class _NoGreenletNotice(logging.Filter):
    """Drop Optuna's GP sampler notice about the optional ``greenlet`` package."""

    def filter(self, record: logging.LogRecord) -> bool:  # noqa: D102 - logging's hook
        return "'greenlet' package is unavailable" not in record.getMessage()


def _is_study_file(target: str) -> bool:
    return target.endswith(".toml") or Path(target).is_file()


def _shown(path: str) -> str:
    """A path as the user typed it, quoted for a shell."""
    return shlex.quote(path)


def _command(*words: str) -> str:
    """A command line to show the user, storage passwords masked (echoed commands get shared)."""
    from hpo.engine.storage import mask_url

    return " ".join(shlex.quote(mask_url(w)) for w in words)


def _stage_rows(result: Any) -> list[tuple[str, ...]]:
    from hpo.engine.progress import format_params, format_value
    from hpo.engine.replicates import replicates_of
    from hpo.engine.replicates import summary as replicate_summary

    rows = []
    n = len(result.stages)
    for s in result.stages:
        best = s.best_trial
        value = best.value if best is not None else None
        rows.append(
            (
                f"{s.index + 1}/{n}",
                s.name,
                {"finished": "finished (ledger written)", "open": "open", "pending": "pending"}.get(
                    s.state, s.state
                ),
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


def _print_status(console: Any, result: Any, metric: str) -> None:
    from rich.table import Table

    from hpo.engine.progress import format_params, format_value
    from hpo.engine.replicates import gain_text, search_gain

    console.print(
        f"search [bold]{result.study_name}[/bold] in {result.storage} ({result.direction} {metric})"
    )
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in (
        "#",
        "stage",
        "state",
        "complete",
        "failed",
        "pruned",
        "running",
        f"best {metric}",
        "trial",
        "best params",
    ):
        table.add_column(column, no_wrap=column != "best params")
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


# --------------------------------------------------------------------------- tune


def _cmd_tune(args: argparse.Namespace, out: Any, err: Any) -> int:
    from hpo import study as st

    if args.yes and not args.fresh:
        raise UsageError("--yes only confirms --fresh")
    if args.fresh and args.from_stage:
        raise UsageError("use either --fresh or --from-stage, not both")
    spec = st.load_study(
        args.study, storage=args.storage, runner=args.runner, data_path=args.data_path,
        allow_outside=args.allow_outside,
    )
    stage_names = st.stage_names(spec)
    if args.from_stage is not None and args.from_stage not in stage_names:
        raise UsageError(
            f"--from-stage {args.from_stage!r} is not a stage of "
            f"{spec.name} (hint: use one of {', '.join(stage_names)}; "
            f"`hpo status {args.study}` shows them)"
        )
    if args.dry_run:
        return _dry_run(spec, out)
    st.check_runner(spec.runner)

    dashboard = ["hpo", "dashboard", args.study] + (
        ["--storage", args.storage] if args.storage else []
    )
    plan = st.plan(spec)
    out.print(
        f"study [bold]{spec.name}[/bold] ({args.study}): {len(plan['stages'])} stages, "
        f"{plan['total_trials']} trials, {spec.runner.kind} runner, metric "
        f"{spec.metric}"
    )
    where = st.storage_file(spec.storage)
    out.print(
        f"storage: {mask_url(spec.storage)}"
        + (f"  (file {where})" if where is not None else ""),
        soft_wrap=True,
    )
    out.print(f"watch it: [bold]{_command(*dashboard)}[/bold]", soft_wrap=True)

    st.ensure_scene(spec, say=lambda text: out.print(text, soft_wrap=True))
    started = time.monotonic()
    tuning = st.prepare_data(spec)
    out.print(
        f"data: {tuning.describe()} (prepared in {time.monotonic() - started:.1f}s)", soft_wrap=True
    )
    if spec.runner.kind == "local":
        st.set_threads(spec)
    objective = st.make_objective(spec, tuning)

    from hpo.engine.progress import TuneProgress
    from hpo.engine.runners.job import as_two_argument

    progress: list[TuneProgress] = []

    def on_trial(study: Any, trial: Any) -> None:
        if progress:
            progress[0].callback(study, trial)

    search = st.make_search(spec, objective, callbacks=[on_trial])
    if args.fresh:
        existing = [s for s in search.status().stages if s.study is not None]
        if existing and not _confirm_fresh(spec, existing, args.yes, out):
            out.print("nothing deleted")
            return EXIT_OK
        deleted = search.reset()
        if deleted:
            out.print(f"deleted {len(deleted)} stage studies of {spec.name}")
    elif args.from_stage:
        deleted = search.reset(args.from_stage)
        out.print(
            f"re-tuning from stage {args.from_stage}: deleted "
            f"{', '.join(deleted) if deleted else 'nothing (not started yet)'}"
        )
    before = search.status()
    resumed = sum(s.n_complete for s in before.stages)
    if before.finished:
        # Still run: the engine checks that the stored stages match the study file.
        result = search.run()
        out.print(
            "every stage finished earlier: nothing to run "
            "(re-tune with --fresh or --from-stage NAME)"
        )
        _print_summary(out, result, spec, args, time.monotonic() - started)
        return EXIT_OK
    if resumed:
        done = sum(s.state == "finished" for s in before.stages)
        out.print(
            f"resuming: {done}/{len(before.stages)} stages finished, "
            f"{resumed} complete trials stored"
        )
    display = TuneProgress(
        before,
        console=out,
        metric=spec.metric,
        concurrency=spec.runner.max_concurrent if spec.runner.kind == "ray" else 1,
        live=False if args.plain else None,
    )
    progress.append(display)
    if spec.runner.kind == "local":
        search.objective = display.wrap(as_two_argument(objective))
    restore = _install_sigint(display, err) if spec.runner.kind == "local" else None
    try:
        with display:
            result = search.run()
    except KeyboardInterrupt:
        if restore is not None:
            restore()
            restore = None
        err.print(
            f"hpo: interrupted; finished trials are stored. Resume with: "
            f"{_command('hpo', 'tune', *_rerun_args(args))}",
            soft_wrap=True,
        )
        return EXIT_INTERRUPTED
    finally:
        if restore is not None:
            restore()
    _print_summary(out, result, spec, args, time.monotonic() - started)
    return EXIT_OK


def _install_sigint(display: Any, err: Any) -> Any:
    """Make Ctrl-C stop cleanly.

    While a trial trains it stops at once (the engine records the trial as interrupted);
    between trials (sampler, storage writes) it stops before the next trial starts.

    Returns:
        A function restoring the previous handler (``None`` outside the main thread).
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum: int, frame: Any) -> None:
        if display.request_stop():
            raise KeyboardInterrupt
        err.print("hpo: stopping before the next trial (Ctrl-C again to stop at once)")

    previous = signal.signal(signal.SIGINT, handler)
    return lambda: signal.signal(signal.SIGINT, previous)


def _rerun_args(args: argparse.Namespace) -> list[str]:
    words = [args.study]
    if args.data_path:
        words += ["--data-path", args.data_path]
    if args.runner:
        words += ["--runner", args.runner]
    if args.storage:
        words += ["--storage", args.storage]
    for folder in args.allow_outside:
        words += ["--allow-outside", folder]
    return words


def _confirm_fresh(spec: Any, existing: list[Any], yes: bool, out: Any) -> bool:

    trials = sum(s.n_complete + s.n_fail + s.n_pruned for s in existing)
    what = (
        f"--fresh deletes {len(existing)} stage studies ({trials} trials) of search "
        f"{spec.name!r} in {mask_url(spec.storage)}"
    )
    if yes:
        return True
    if not sys.stdin.isatty():
        raise UsageError(f"{what}; add --yes to confirm")
    answer = out.input(f"{what}. Continue? [y/N] ")
    return answer.strip().lower() in ("y", "yes")


def _print_summary(
    out: Any, result: Any, spec: Any, args: argparse.Namespace, seconds: float
) -> None:
    from rich.table import Table

    from hpo.engine.progress import format_duration, format_params, format_value
    from hpo.engine.replicates import search_gain
    from hpo.study.report import untuned_value

    state = "finished" if result.finished else "stopped"
    out.print(
        f"\n[bold]{state}[/bold] in {format_duration(seconds)}: best {spec.metric} "
        f"[bold]{format_value(result.best_value)}[/bold]"
    )
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("#", "stage", f"best {spec.metric}", "trial", "tuned params"):
        table.add_column(column, no_wrap=column != "tuned params")
    n = len(result.stages)
    for s in result.stages:
        ledger = s.ledger
        table.add_row(
            f"{s.index + 1}/{n}",
            s.name,
            format_value(ledger.value if ledger else None),
            f"#{ledger.trial_number}" if ledger else "-",
            format_params(ledger.params) if ledger else s.state,
        )
    out.print(table)
    gain = search_gain(result)
    if gain is not None:
        out.print(gain.text(spec.metric), soft_wrap=True, markup=False)
    elif (untuned := untuned_value(result)) is not None:
        out.print(
            f"untuned defaults (stage {result.stages[0].name}, trial 0): "
            f"{spec.metric} {format_value(untuned)}"
        )
    out.print(f"best params: {format_params(result.best_params)}", soft_wrap=True)
    export = ["hpo", "export", args.study, "-o", "best.yaml"] + (
        ["--storage", args.storage] if args.storage else []
    )
    if args.data_path:
        export += ["--data-path", args.data_path]
    for folder in args.allow_outside:
        export += ["--allow-outside", folder]
    out.print(f"export it: [bold]{_command(*export)}[/bold]", soft_wrap=True)


def _replicates_line(tuning: dict[str, Any]) -> str:
    """How a trial is scored, in one line of ``--dry-run``."""
    if tuning["repeats"] == 1:
        return ("trials: one training run each ([tuning] repeats = 3 scores each as the mean "
                "of 3 and measures the noise)")
    over = f"folds (replicate r on fold r % {tuning['folds']})" if tuning["folds"] else "seeds"
    racing = f"raced at z = {tuning['z']:g}" if tuning["racing"] else "not raced"
    return (f"trials: mean of up to {tuning['repeats']} replicates over {over}, {racing}"
            + (", median pruning" if tuning["prune"] else ""))


def _dry_run(spec: Any, out: Any) -> int:
    from hpo import study as st
    from hpo.engine.progress import format_params

    plan = st.plan(spec)
    out.print(
        f"study [bold]{plan['study']}[/bold] ({plan['file']}), fingerprint {plan['fingerprint']}",
        soft_wrap=True,
    )
    from hpo.engine.storage import probe_storage

    # Opened as tuning will open it: a wrong server, database or password fails here.
    found = probe_storage(spec.storage)
    out.print(f"storage: {plan['storage']} ({found})", soft_wrap=True)
    out.print(f"artifacts: {plan['artifacts']}", soft_wrap=True)
    runner = plan["runner"]
    resources = f"{runner['cpu']:g} cpu, {runner['gpu']:g} gpu per trial"
    if runner["kind"] == "ray":
        resources += f", {runner['max_concurrent']} at once"
        if runner.get("asha"):
            resources += f", ASHA {runner['asha']}"
        if runner.get("address"):
            resources += f", cluster {runner['address']}"
    out.print(f"runner: {runner['kind']} ({resources})")
    fixed = format_params(plan["model"]["fixed"]) or "none"
    out.print(f"model: {plan['model']['name']}; fixed: {fixed}", soft_wrap=True)
    out.print(
        f"objective: validation {plan['metric']} ({plan['direction']}), seed "
        f"{plan['seed']}, sampler {plan['sampler']}, cycles {plan['cycles']}"
    )
    out.print(_replicates_line(plan["tuning"]), soft_wrap=True, markup=False)
    data = plan["data"]
    options = ", ".join(
        f"{k} {v}" for k, v in data.items() if k not in ("scene", "scene_exists", "synthetic")
    )
    if data["scene"] is not None:
        if data["scene_exists"]:
            files = st.check_data(spec)
            out.print(
                f"data: {data['scene']} ({len(files)} input files, all present); {options}",
                soft_wrap=True,
            )
        else:
            syn = data["synthetic"]
            out.print(
                f"data: {data['scene']} does not exist yet; `hpo tune` generates it "
                f"(synthetic {syn['size']} x {syn['size']} px, {syn['n_dates']} dates, "
                f"seed {syn['seed']}); {options}",
                soft_wrap=True,
            )
    else:
        files = st.check_data(spec)
        out.print(f"data: {len(files)} input files, all present; {options}", soft_wrap=True)
    for line in st.validation_lines(plan["validation"]):
        out.print(line, soft_wrap=True, markup=False)
    out.print(f"stages ({plan['total_trials']} trials in all):")
    for i, stage in enumerate(plan["stages"]):
        extra = f", max_fail {stage['max_fail']}" if stage["max_fail"] else ""
        out.print(
            f"  {i + 1}. {stage['name']}: {stage['n_random']} random + "
            f"{stage['n_bayes']} {stage['sampler']} = {stage['budget']} trials{extra}"
        )
        for name, p in stage["params"].items():
            out.print(f"       {name}: {_describe_param(p)}", soft_wrap=True)
    later = plan["runs"][len(plan["stages"]) :]
    later = [r for r in later if r["name"] != "refine"]
    if later:
        out.print(
            f"  then {plan['cycles'] - 1} more pass(es): "
            + ", ".join(f"{r['name']} ({r['budget']} trials)" for r in later)
        )
    if plan["refine"]:
        out.print(
            f"  {len(plan['stages']) + 1}. refine: {plan['refine']['n_trials']} trials "
            f"over every parameter near the incumbent"
        )
    out.print("dry run: nothing trained, nothing stored")
    return EXIT_OK


def _describe_param(p: dict[str, Any]) -> str:
    if p["type"] == "categorical":
        return f"one of {p['choices']}, default {p['default']!r}"
    scale = " log" if p.get("log") else ""
    step = f" step {p['step']}" if p.get("step") is not None else ""
    return f"{p['type']} [{p['low']}, {p['high']}]{scale}{step}, default {p['default']}"


# --------------------------------------------------------------------------- status


def _resolve_target(args: argparse.Namespace) -> tuple[Any, str, str | None]:
    """(spec or None, storage URL, search name or None) of a STUDY.toml|URL argument."""
    from hpo import study as st
    from hpo.engine.storage import require_stored

    if _is_study_file(args.target):
        spec = st.load_study(
            args.target, storage=args.storage, check_paths=False,
            allow_outside=getattr(args, "allow_outside", ()),
        )
        return spec, spec.storage, spec.name
    if args.storage:
        raise UsageError("--storage goes with a study file; the target already is a URL")
    url = args.target
    if "://" not in url:
        raise UsageError(f"{url!r} is neither a study file (.toml) nor a storage URL")
    require_stored(url)  # reading a search must not create a mistyped path
    return None, url, getattr(args, "study", None)


def _stored_metric(result: Any) -> str:
    """The metric a stored search optimizes, as its stage studies record it, else "value"."""
    from hpo.engine.search import SEARCH_ATTR

    for stage in result.stages:
        study = stage.study
        if study is None:
            continue
        metric = (study.user_attrs.get(SEARCH_ATTR) or {}).get("metric")
        if isinstance(metric, str) and metric:
            return metric
        names = study.metric_names
        if names and names[0]:
            return str(names[0])
    return "value"


def _cmd_status(args: argparse.Namespace, out: Any, err: Any) -> int:
    from hpo import study as st

    spec, url, name = _resolve_target(args)
    if spec is not None:
        result = st.study_status(spec)
        metric = spec.metric
    else:
        result = st.load_search(url, name).status()
        metric = _stored_metric(result)
    if args.json:
        print(json.dumps(st.result_to_dict(result), indent=2))
        return EXIT_OK
    _print_status(out, result, metric)
    if spec is not None:
        for line in st.validation_lines(st.validation_of(spec)):
            out.print(line, soft_wrap=True, markup=False)
    if spec is not None and not st.storage_exists(spec.storage):
        out.print(f"not started yet: run [bold]{_command('hpo', 'tune', args.target)}[/bold]")
    return EXIT_OK


# --------------------------------------------------------------------------- export


def _cmd_export(args: argparse.Namespace, out: Any, err: Any) -> int:
    from hpo import study as st
    from hpo.engine.errors import SearchNotFoundError
    from hpo.study.export import export_best

    spec = st.load_study(
        args.study, storage=args.storage, check_paths=False, data_path=args.data_path,
        allow_outside=args.allow_outside,
    )
    if not st.storage_exists(spec.storage):
        raise SearchNotFoundError(spec.name, mask_url(spec.storage))
    search = st.make_search(spec)
    result = search.status()
    if not any(s.state != "pending" for s in result.stages):
        raise SearchNotFoundError(spec.name, mask_url(spec.storage))
    doc = export_best(result, args.output, spec=spec, data_hash=_data_hash(spec))
    from hpo.engine.progress import format_value

    finished = [s for s in result.stages if s.state == "finished"]
    if not result.finished:
        err.print(
            f"hpo: warning: the search is not finished ({len(finished)}/"
            f"{len(result.stages)} stages); unfinished stages are at their defaults"
        )
    out.print(
        f"wrote {args.output}: best {spec.metric} {format_value(doc['best_value'])} "
        f"({len(finished)}/{len(result.stages)} stages tuned)",
        soft_wrap=True,
    )
    out.print(
        f"train it: [bold]{_command('hpo', 'train', args.output)}[/bold] (final training, "
        "test-split metrics)",
        soft_wrap=True,
    )
    return EXIT_OK


def _data_hash(spec: Any) -> str | None:
    """The prepared cube's hash when its data are at hand (the cube is cached by tune)."""
    from hpo import study as st

    scene = st.scene_file(spec)
    if scene is not None and not scene.is_file():
        return None
    try:
        import data

        return str(data.prepare(st.data_section(spec), spec.base_dir).hash)
    except Exception:  # noqa: BLE001 - provenance only: never fail an export over it
        return None


# --------------------------------------------------------------------------- dashboard


def _cmd_dashboard(args: argparse.Namespace, out: Any, err: Any) -> int:
    from hpo import study as st
    from hpo.engine.errors import SearchNotFoundError
    from hpo.engine.storage import make_artifact_store, make_storage

    spec, url, name = _resolve_target(args)
    if not st.storage_exists(url):
        raise SearchNotFoundError(name or "<any>", mask_url(url))
    artifacts = args.artifact_dir or (str(spec.artifacts) if spec is not None else None)
    try:
        import optuna_dashboard
    except ImportError as exc:
        raise UsageError(
            "optuna-dashboard is not installed (pip install optuna-dashboard)"
        ) from exc
    storage = make_storage(url)
    store = make_artifact_store(artifacts) if artifacts else None
    equivalent = [
        "optuna-dashboard",
        _dashboard_storage_arg(url),
        "--host",
        args.host,
        "--port",
        str(args.port),
    ]
    if artifacts:
        equivalent += ["--artifact-dir", artifacts]
    host = f"[{args.host}]" if ":" in args.host else args.host  # an IPv6 address in a URL
    local = args.host in _LOOPBACK
    out.print(
        f"optuna-dashboard on [bold]http://{host}:{args.port}/[/bold] for "
        f"{mask_url(url)}" + (f" (search {name})" if name else "") + "; Ctrl-C stops it",
        soft_wrap=True,
    )
    out.print(
        f"listening on {args.host} "
        + ("only (this machine; --host 0.0.0.0 exposes it)" if local else "(set by --host)"),
        soft_wrap=True,
    )
    out.print(f"same as: {_command(*equivalent)}", soft_wrap=True)
    if not local:
        err.print(
            f"hpo: warning: listening on {args.host}: anyone who can reach this machine can "
            "see and edit these studies (optuna-dashboard has no login)"
        )
    try:
        optuna_dashboard.run_server(storage, host=args.host, port=args.port, artifact_store=store)
    except KeyboardInterrupt:
        out.print("dashboard stopped")
    except OSError as exc:
        raise OSError(
            f"cannot serve on {args.host}:{args.port}: {exc.strerror or exc} "
            f"(hint: pick another --port)"
        ) from exc
    return EXIT_OK


_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _dashboard_storage_arg(url: str) -> str:
    """The storage as optuna-dashboard's command line takes it (journal -> file path)."""
    if url.startswith("journal://"):
        return url[len("journal://") :]
    return url


# --------------------------------------------------------------------------- train


def _cmd_train(args: argparse.Namespace, out: Any, err: Any) -> int:
    from hpo.engine.errors import ExportError
    from hpo.engine.progress import format_duration, format_value
    from hpo.study.export import load_export
    from hpo.study.retrain import CHECKPOINT_FILE, METRICS_FILE, train_export

    try:
        load_export(args.export)  # a file that is no export is a wrong argument (exit 2)
    except ExportError as exc:
        raise UsageError(str(exc)) from exc

    def on_epoch(epoch: int, metrics: dict[str, Any]) -> None:
        shown = ", ".join(
            f"{k} {format_value(metrics.get(k))}" for k in ("train_loss", "val_loss", "f1", "miou")
        )
        out.print(f"epoch {epoch}: {shown}")

    run = train_export(
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
    m = run.metrics
    seeds = m["seeds"]
    trained = f"seed {m['seed']}" if len(seeds) == 1 else (
        f"ensemble of {len(seeds)}, seeds {seeds[0]}-{seeds[-1]}"
    )
    out.print(
        f"trained {m['model']} on {m['train_on']} in {format_duration(run.seconds)} "
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
    out.print(
        f"wrote {run.run_dir}/: {CHECKPOINT_FILE}, {METRICS_FILE}, curves.png, roc.png",
        soft_wrap=True,
    )
    checkpoint = str(run.checkpoint)
    out.print(
        f"predict with it: [bold]{_command('hpo', 'predict', checkpoint, '--scene', 'SCENE')}"
        "[/bold]",
        soft_wrap=True,
    )
    return EXIT_OK


# --------------------------------------------------------------------------- predict


def _cmd_predict(args: argparse.Namespace, out: Any, err: Any) -> int:
    from data.shift import shifted_channels
    from hpo import study as st
    from hpo.engine.progress import format_duration
    from hpo.study.predict import open_checkpoint, predict_scene
    from networks import CheckpointError

    try:
        checkpoint = open_checkpoint(args.checkpoint)  # before the scene: fail fast
    except CheckpointError as exc:  # a file that is no checkpoint is a wrong argument
        raise UsageError(str(exc)) from exc
    started = time.monotonic()
    scene = Path(args.scene)
    if not (scene / "scene.toml" if scene.is_dir() else scene).is_file():
        # a missing --scene is a wrong argument, as a missing checkpoint (exit 2)
        raise UsageError(
            f"{args.scene}: scene not found (hint: pass a scene folder, scene.toml or study "
            "file)"
        )
    cube = st.open_scene(
        args.scene, cache_dir=args.cache_dir, say=lambda text: out.print(text, soft_wrap=True)
    )
    s, t, h, w = cube.shape
    out.print(
        f"scene {args.scene}: {h} x {w} px, {t} dates, {s} sources "
        f"(prepared in {time.monotonic() - started:.1f}s); model {checkpoint.model_name} on "
        f"{len(checkpoint.source_names)} sources",
        soft_wrap=True,
    )
    result = predict_scene(
        checkpoint,
        cube,
        args.output,
        tile=args.tile,
        overlap=args.overlap,
        batch_size=args.batch,
        device=args.device,
        quicklook=not args.no_quicklook,
        where=f"scene {args.scene}",
    )
    cut = result.threshold if result.threshold is not None else 0.5
    out.print(
        f"wrote {result.path} ({result.shape[0]} x {result.shape[1]} px float32, "
        f"{result.n_tiles} tile{'s' if result.n_tiles != 1 else ''} of {result.tile} px, "
        f"overlap {result.overlap}) in "
        f"{format_duration(result.seconds)} ({result.pixels_per_second / 1e6:.2f} Mpx/s)",
        soft_wrap=True,
    )
    out.print(
        f"valid {100 * result.valid_fraction:.1f} % of the scene; mean probability "
        f"{result.mean_probability:.3f}; {100 * result.landslide_fraction:.2f} % above "
        + (f"the validation threshold {cut:.3f}" if result.threshold is not None else "0.5")
    )
    named = shifted_channels(result.outside_training)
    if named:
        err.print(
            f"[yellow]warning:[/yellow] inputs far outside the training range ({named} of "
            "valid values lie beyond the training 2-98 % range by more than its width): the "
            "model extrapolates there, so read the map there with care (a study's `clip` "
            "bounds how far)",
            soft_wrap=True,
        )
    if result.quicklook is not None:
        out.print(f"quick-look: {result.quicklook}", soft_wrap=True)
    return EXIT_OK


# --------------------------------------------------------------------------- report


def _cmd_report(args: argparse.Namespace, out: Any, err: Any) -> int:
    from hpo import study as st
    from hpo.engine.errors import SearchNotFoundError
    from hpo.study.report import write_report

    target = argparse.Namespace(target=args.study, storage=args.storage, study=args.search,
                                allow_outside=args.allow_outside)
    spec, url, name = _resolve_target(target)
    if spec is not None:
        if not st.storage_exists(spec.storage):
            raise SearchNotFoundError(spec.name, mask_url(spec.storage))
        result, metric = st.study_status(spec), spec.metric
    else:
        result = st.load_search(url, name).status()
        metric = _stored_metric(result)
    # The search as the user named it, for the commands the report suggests; a URL's
    # password must not end up in a file that gets shared.
    named = [mask_url(args.study)] + (["--study", args.search] if args.search else [])
    report = write_report(
        result,
        args.output,
        metric=metric,
        run_dir=args.run,
        map_path=args.map,
        target=_command(*named),
        scene=_command(args.study) if spec is not None else "SCENE",
        say=lambda text: err.print(f"hpo: note: {text}", soft_wrap=True),
    )
    out.print(f"wrote {report.path} and {len(report.figures)} plots:", soft_wrap=True)
    for figure in report.figures:
        out.print(f"  {figure}", soft_wrap=True)
    if report.map is not None:
        out.print(f"map {report.map.path}: {report.map.line()}", soft_wrap=True)
    if report.gain is not None:
        out.print(report.gain.text(metric), soft_wrap=True, markup=False)
    return EXIT_OK


# --------------------------------------------------------------------------- synth


def _cmd_synth(args: argparse.Namespace, out: Any, err: Any) -> int:
    from data.synthetic import generate_scene
    from hpo.study import describe_scene

    if args.size < 16:
        raise UsageError(f"--size {args.size}: use 16 pixels or more")
    if args.dates < 1:
        raise UsageError(f"--dates {args.dates}: use 1 or more")
    try:
        scene = generate_scene(args.out_dir, size=args.size, n_dates=args.dates, seed=args.seed)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    out.print(f"wrote {scene.scene_path}", soft_wrap=True)
    out.print(describe_scene(scene), soft_wrap=True)
    return EXIT_OK


# --------------------------------------------------------------------------- main


def _cmd_compare(args: argparse.Namespace, out: Any, err: Any) -> int:
    from hpo import study as st
    from hpo.study.compare import TABLE_FILE, compare_settings, run_compare

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
        again = [args.study]
        for flag, value in (("--variants", args.variants), ("--trials", args.trials),
                            ("--seeds", args.seeds), ("-o", args.out),
                            ("--storage", args.storage), ("--data-path", args.data_path)):
            if value:
                again += [flag, *value] if isinstance(value, list) else [flag, str(value)]
        again += ["--quick"] if args.quick else ["--full"] if args.full else []
        for folder in args.allow_outside:
            again += ["--allow-outside", folder]
        err.print(
            "hpo: interrupted; finished trials and training runs are stored. Resume with: "
            f"{_command('hpo', 'compare', *again)}",
            soft_wrap=True,
        )
        return EXIT_INTERRUPTED
    out.print((result.out_dir / TABLE_FILE).read_text(encoding="utf-8"), soft_wrap=True,
              highlight=False, markup=False)
    out.print(f"done in {time.monotonic() - started:.0f}s", soft_wrap=True)
    return EXIT_OK


def _exit_status(exc: BaseException) -> int | None:
    """The exit status of an error a user can cause, or ``None`` for a bug."""
    from hpo.engine.errors import HPOError, SpecError

    if isinstance(exc, UsageError | SpecError):
        return EXIT_USAGE
    try:
        from data.errors import DataError, SceneSpecError
    except ImportError:  # pragma: no cover - the data package ships with hpo
        DataError = SceneSpecError = ()  # type: ignore[assignment,misc]  # noqa: N806
    try:
        from networks.errors import ConfigError, NetworksError
    except ImportError:  # pragma: no cover
        ConfigError = NetworksError = ()  # type: ignore[assignment,misc]  # noqa: N806
    if isinstance(exc, SceneSpecError | ConfigError):
        return EXIT_USAGE
    if isinstance(exc, HPOError | DataError | NetworksError | OSError):
        return EXIT_ERROR
    return None


def _one_line(exc: BaseException) -> str:
    from hpo.engine.storage import mask_url

    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, PermissionError) and "hint:" not in text:
        where = f" of {exc.filename}" if exc.filename else ""
        text += (
            f" (hint: check the permissions{where}, or choose a location you may write to "
            "with -o / --storage)"
        )
    return mask_url(text)


def _replay(held: list[warnings.WarningMessage]) -> None:
    """Issue held-back warnings again, through the filters now in force."""
    for w in held:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)


def main(argv: list[str] | None = None) -> int:
    """Run the ``hpo`` command; returns the process exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error already printed
        return int(exc.code or 0) if not isinstance(exc.code, str) else EXIT_USAGE
    if args.command is None:
        parser.print_help()
        return EXIT_OK
    debug = bool(getattr(args, "debug", False))
    out, err = _consoles()
    restore_logging = None
    held: list[warnings.WarningMessage] = []
    try:
        restore_logging = _setup_logging(out, debug)
        # Libraries' warnings (rasterio's NotGeoreferencedWarning, torch's pickle notice,
        # numpy's on NaN) are held back: before a one-line error they are noise that hides
        # it, so they are shown only when the command gets that far (or with --debug).
        with warnings.catch_warnings(record=True) as caught:
            try:
                status = int(args.handler(args, out, err))
            finally:
                held = list(caught)
        _replay(held)
        return status
    except KeyboardInterrupt:
        print("hpo: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `hpo status --json | head`: the reader left, nothing to say
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_ERROR
    except Exception as exc:  # noqa: BLE001 - user errors become one line
        status = _exit_status(exc)
        if status is None or debug:
            _replay(held)
            raise
        print(f"hpo: error: {_one_line(exc)}", file=sys.stderr)
        return status
    finally:
        if restore_logging is not None:
            restore_logging()


if __name__ == "__main__":
    sys.exit(main())
