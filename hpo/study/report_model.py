"""The final model's part of ``hpo report``: test metrics of an ``hpo train`` run, its map.

A run folder adds the test metrics, training curves, ROC curve and confusion matrices; a
prediction map of ``hpo predict`` adds its quick-look and a summary line. Without them the
report says which commands make them.
"""

from __future__ import annotations

import json
import shlex
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rasterio

from hpo.engine.errors import HPOError
from hpo.study.figures import plot_confusion, write_quicklook
from hpo.study.files import CHECKPOINT_FILE, METRICS_FILE, THRESHOLD_TAG

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


def cell(value: Any) -> str:
    """A value as a table cell: floats to 4 significant digits, ``-`` for none."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def model_sections(
    run_dir: str | Path | None,
    map_path: str | Path | None,
    target: str,
    scene: str,
    folder: Path,
    prefix: str,
    figures: list[Path],
    say: Callable[[str], None] | None,
) -> tuple[list[str], MapSummary | None]:
    """The final model's test results and its prediction map, or how to make them.

    A missing part gets one line with the commands that produce it: a report that simply
    lacked these sections would leave a reader unsure whether the model was ever tested.
    """
    run = Path(run_dir) if run_dir is not None else None
    lines = _run_section(run, folder, prefix, figures) if run is not None else []
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
    summary = None
    if map_path is not None:
        summary = summarize_map(map_path)
        lines += _map_section(summary, folder, prefix, figures)
    elif run is not None:
        lines += [
            "## Prediction map",
            "",
            f"Not included: `hpo predict {shlex.quote(str(run / CHECKPOINT_FILE))} --scene "
            f"{scene} -o {shlex.quote(str(run / 'map.tif'))}` writes one that the next "
            "report picks up (or pass `--map`).",
            "",
        ]
    return lines, summary


def _run_section(run_dir: Path, folder: Path, prefix: str, figures: list[Path]) -> list[str]:
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
            f"| {name} | {cell(row.get('miou'))} | {cell(row.get('f1'))} | "
            f"{cell(row.get('auc'))} | {c.get('tp', '-')} | {c.get('fp', '-')} | "
            f"{c.get('fn', '-')} | {c.get('tn', '-')} |"
        )
    lines.append("")
    files = metrics.get("files") or {}
    curves = _copy_run_plot(run_dir, files.get("curves"), folder, prefix, figures)
    if curves is not None:
        lines += [f"![training curves]({curves.name})", ""]
    # ROC and confusion matrices on one line, so a markdown viewer shows them side by side.
    pair = []
    roc = _copy_run_plot(run_dir, files.get("roc"), folder, prefix, figures)
    if roc is not None:
        pair.append(f"![ROC curve]({roc.name})")
    confusion = folder / f"{prefix}run-confusion.png"
    if plot_confusion(rows, confusion):
        figures.append(confusion)
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
    run_dir: Path, name: str | None, folder: Path, prefix: str, figures: list[Path]
) -> Path | None:
    """Copy a plot of the run beside the report, which then stands alone when moved."""
    if not name or not (run_dir / name).is_file():
        return None
    copy = folder / f"{prefix}run-{name}"
    shutil.copyfile(run_dir / name, copy)
    figures.append(copy)
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


def _map_section(
    summary: MapSummary, folder: Path, prefix: str, figures: list[Path]
) -> list[str]:
    # Drawn afresh into the report's folder: the map's own quick-look may be missing
    # (`--no-quicklook`) or stale, and the report should stand alone when moved.
    look = write_quicklook(
        summary.path, folder / f"{prefix}map.png",
        summary.threshold if summary.from_tag else None,
    )
    figures.append(look)
    return [
        "## Prediction map",
        "",
        f"`hpo predict` map `{summary.path}`: {summary.line()}",
        "",
        f"![prediction map]({look.name})",
        "",
    ]


__all__ = ["MapSummary", "cell", "model_sections", "summarize_map"]
