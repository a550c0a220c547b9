"""``hpo tune``: run (or resume) the layer-wise search of a study file."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.table import Table

from hpo import study as st
from hpo.cli import _common as common
from hpo.engine import LayerwiseSearch, SearchResult, StageResult
from hpo.engine.progress import TuneProgress, format_duration, format_params, format_value
from hpo.engine.replicates import search_gain, untuned_trial
from hpo.engine.runners.job import as_two_argument
from hpo.engine.storage import mask_url, probe_storage
from hpo.study.learning import short_training_lines
from hpo.study.schema import StudySpec


def add_parser(subparsers: Any) -> None:
    """Add ``hpo tune`` and its arguments."""
    p = common.add_command(
        subparsers,
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
    common.add_data_path(p)
    common.add_allow_outside(p)


def run(args: argparse.Namespace, out: Console, err: Console) -> int:
    """Run ``hpo tune``; returns the exit status."""
    spec = _load(args)
    if args.dry_run:
        return _dry_run(spec, out)
    _announce(spec, args, out)
    st.ensure_scene(spec, say=lambda text: out.print(text, soft_wrap=True))
    started = time.monotonic()
    tuning = st.prepare_data(spec)
    out.print(
        f"data: {tuning.describe()} (prepared in {time.monotonic() - started:.1f}s)", soft_wrap=True
    )
    thin = tuning.thin_validation(spec.tuning.repeats)
    if thin:
        out.print(f"note: {thin}", soft_wrap=True, markup=False)
    if spec.runner.kind == "local":
        st.set_threads(spec)
    objective = st.make_objective(spec, tuning)
    # The search reports each trial to the live display, which exists only once the
    # search's stored state (read through the search itself) is known.
    progress: list[TuneProgress] = []

    def on_trial(study: Any, trial: Any) -> None:
        if progress:
            progress[0].callback(study, trial)

    search = st.make_search(spec, objective, callbacks=[on_trial])
    if not _reset(search, spec, args, out):
        out.print("nothing deleted")
        return common.EXIT_OK
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
        return common.EXIT_OK
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
    result = _watch(search, display, spec, args, err)
    if result is None:
        return common.EXIT_INTERRUPTED
    _print_summary(out, result, spec, args, time.monotonic() - started)
    return common.EXIT_OK


def _load(args: argparse.Namespace) -> StudySpec:
    """The study file, after the checks of the command line that need it."""
    if args.yes and not args.fresh:
        raise common.UsageError("--yes only confirms --fresh")
    if args.fresh and args.from_stage:
        raise common.UsageError("use either --fresh or --from-stage, not both")
    spec = st.load_study(
        args.study, storage=args.storage, runner=args.runner, data_path=args.data_path,
        allow_outside=args.allow_outside,
    )
    stage_names = st.stage_names(spec)
    if args.from_stage is not None and args.from_stage not in stage_names:
        raise common.UsageError(
            f"--from-stage {args.from_stage!r} is not a stage of "
            f"{spec.name} (hint: use one of {', '.join(stage_names)}; "
            f"`hpo status {args.study}` shows them)"
        )
    return spec


def _announce(spec: StudySpec, args: argparse.Namespace, out: Console) -> None:
    """What is about to run, where it is stored, and how to watch it."""
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
    out.print(f"watch it: [bold]{common.command(*dashboard)}[/bold]", soft_wrap=True)


def _reset(
    search: LayerwiseSearch, spec: StudySpec, args: argparse.Namespace, out: Console
) -> bool:
    """Delete what ``--fresh`` or ``--from-stage`` asks to; ``False`` if the user declined."""
    if args.fresh:
        existing = [s for s in search.status().stages if s.study is not None]
        if existing and not _confirm_fresh(spec, existing, args.yes, out):
            return False
        deleted = search.reset()
        if deleted:
            out.print(f"deleted {len(deleted)} stage studies of {spec.name}")
    elif args.from_stage:
        deleted = search.reset(args.from_stage)
        out.print(
            f"re-tuning from stage {args.from_stage}: deleted "
            f"{', '.join(deleted) if deleted else 'nothing (not started yet)'}"
        )
    return True


def _confirm_fresh(spec: StudySpec, existing: list[StageResult], yes: bool, out: Console) -> bool:
    trials = sum(s.n_complete + s.n_fail + s.n_pruned for s in existing)
    what = (
        f"--fresh deletes {len(existing)} stage studies ({trials} trials) of search "
        f"{spec.name!r} in {mask_url(spec.storage)}"
    )
    if yes:
        return True
    if not sys.stdin.isatty():
        raise common.UsageError(f"{what}; add --yes to confirm")
    answer = out.input(f"{what}. Continue? [y/N] ")
    return answer.strip().lower() in ("y", "yes")


def _watch(
    search: LayerwiseSearch,
    display: TuneProgress,
    spec: StudySpec,
    args: argparse.Namespace,
    err: Console,
) -> SearchResult | None:
    """Run the search under the live display; ``None`` when Ctrl-C stopped it."""
    restore = _install_sigint(display, err) if spec.runner.kind == "local" else None
    try:
        with display:
            return search.run()
    except KeyboardInterrupt:
        if restore is not None:
            restore()
            restore = None
        err.print(
            f"hpo: interrupted; finished trials are stored. Resume with: "
            f"{common.command('hpo', 'tune', *_rerun_args(args))}",
            soft_wrap=True,
        )
        return None
    finally:
        if restore is not None:
            restore()


def _install_sigint(display: TuneProgress, err: Console) -> Callable[[], Any] | None:
    """Make Ctrl-C stop cleanly.

    While a trial trains it stops at once (the engine records the trial as interrupted);
    between trials (sampler, storage writes) it stops before the next trial starts.

    Returns:
        A function restoring the previous handler (``None`` outside the main thread).
    """
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


def _print_summary(
    out: Console, result: SearchResult, spec: StudySpec, args: argparse.Namespace, seconds: float
) -> None:
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
    elif (untuned := untuned_trial(result)) is not None:
        out.print(
            f"untuned defaults (stage {result.stages[0].name}, trial 0): "
            f"{spec.metric} {format_value(untuned.value)}"
        )
    out.print(f"best params: {format_params(result.best_params)}", soft_wrap=True)
    for line in short_training_lines(result, spec.metric):
        out.print(line, soft_wrap=True, markup=False)
    export = ["hpo", "export", args.study, "-o", "best.yaml"] + (
        ["--storage", args.storage] if args.storage else []
    )
    if args.data_path:
        export += ["--data-path", args.data_path]
    for folder in args.allow_outside:
        export += ["--allow-outside", folder]
    out.print(f"export it: [bold]{common.command(*export)}[/bold]", soft_wrap=True)


# --------------------------------------------------------------------------- --dry-run


def _dry_run(spec: StudySpec, out: Console) -> int:
    """Print the plan of ``spec`` after checking its storage and data; trains nothing."""
    plan = st.plan(spec)
    out.print(
        f"study [bold]{plan['study']}[/bold] ({plan['file']}), fingerprint {plan['fingerprint']}",
        soft_wrap=True,
    )
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
    out.print(_replicates_line(plan["tuning"], spec), soft_wrap=True, markup=False)
    out.print(_data_line(spec, plan["data"]), soft_wrap=True)
    for line in st.validation_lines(plan["validation"]):
        out.print(line, soft_wrap=True, markup=False)
    _print_stages(plan, out)
    out.print("dry run: nothing trained, nothing stored")
    return common.EXIT_OK


def _replicates_line(tuning: dict[str, Any], spec: StudySpec) -> str:
    """How a trial is scored, in one line of ``--dry-run``."""
    if tuning["repeats"] == 1:
        return ("trials: one training run each ([tuning] repeats = 3 scores each as the mean "
                "of 3 and measures the noise)")
    # with outer test folds the tuning folds are dealt inside the outer training folds
    nested = (f", dealt outside test fold {spec.data.get('fold', 0)} of {spec.data['folds']}"
              if spec.outer_test_folds else "")
    over = (f"folds (replicate r on fold r % {tuning['folds']}{nested})" if tuning["folds"]
            else "seeds")
    racing = f"raced at z = {tuning['z']:g}" if tuning["racing"] else "not raced"
    most = tuning.get("max_repeats") or tuning["repeats"]
    intensify = (f", up to {most} for the incumbent and close contenders"
                 if most > tuning["repeats"] else "")
    return (f"trials: mean of up to {tuning['repeats']} replicates over {over}{intensify}, "
            f"{racing}" + (", median pruning" if tuning["prune"] else ""))


def _data_line(spec: StudySpec, data: dict[str, Any]) -> str:
    """The data of ``--dry-run``: their files, checked, or the scene tuning will generate."""
    options = ", ".join(
        f"{k} {v}" for k, v in data.items() if k not in ("scene", "scene_exists", "synthetic")
    )
    if data["scene"] is None:
        files = st.check_data(spec)
        return f"data: {len(files)} input files, all present; {options}"
    if data["scene_exists"]:
        files = st.check_data(spec)
        return f"data: {data['scene']} ({len(files)} input files, all present); {options}"
    syn = data["synthetic"]
    return (
        f"data: {data['scene']} does not exist yet; `hpo tune` generates it "
        f"(synthetic {syn['size']} x {syn['size']} px, {syn['n_dates']} dates, "
        f"seed {syn['seed']}); {options}"
    )


def _print_stages(plan: dict[str, Any], out: Console) -> None:
    """The stages of ``--dry-run``: budgets and parameters, then later passes and refine."""
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


def _describe_param(p: dict[str, Any]) -> str:
    if p["type"] == "categorical":
        return f"one of {p['choices']}, default {p['default']!r}"
    scale = " log" if p.get("log") else ""
    step = f" step {p['step']}" if p.get("step") is not None else ""
    return f"{p['type']} [{p['low']}, {p['high']}]{scale}{step}, default {p['default']}"
