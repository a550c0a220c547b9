"""A markdown report of a layer-wise search, with PNG plots beside it (``hpo report``).

Per stage: trials, best value and parameters, the ledger entry handed to the next stage
and, where cheap, parameter importances; for the search: the improvement over the untuned
defaults and the best value carried through the stages. A run folder of ``hpo train``
adds the test metrics, training curves, ROC curve and confusion matrices of the final
model; a prediction map of ``hpo predict`` (``--map``, or one inside the run folder) adds
its quick-look and a summary line. Without them the report says how to make them.
"""

from __future__ import annotations

import json
import shlex
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import rasterio
from optuna.trial import FrozenTrial, TrialState

from hpo.engine.atomic import write_text
from hpo.engine.errors import HPOError
from hpo.engine.replicates import Gain, gain_text, search_gain, untuned_trial
from hpo.engine.replicates import summary as replicate_summary
from hpo.study.figures import (
    plot_carried,
    plot_confusion,
    plot_importances,
    plot_stages,
    write_quicklook,
)
from hpo.study.files import CHECKPOINT_FILE, METRICS_FILE, THRESHOLD_TAG

# fANOVA fits a random forest per stage; below this many trials its importances are noise.
_MIN_TRIALS_FOR_IMPORTANCE = 4
# `hpo predict` uses 0.5 when the checkpoint carries no validation-chosen threshold.
_DEFAULT_THRESHOLD = 0.5


@dataclass
class MapSummary:
    """A prediction map as the report describes it.

    Attributes:
        path: The GeoTIFF.
        width: Its width in pixels.
        height: Its height in pixels.
        crs: Its CRS as text (``"none"`` without one).
        threshold: The decision threshold (its ``THRESHOLD`` tag, else 0.5).
        from_tag: Whether the threshold came from the map's tag (validation-chosen).
        valid_fraction: Share of pixels with a prediction.
        above_fraction: Share of valid pixels above the threshold.
    """

    path: Path
    width: int
    height: int
    crs: str
    threshold: float
    from_tag: bool
    valid_fraction: float
    above_fraction: float

    def line(self) -> str:
        """Size, CRS and the share of pixels called landslide, in one line."""
        which = "the validation threshold" if self.from_tag else "the default threshold"
        return (
            f"{self.width} x {self.height} px, CRS {self.crs}, "
            f"{100 * self.valid_fraction:.1f} % valid; {100 * self.above_fraction:.2f} % of "
            f"valid pixels above {which} {self.threshold:.3f}."
        )


@dataclass
class Report:
    """What :func:`write_report` wrote.

    Attributes:
        path: The markdown file.
        figures: The PNG files beside it.
        untuned: The untuned defaults' value (first stage, trial 0), or ``None``.
        best: The best value of the search, or ``None``.
        gain: Best over untuned with its uncertainty, or ``None``.
        map: The prediction map included, or ``None``.
    """

    path: Path
    figures: list[Path] = field(default_factory=list)
    untuned: float | None = None
    best: float | None = None
    map: MapSummary | None = None
    gain: Gain | None = None


def untuned_value(result: Any) -> float | None:
    """The untuned defaults' value: trial 0 of the first stage, which measures them.

    Args:
        result: A :class:`~hpo.SearchResult`.

    Returns:
        The value, or ``None`` before it was measured.
    """
    zero = untuned_trial(result)
    return zero.value if zero is not None else None


def report_paths(out: str | Path) -> tuple[Path, str]:
    """The markdown file and the figures' name prefix for ``-o`` (a ``.md`` file or a folder).

    Args:
        out: ``report.md`` (figures ``report-*.png`` beside it) or a folder (``report.md``
            and ``*.png`` inside).

    Returns:
        ``(markdown path, figure prefix)``.
    """
    out = Path(out)
    if out.suffix.lower() == ".md":
        return out, f"{out.stem}-"
    return out / "report.md", ""


def write_report(
    result: Any,
    out: str | Path,
    *,
    metric: str = "value",
    title: str | None = None,
    run_dir: str | Path | None = None,
    map_path: str | Path | None = None,
    target: str = "STUDY.toml",
    scene: str = "SCENE",
    say: Callable[[str], None] | None = None,
) -> Report:
    """Write the markdown report of a search and its plots.

    Args:
        result: The search's :class:`~hpo.SearchResult` (``LayerwiseSearch.status()``).
        out: A ``.md`` file or a folder (see :func:`report_paths`).
        metric: The metric's name, for headings.
        title: The report's title (default: the search's name).
        run_dir: A run folder of ``hpo train`` whose test metrics and plots to include.
        map_path: A prediction GeoTIFF of ``hpo predict`` to include (default: the newest
            ``*.tif`` inside ``run_dir``, if any).
        target: The search as the user names it on the command line, for the commands
            the report suggests (a storage URL must come with its password masked).
        scene: The scene as ``hpo predict --scene`` takes it (a study file, a scene file or
            folder), for the command that makes a missing prediction map.
        say: Where to tell about optional parts left out (importances that failed, ...).

    Returns:
        What was written.

    Raises:
        HPOError: The search has no trial yet, ``run_dir`` holds no ``metrics.json`` or
            ``map_path`` is not a readable GeoTIFF.
    """
    if not any(s.study is not None for s in result.stages):
        raise HPOError(
            f"search {result.study_name!r} has no trial yet (hint: run `hpo tune` first)"
        )
    md, prefix = report_paths(out)
    folder = md.parent
    folder.mkdir(parents=True, exist_ok=True)
    report = Report(md, untuned=untuned_value(result), best=result.best_value,
                    gain=search_gain(result))
    lines = [f"# {title or f'Layer-wise search {result.study_name}'}", ""]
    lines += _overview(result, metric, report)
    lines += _stage_table(result, metric)
    lines += _search_figures(result, metric, folder, prefix, report)
    lines += _importance_section(result, folder, prefix, report, say)
    lines += _model_sections(run_dir, map_path, target, scene, folder, prefix, report, say)
    lines += _best_params(result)
    write_text(md, "\n".join(lines).rstrip() + "\n")
    return report


def _search_figures(
    result: Any, metric: str, folder: Path, prefix: str, report: Report
) -> list[str]:
    """The best value carried through the stages, and each stage's history."""
    maximize = result.direction == "maximize"
    stages = [(s, _complete(s)) for s in result.stages]
    stages = [(s, trials) for s, trials in stages if trials]
    if not stages:
        return []
    carried = plot_carried(
        [(s.name, [t.value for t in trials]) for s, trials in stages], metric, maximize,
        folder / f"{prefix}best-so-far.png",
    )
    per_stage = plot_stages(
        [(s.name, [t.number for t in trials], [t.value for t in trials], _n_random(result, s))
         for s, trials in stages],
        metric, maximize, folder / f"{prefix}stages.png",
    )
    report.figures += [carried, per_stage]
    return [
        "## Best value carried through the stages",
        "",
        f"Every complete trial in run order; the line is the best {metric} so far, and each "
        "stage starts from the incumbent the ledger handed over.",
        "",
        f"![best so far]({carried.name})",
        "",
        "## Optimization history per stage",
        "",
        "Random-search trials (grey) then Bayesian trials (blue); the line is the "
        "stage's best so far.",
        "",
        f"![stages]({per_stage.name})",
        "",
    ]


def _importance_section(
    result: Any, folder: Path, prefix: str, report: Report, say: Callable[[str], None] | None
) -> list[str]:
    """Parameter importances per stage (fANOVA), where there are enough trials."""
    importances = _importances(result, say)
    if not importances:
        return []
    figure = plot_importances(importances, folder / f"{prefix}importance.png")
    report.figures.append(figure)
    lines = [
        "## Parameter importances per stage",
        "",
        "fANOVA (`optuna.importance`) over each stage's complete trials; stages with one "
        f"parameter or fewer than {_MIN_TRIALS_FOR_IMPORTANCE} trials are left out.",
        "",
        "| stage | parameter | importance |",
        "| --- | --- | --- |",
    ]
    for stage, values in importances.items():
        lines += [f"| {stage} | `{k}` | {v:.3f} |" for k, v in values.items()]
    return lines + ["", f"![importances]({figure.name})", ""]


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _params(params: dict[str, Any]) -> str:
    return ", ".join(f"`{k}`={_fmt(v)}" for k, v in params.items()) or "-"


def _overview(result: Any, metric: str, report: Report) -> list[str]:
    done = sum(s.state == "finished" for s in result.stages)
    lines = [
        f"Search `{result.study_name}` in `{result.storage}`: {done}/{len(result.stages)} "
        f"stages finished, {result.direction} validation {metric}.",
        "",
    ]
    best = report.best
    if report.gain is not None:
        lines += [
            f"**Improvement over the untuned defaults:** {report.gain.text(metric)}.",
            "",
            "Both sides are means over their replicates (± one standard error). The best "
            "is the winner of a noisy selection, so its value is optimistic; the gain "
            "that holds on new seeds and the test split is what `hpo train` measures.",
            "",
        ]
    elif best is not None:
        lines += [f"**Best {metric}:** {best:.4f}.", ""]
    return lines


def _stage_table(result: Any, metric: str) -> list[str]:
    lines = [
        "## Stages",
        "",
        f"| # | stage | state | complete / budget | failed | pruned | best {metric} | "
        "best trial | best params | ledger |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    n = len(result.stages)
    for s in result.stages:
        best = s.best_trial
        ledger = (
            f"trial #{s.ledger.trial_number}, {metric} "
            f"{replicate_summary(s.ledger.value, s.ledger.replicates)}"
            + (f", {gain_text(s.ledger.gain)} over the incumbent" if s.ledger.gain else "")
            if s.ledger is not None
            else "not written"
        )
        lines.append(
            f"| {s.index + 1}/{n} | {s.name} | {s.state} | {s.n_complete}/{s.budget} | "
            f"{s.n_fail} | {s.n_pruned} | {_fmt(best.value if best else None)} | "
            f"{f'#{best.number}' if best else '-'} | {_params(best.params) if best else '-'} | "
            f"{ledger} |"
        )
    return lines + [""]


def _best_params(result: Any) -> list[str]:
    lines = ["## Best configuration", "", "| parameter | value |", "| --- | --- |"]
    lines += [f"| `{k}` | {_fmt(v)} |" for k, v in result.best_params.items()]
    return lines + [""]


def _complete(stage: Any) -> list[FrozenTrial]:
    if stage.study is None:
        return []
    trials = stage.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return sorted(trials, key=lambda t: t.number)


def _n_random(result: Any, stage: Any) -> int:
    """The stage's random-search trial count, from the search's stored definition."""
    for entry in result.spec.get("stages", []):
        if isinstance(entry, dict) and entry.get("name") == stage.stage:
            return int(entry.get("n_random", 0))
    return 0


def _importances(result: Any, say: Callable[[str], None] | None) -> dict[str, dict[str, float]]:
    found: dict[str, dict[str, float]] = {}
    for s in result.stages:
        trials = _complete(s)
        names = {k for t in trials for k in t.params}
        if s.study is None or len(names) < 2 or len(trials) < _MIN_TRIALS_FOR_IMPORTANCE:
            continue
        try:
            values = optuna.importance.get_param_importances(s.study)
        except (ValueError, RuntimeError) as exc:  # e.g. every trial at one value
            if say is not None:
                say(f"importances of stage {s.name} left out: {exc}")
            continue
        found[s.name] = {k: float(v) for k, v in values.items()}
    return found


def _model_sections(
    run_dir: str | Path | None,
    map_path: str | Path | None,
    target: str,
    scene: str,
    folder: Path,
    prefix: str,
    report: Report,
    say: Callable[[str], None] | None,
) -> list[str]:
    """The final model's test results and its prediction map, or how to make them.

    A missing part gets one line with the commands that produce it: a report that simply
    lacked these sections would leave a reader unsure whether the model was ever tested.
    """
    run = Path(run_dir) if run_dir is not None else None
    lines = _run_section(run, folder, prefix, report) if run is not None else []
    if run is None:
        parts = (
            "test metrics, ROC curve and confusion matrices"
            if map_path is not None
            else "test metrics, ROC curve, confusion matrices and prediction map"
        )
        lines += [
            "## Final model",
            "",
            "Not included: `hpo export "
            f"{target} -o best.yaml` -> `hpo train best.yaml -o RUN_DIR` -> "
            f"`hpo report {target} --run RUN_DIR` adds the {parts} of the exported model.",
            "",
        ]
    if map_path is None and run is not None:
        map_path = _map_in_run(run, say)
    if map_path is not None:
        lines += _map_section(Path(map_path), folder, prefix, report)
    elif run is not None:
        lines += [
            "## Prediction map",
            "",
            f"Not included: `hpo predict {shlex.quote(str(run / CHECKPOINT_FILE))} --scene "
            f"{scene} -o {shlex.quote(str(run / 'map.tif'))}` writes one that the next "
            "report picks up (or pass `--map`).",
            "",
        ]
    return lines


def _run_section(run_dir: Path, folder: Path, prefix: str, report: Report) -> list[str]:
    try:
        metrics = json.loads((run_dir / METRICS_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise HPOError(
            f"{run_dir / METRICS_FILE}: cannot read ({exc}) (hint: pass a folder written by "
            "`hpo train`)"
        ) from exc
    test = metrics.get("test") or {}
    seeds = metrics.get("seeds") or [metrics.get("seed")]
    trained = f"seed {seeds[0]}" if len(seeds) == 1 else (
        f"a seed ensemble of {len(seeds)} (seeds {', '.join(map(str, seeds))})"
    )
    lines = [
        "## Final model on the test split",
        "",
        f"`hpo train` run `{run_dir}`: model {metrics.get('model')}, trained on "
        f"{metrics.get('train_on')}, {trained}; the test split was never seen during tuning.",
        "",
        "| decision threshold | MIoU | F1 | AUC | TP | FP | FN | TN |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    rows = _threshold_rows(test)
    for name, row in rows:
        c = row.get("confusion") or {}
        lines.append(
            f"| {name} | {_fmt(row.get('miou'))} | {_fmt(row.get('f1'))} | "
            f"{_fmt(row.get('auc'))} | {c.get('tp', '-')} | {c.get('fp', '-')} | "
            f"{c.get('fn', '-')} | {c.get('tn', '-')} |"
        )
    lines.append("")
    files = metrics.get("files") or {}
    curves = _copy_run_plot(run_dir, files.get("curves"), folder, prefix, report)
    if curves is not None:
        lines += [f"![training curves]({curves.name})", ""]
    # ROC and confusion matrices on one line, so a markdown viewer shows them side by side.
    pair = []
    roc = _copy_run_plot(run_dir, files.get("roc"), folder, prefix, report)
    if roc is not None:
        pair.append(f"![ROC curve]({roc.name})")
    confusion = folder / f"{prefix}run-confusion.png"
    if plot_confusion(rows, confusion):
        report.figures.append(confusion)
        pair.append(f"![confusion matrix]({confusion.name})")
    if pair:
        lines += [" ".join(pair), ""]
    return lines


def _threshold_rows(test: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The test metrics at 0.5 and at the validation-chosen threshold, where present."""
    rows = []
    for key, label in (("at_0.5", "0.5"), ("at_threshold", "validation-chosen")):
        row = test.get(key)
        if row:
            name = f"{label} ({row['threshold']:.3f})" if "threshold" in row else label
            rows.append((name, row))
    return rows


def _copy_run_plot(
    run_dir: Path, name: str | None, folder: Path, prefix: str, report: Report
) -> Path | None:
    """Copy a plot of the run beside the report, which then stands alone when moved."""
    if not name or not (run_dir / name).is_file():
        return None
    copy = folder / f"{prefix}run-{name}"
    shutil.copyfile(run_dir / name, copy)
    report.figures.append(copy)
    return copy


def _map_in_run(run_dir: Path, say: Callable[[str], None] | None) -> Path | None:
    """The newest prediction GeoTIFF inside a run folder (e.g. ``hpo predict -o RUN/map.tif``)."""
    # Dot files are the temporary halves of atomic writes still in progress.
    maps = [p for p in run_dir.glob("*.tif") if not p.name.startswith(".")]
    if not maps:
        return None
    newest = max(maps, key=lambda p: p.stat().st_mtime)
    if len(maps) > 1 and say is not None:
        say(f"{len(maps)} maps in {run_dir}; the report shows the newest, {newest.name}")
    return newest


def summarize_map(path: str | Path) -> MapSummary:
    """Size, CRS and the share of pixels above the threshold of a probability GeoTIFF.

    The map is read block by block, so a scene larger than memory still works.

    Args:
        path: A GeoTIFF of ``hpo predict``.

    Returns:
        The summary.

    Raises:
        HPOError: The file cannot be read as a GeoTIFF.
    """
    path = Path(path)
    try:
        with rasterio.open(path) as src:
            tag = src.tags().get(THRESHOLD_TAG)
            threshold = float(tag) if tag is not None else _DEFAULT_THRESHOLD
            n_valid = n_above = 0
            for _, window in src.block_windows(1):
                values = src.read(1, window=window, masked=True).compressed()
                n_valid += values.size
                n_above += int((values > threshold).sum())
            return MapSummary(
                path=path,
                width=src.width,
                height=src.height,
                crs=src.crs.to_string() if src.crs else "none",
                threshold=threshold,
                from_tag=tag is not None,
                valid_fraction=n_valid / max(src.width * src.height, 1),
                above_fraction=n_above / max(n_valid, 1),
            )
    except (rasterio.errors.RasterioError, ValueError) as exc:
        raise HPOError(
            f"{path}: cannot read the prediction map ({exc}) (hint: pass a GeoTIFF written "
            "by `hpo predict`)"
        ) from exc


def _map_section(path: Path, folder: Path, prefix: str, report: Report) -> list[str]:
    summary = summarize_map(path)
    # Drawn afresh into the report's folder: the map's own quick-look may be missing
    # (`--no-quicklook`) or stale, and the report should stand alone when moved.
    look = write_quicklook(
        path, folder / f"{prefix}map.png", summary.threshold if summary.from_tag else None
    )
    report.figures.append(look)
    report.map = summary
    return [
        "## Prediction map",
        "",
        f"`hpo predict` map `{path}`: {summary.line()}",
        "",
        f"![prediction map]({look.name})",
        "",
    ]


__all__ = ["MapSummary", "Report", "report_paths", "summarize_map", "untuned_value", "write_report"]
