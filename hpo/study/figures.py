"""Figures written as PNG files: matplotlib off-screen, saved atomically.

Every plot of the application is here: training curves and ROC of ``hpo train``, the
quick-look of ``hpo predict``'s map, and the search and test figures of ``hpo report``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from matplotlib.ticker import MaxNLocator
from rasterio.enums import Resampling

from hpo.engine.atomic import atomic_path

_QUICKLOOK_SIDE = 1024


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the file-only Agg back-end (no display on clusters and CI)."""
    # imported on first drawing, not with this module: the back-end must be chosen before
    # pyplot is imported, and a program that imports without drawing keeps its own
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | Path, **savefig: Any) -> Path:
    """Save a figure as PNG atomically and close it.

    Args:
        fig: A matplotlib figure.
        path: The PNG file; missing folders are created.
        **savefig: Passed to ``fig.savefig`` (e.g. ``bbox_inches="tight"``).

    Returns:
        The path written.
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", **savefig)
    pyplot().close(fig)
    return path


def plot_history(epochs: list[dict[str, Any]], path: str | Path) -> Path:
    """Training curves: losses (left) and validation metrics (right) per epoch.

    Args:
        epochs: ``History.epochs``.
        path: The PNG to write (atomically).

    Returns:
        The path.
    """
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6), dpi=120)
    x = [e["epoch"] for e in epochs]
    for key, label in (("train_loss", "train loss"), ("val_loss", "validation loss")):
        left.plot(x, [e.get(key) for e in epochs], marker="o", label=label)
    for ax in (left, right):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    left.set_xlabel("epoch")
    left.set_ylabel("loss (eq. 8)")
    left.legend()
    for key in ("f1", "miou", "auc", "f1_best"):
        values = [e.get(key) for e in epochs]
        if any(v is not None for v in values):
            right.plot(x, [np.nan if v is None else v for v in values], marker="o", label=key)
    right.set_xlabel("epoch")
    right.set_ylabel("validation metric")
    right.set_ylim(0, 1)
    right.legend()
    fig.tight_layout()
    return save_figure(fig, path)


def plot_roc(roc: Mapping[str, Any] | None, path: str | Path) -> Path | None:
    """The test ROC curve (nothing is written when the test split holds one class).

    Args:
        roc: ``{"fpr": [...], "tpr": [...]}`` or ``None``.
        path: The PNG to write (atomically).

    Returns:
        The path, or ``None``.
    """
    if not roc:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4, 4), dpi=120)
    ax.plot(roc["fpr"], roc["tpr"], label="model")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("ROC, test split")
    ax.legend(loc="lower right")
    fig.tight_layout()
    return save_figure(fig, path)


def write_quicklook(tif: str | Path, png: str | Path, threshold: float | None = None) -> Path:
    """A PNG quick-look of a probability map, at most 1024 pixels a side.

    The map is read decimated (block averages), so a map larger than memory still fits.

    Args:
        tif: The probability GeoTIFF.
        png: The PNG to write.
        threshold: Drawn as the colour bar's landslide boundary when given.

    Returns:
        The PNG path.
    """
    plt = pyplot()
    with rasterio.open(tif) as src:
        scale = max(1, math.ceil(max(src.height, src.width) / _QUICKLOOK_SIDE))
        shape = (max(1, src.height // scale), max(1, src.width // scale))
        values = src.read(1, out_shape=shape, masked=True, resampling=Resampling.average)
    fig, ax = plt.subplots(figsize=(6, 6 * shape[0] / shape[1] + 0.6), dpi=150)
    image = ax.imshow(np.ma.masked_invalid(values), cmap="magma", vmin=0.0, vmax=1.0)
    ax.set_axis_off()
    bar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02, label="landslide probability")
    if threshold is not None:
        bar.ax.axhline(threshold, color="cyan", linewidth=1.5)
    ax.set_title(Path(tif).name, fontsize=9)
    return save_figure(fig, png, bbox_inches="tight")


def plot_carried(
    stages: list[tuple[str, list[float]]], metric: str, maximize: bool, path: str | Path
) -> Path:
    """Every complete trial of a search in run order, with the best value so far.

    Args:
        stages: ``(stage name, values of its complete trials in run order)``, in stage
            order, each with one trial at least.
        metric: The metric's name, for the axis.
        maximize: Whether higher is better.
        path: The PNG to write (atomically).

    Returns:
        The path.
    """
    xs, ys, bounds = [], [], []
    for name, values in stages:
        bounds.append((len(xs), name))
        for value in values:
            xs.append(len(xs))
            ys.append(value)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 3.8), dpi=120)
    ax.scatter(xs, ys, s=14, color="tab:blue", alpha=0.6, label="trial")
    ax.step(xs, _running_best(ys, maximize), where="post", color="tab:red", label="best so far")
    for start, name in bounds:
        ax.axvline(start - 0.5, color="grey", linewidth=0.8, linestyle=":")
        ax.text(start, ax.get_ylim()[1], f" {name}", va="top", fontsize=8, color="dimgrey")
    ax.set_xlabel("complete trials, in run order")
    ax.set_ylabel(f"validation {metric}")
    ax.legend(loc="lower right")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_stages(
    stages: list[tuple[str, list[int], list[float], int]],
    metric: str,
    maximize: bool,
    path: str | Path,
) -> Path:
    """One panel per stage: its random (grey) and Bayesian (blue) trials, best so far.

    Args:
        stages: ``(stage name, trial numbers, values, random-search trial count)`` of
            every stage with a complete trial.
        metric: The metric's name, for the axes.
        maximize: Whether higher is better.
        path: The PNG to write (atomically).

    Returns:
        The path.
    """
    cols = min(3, len(stages))
    rows = math.ceil(len(stages) / cols)
    plt = pyplot()
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), dpi=110, squeeze=False)
    for ax, (name, numbers, values, n_random) in zip(axes.flat, stages, strict=False):
        colors = ["grey" if n < n_random else "tab:blue" for n in numbers]
        ax.scatter(numbers, values, c=colors, s=18)
        ax.step(numbers, _running_best(values, maximize), where="post", color="tab:red")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("trial")
        ax.set_ylabel(metric)
    for ax in list(axes.flat)[len(stages) :]:
        ax.set_visible(False)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_importances(importances: Mapping[str, Mapping[str, float]], path: str | Path) -> Path:
    """Parameter importances, one bar chart per stage.

    Args:
        importances: ``{stage: {parameter: importance}}``, most important first.
        path: The PNG to write (atomically).

    Returns:
        The path.
    """
    plt = pyplot()
    n = len(importances)
    fig, axes = plt.subplots(1, n, figsize=(4 * n, 2.8), dpi=110, squeeze=False)
    for ax, (stage, values) in zip(axes.flat, importances.items(), strict=True):
        names = list(values)[::-1]
        ax.barh(names, [values[k] for k in names], color="tab:green")
        ax.set_xlim(0, 1)
        ax.set_title(stage, fontsize=10)
        ax.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_confusion(rows: list[tuple[str, Mapping[str, Any]]], path: str | Path) -> bool:
    """One confusion matrix per decision threshold: counts and the share of each true class.

    Args:
        rows: ``(threshold name, test metrics)``; those without ``confusion`` counts are
            left out.
        path: The PNG to write (atomically).

    Returns:
        Whether a figure was written (not without any confusion counts).
    """
    rows = [(name, row["confusion"]) for name, row in rows if row.get("confusion")]
    if not rows:
        return False
    plt = pyplot()
    fig, axes = plt.subplots(1, len(rows), figsize=(3.6 * len(rows), 3.4), dpi=120, squeeze=False)
    classes = ("landslide", "background")
    for ax, (name, c) in zip(axes.flat, rows, strict=True):
        counts = [[c.get("tp", 0), c.get("fn", 0)], [c.get("fp", 0), c.get("tn", 0)]]
        # Rows normalized to the true class: the colour reads as recall / specificity,
        # which the heavy background class would otherwise wash out.
        shares = [[v / max(sum(r), 1) for v in r] for r in counts]
        ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
        for i, j in ((i, j) for i in range(2) for j in range(2)):
            ax.text(
                j,
                i,
                f"{counts[i][j]}\n{100 * shares[i][j]:.1f} %",
                ha="center",
                va="center",
                fontsize=9,
                color="white" if shares[i][j] > 0.5 else "black",
            )
        ax.set_xticks([0, 1], classes)
        ax.set_yticks([0, 1], classes)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"threshold {name}", fontsize=9)
    fig.suptitle("Confusion matrix, test split", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)
    return True



def _running_best(values: list[float], maximize: bool) -> list[float]:
    best, out = -math.inf if maximize else math.inf, []
    for v in values:
        best = max(best, v) if maximize else min(best, v)
        out.append(best)
    return out


__all__ = [
    "plot_carried",
    "plot_confusion",
    "plot_history",
    "plot_importances",
    "plot_roc",
    "plot_stages",
    "pyplot",
    "save_figure",
    "write_quicklook",
]
