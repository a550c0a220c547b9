"""Atomic file writes: a reader sees the old file or the whole new one, never a half file.

Run folders, reports and prediction maps are read by other programs (GIS, optuna-dashboard,
a second ``hpo`` command) while they may still be written; a crash mid-write must not leave
a truncated file behind under the final name.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` that replaces it when the block succeeds.

    The temporary file keeps ``path``'s suffix, so writers that pick a format by the
    extension (matplotlib, rasterio) still do.

    Args:
        path: The final file; missing parent folders are created.

    Yields:
        The temporary path to write to.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent
    )
    try:
        # mkstemp makes the file 0600 whatever the umask, and the rename keeps that mode;
        # outputs are for others too (a GIS server, a colleague): give them the mode a
        # plain open() would.
        os.fchmod(fd, 0o666 & ~_umask())
    finally:
        os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    """The process's umask, read without changing it where the system allows."""
    try:
        for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    # elsewhere the only way to read it is to set it (briefly: the old value goes back)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) atomically.

    Args:
        path: The file.
        text: Its content.

    Returns:
        The path written.
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
    return path


def write_json(path: str | Path, doc: Any) -> Path:
    """Write ``doc`` as indented JSON atomically (non-JSON values as strings).

    Args:
        path: The file.
        doc: JSON-able data.

    Returns:
        The path written.
    """
    return write_text(path, json.dumps(doc, indent=2, default=str) + "\n")


__all__ = ["atomic_path", "write_json", "write_text"]
