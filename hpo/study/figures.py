"""Figures written as PNG files: matplotlib off-screen, saved atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hpo.engine.atomic import atomic_path


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the file-only Agg back-end (no display on clusters and CI)."""
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


__all__ = ["pyplot", "save_figure"]
