"""Where a cube's arrays live while it is built: in memory, or .npy files written by offset."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CubeWriter", "load_arrays", "META_FILE"]

META_FILE = "meta.json"
_ARRAYS = ("dynamic", "static", "valid", "labels")


class _NpyFile:
    """A C-order .npy file written strip by strip with ``pwrite``.

    Unlike a writable memmap, dirty pages stay in the page cache rather than in this
    process's resident memory, so building a cube larger than RAM keeps a small footprint.
    """

    def __init__(self, path: Path, shape: tuple[int, ...], dtype: np.dtype[Any]) -> None:
        self.shape = shape
        self.dtype = np.dtype(dtype)
        header = np.lib.format.open_memmap(path, mode="w+", dtype=self.dtype, shape=shape)
        self.offset = header.offset
        del header  # the file now has its header and a sparse body of the right length
        self.fd = os.open(path, os.O_WRONLY)

    def write(self, index: tuple[int, ...], row_start: int, block: np.ndarray) -> None:
        """Write ``block`` (rows, width) at ``array[index + (row_start,)]``."""
        rows_per, width = self.shape[-2], self.shape[-1]
        flat = 0
        for i, n in zip(index, self.shape[: len(index)], strict=True):
            flat = flat * n + i
        start = ((flat * rows_per) + row_start) * width * self.dtype.itemsize
        os.pwrite(self.fd, memoryview(np.ascontiguousarray(block, self.dtype)).cast("B"),
                  self.offset + start)

    def close(self) -> None:
        os.close(self.fd)


class CubeWriter:
    """Collects a cube's arrays strip by strip, in memory or into a directory.

    Layout: ``dynamic`` (S_dyn, T, H, W) float32, ``static`` (S_static, 1, H, W) float32,
    ``valid`` (H, W) bool, ``labels`` (T_labels, H, W) uint8; NaN marks nodata values.

    Args:
        out_dir: Directory for .npy files, or None to keep the arrays in memory.
        n_dynamic: Dynamic (per-date) sources.
        n_static: Static sources.
        n_dates: Dates.
        n_label_dates: Label masks (0 = unlabelled).
        height: Rows.
        width: Columns.
    """

    def __init__(
        self, out_dir: Path | None, *, n_dynamic: int, n_static: int, n_dates: int,
        n_label_dates: int, height: int, width: int,
    ) -> None:
        self.out_dir = out_dir
        shapes = {
            "dynamic": ((n_dynamic, n_dates, height, width), np.float32),
            "static": ((n_static, 1, height, width), np.float32),
            "labels": ((n_label_dates, height, width), np.uint8),
        }
        self._arrays: dict[str, Any] = {}
        for name, (shape, dtype) in shapes.items():
            if out_dir is None:
                self._arrays[name] = np.full(shape, np.nan if dtype == np.float32 else 0, dtype)
            else:
                out_dir.mkdir(parents=True, exist_ok=True)
                self._arrays[name] = _NpyFile(out_dir / f"{name}.npy", shape, dtype)
        # (H, W) masks are small next to the values; keep them in memory, save at the end
        self.valid = np.ones((height, width), bool)
        # A cloud at one date must not discard a pixel of a time series: a dynamic source
        # only needs data at one date (gaps are filled after normalization by the dataset).
        self._dynamic_seen = np.zeros((n_dynamic, height, width), bool)

    def _put(self, name: str, index: tuple[int, ...], row_start: int, block: np.ndarray) -> None:
        target = self._arrays[name]
        if isinstance(target, _NpyFile):
            target.write(index, row_start, block)
        else:
            target[index + (slice(row_start, row_start + block.shape[0]),)] = block

    def write_dynamic(self, source: int, date: int, row_start: int, block: np.ndarray) -> None:
        """Store rows of a dynamic source at one date (NaN = nodata)."""
        self._dynamic_seen[source, row_start: row_start + block.shape[0]] |= np.isfinite(block)
        self._put("dynamic", (source, date), row_start, block)

    def write_static(self, source: int, row_start: int, block: np.ndarray) -> None:
        """Store rows of a static source (NaN = nodata)."""
        self.valid[row_start: row_start + block.shape[0]] &= np.isfinite(block)
        self._put("static", (source, 0), row_start, block)

    def write_labels(
        self, date: int, row_start: int, block: np.ndarray, valid: np.ndarray | None = None
    ) -> None:
        """Store rows of a label mask; ``valid`` False where the label is nodata."""
        if valid is not None:
            self.valid[row_start: row_start + block.shape[0]] &= valid
        self._put("labels", (date,), row_start, block.astype(np.uint8))

    def finish(self, meta: dict[str, Any]) -> dict[str, Any]:
        """Close the files, write ``valid.npy`` and ``meta.json``; return the arrays.

        Args:
            meta: JSON-able description stored as meta.json.

        Returns:
            The arrays by name (memory-mapped read-only when written to a directory).
        """
        self.valid &= self._dynamic_seen.all(axis=0)
        if self.out_dir is None:
            return {**self._arrays, "valid": self.valid}
        for target in self._arrays.values():
            target.close()
        np.save(self.out_dir / "valid.npy", self.valid)
        (self.out_dir / META_FILE).write_text(json.dumps(meta, indent=1), encoding="utf-8")
        return load_arrays(self.out_dir)


def load_arrays(directory: Path) -> dict[str, Any]:
    """Open a stored cube's arrays read-only and memory-mapped.

    Args:
        directory: A directory written by ``CubeWriter``.

    Returns:
        The arrays by name.
    """
    return {name: np.load(directory / f"{name}.npy", mmap_mode="r") for name in _ARRAYS}
