"""A markdown report of a layer-wise search, with PNG plots beside it (``hpo report``).

Per stage: trials, best value and parameters, the ledger entry handed to the next stage
and, where cheap, parameter importances; for the search: the improvement over the untuned
defaults and the best value carried through the stages. A run folder of ``hpo train``
adds the test metrics, training curves, ROC curve and confusion matrices of the final
model; a prediction map of ``hpo predict`` (``--map``, or one inside the run folder) adds
its quick-look and a summary line (:mod:`hpo.study.report_model`). Without them the
report says how to make them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpo.engine.atomic import write_text
from hpo.engine.errors import HPOError
from hpo.engine.replicates import Gain, gain_text, search_gain, untuned_trial
from hpo.engine.replicates import summary as replicate_summary
from hpo.study.figures import plot_carried, plot_importances, plot_stages
from hpo.study.learning import short_training_lines
from hpo.study.report_model import MapSummary, cell, model_sections

# fANOVA fits a random forest per stage; below this many trials its importances are noise.
_MIN_TRIALS_FOR_IMPORTANCE = 4


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
    model, report.map = model_sections(run_dir, map_path, target, scene, folder, prefix,
                                       report.figures, say)
    lines += model
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


def _params(params: dict[str, Any]) -> str:
    return ", ".join(f"`{k}`={cell(v)}" for k, v in params.items()) or "-"


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
    short = short_training_lines(result, metric)
    if short:
        lines += ["**Training may be too short:**", ""]
        lines += [f"- {line.strip().removeprefix('warning: ')}" for line in short] + [""]
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
            f"{s.n_fail} | {s.n_pruned} | {cell(best.value if best else None)} | "
            f"{f'#{best.number}' if best else '-'} | {_params(best.params) if best else '-'} | "
            f"{ledger} |"
        )
    return lines + [""]


def _best_params(result: Any) -> list[str]:
    lines = ["## Best configuration", "", "| parameter | value |", "| --- | --- |"]
    lines += [f"| `{k}` | {cell(v)} |" for k, v in result.best_params.items()]
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


__all__ = ["Report", "report_paths", "untuned_value", "write_report"]
