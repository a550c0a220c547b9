"""Reading a patch folder into a cube: HDF5 or raster images and masks, encoded and packed.

What to read is a :class:`~data.sources.patch_settings.PatchSettings`, which
:mod:`data.sources.patches` parses from the ``[data]`` section.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.errors import NotGeoreferencedWarning, RasterioError

from data.build import CUBE_VERSION
from data.errors import (
    BandCountMismatchError,
    SceneSpecError,
    SizeMismatchError,
    UnknownCodeError,
    UnreadableFileError,
)
from data.factors import check_codes, one_hot
from data.raster import open_raster
from data.sources.patch_settings import DATE, HDF5_SUFFIXES, MASK_CLASSES, PatchSettings
from data.store import CubeWriter

__all__ = ["build_patches", "is_hdf5", "open_quietly"]


def is_hdf5(path: Path) -> bool:
    """Whether the file is read with h5py (by its suffix), not rasterio."""
    return path.suffix.lower() in HDF5_SUFFIXES


@contextmanager
def _hdf5_dataset(path: Path, key: str | None, what: str) -> Iterator[Any]:
    """Open one dataset of an HDF5 file (``key``, else the file's only dataset)."""
    import h5py  # a quarter second to import, for HDF5 patch collections only

    name = f"{what}_key"
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise UnreadableFileError(f"cannot read as HDF5 ({exc})", file=path,
                                  hint="is the file complete? HDF5 files end in .h5 / .hdf5"
                                  ) from exc
    with f:
        datasets = [k for k, v in f.items() if isinstance(v, h5py.Dataset)]
        chosen = key if key is not None else datasets[0] if len(datasets) == 1 else None
        if chosen not in datasets:
            raise UnreadableFileError(
                f"no {what} dataset {'named ' + repr(key) if key else 'chosen'} (it holds "
                f"{datasets})", file=path, key=f"data.{name}",
                hint=f'set {name} = "..." to one of them')
        yield f[chosen]


def _channels_last(shape: tuple[int, ...], n: int, layout: str, path: Path) -> bool:
    """Whether a 3-D HDF5 array is (H, W, C): as declared, or the axis that holds ``n``."""
    if layout == "auto":
        if shape[0] == n and shape[-1] == n:
            raise SceneSpecError(
                f"shape {shape}: both the first and the last axis could be the {n} channels",
                file=path, key="data.layout", hint='set layout = "chw" or "hwc"')
        layout = "hwc" if shape[-1] == n else "chw"
    return layout == "hwc"


@contextmanager
def open_quietly(path: Path) -> Iterator[Any]:
    """Open with rasterio; a PNG or plain TIFF has no georeferencing and needs none here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with open_raster(path, require_crs=False) as src:
            yield src


def _read_all(src: Any, path: Path) -> np.ndarray:
    try:
        return src.read()
    except RasterioError as exc:
        # GDAL reads lazily: a truncated file opens fine and fails only here
        raise UnreadableFileError(f"cannot read its pixels ({exc})", file=path,
                                  hint="the file is truncated or damaged; write it again"
                                  ) from exc


@dataclass
class _Image:
    """An image patch: its (H, W), and when read, its raw (C, H, W) values and nodata codes."""

    size: tuple[int, int]
    values: np.ndarray | None = None
    nodata: list[tuple[float, ...]] | None = None


def _open_image(path: Path, settings: PatchSettings, *, read: bool) -> _Image:
    """Check an image's channel count (from its header) and read it when ``read``."""
    n = len(settings.channels)
    values = None
    if is_hdf5(path):
        with _hdf5_dataset(path, settings.image_key, "image") as dataset:
            found = tuple(dataset.shape)
            last = len(found) == 3 and _channels_last(found, n, settings.layout, path)
            chw = (found[2], *found[:2]) if last else (1, *found) if len(found) == 2 else found
            if read and len(chw) == 3 and chw[0] == n:
                values = np.asarray(dataset)
                values = np.moveaxis(values, -1, 0) if last else values.reshape(chw)
        file_nodata: Sequence[float | None] = [None] * n
    else:
        with open_quietly(path) as src:
            found = chw = (src.count, src.height, src.width)
            values = _read_all(src, path) if read else None
            file_nodata = src.nodatavals
    if len(chw) != 3 or chw[0] != n:
        raise BandCountMismatchError(
            f"array of shape {found} ({settings.layout}) does not hold the {n} declared "
            "channels", file=path, key="data.channels",
            hint="declare one channel table per channel, in file order (and check layout)")
    nodata = [c.nodata or (() if f is None else (f,))
              for c, f in zip(settings.channels, file_nodata, strict=True)]
    return _Image((chw[1], chw[2]), values, nodata)


def _read_mask(path: Path, settings: PatchSettings) -> np.ndarray:
    """The raw (H, W) mask codes."""
    if is_hdf5(path):
        with _hdf5_dataset(path, settings.mask_key, "mask") as dataset:
            array = np.asarray(dataset)
    else:
        with open_quietly(path) as src:
            array = _read_all(src, path)
    if array.ndim == 3 and 1 in (array.shape[0], array.shape[-1]):
        array = array.reshape(array.shape[:2] if array.shape[-1] == 1 else array.shape[1:])
    if array.ndim != 2:
        raise BandCountMismatchError(f"mask of shape {array.shape}; expected one band", file=path,
                                     key="data.masks", hint="write the mask as one band of codes")
    return array


def _encode(image: _Image, settings: PatchSettings, path: Path) -> np.ndarray:
    """(C, H, W) raw values -> (cube sources, H, W) float32, NaN where nodata."""
    out = []
    for channel, band, missing in zip(settings.channels, image.values, image.nodata,
                                      strict=True):
        # compare in the file's type: a float32 copy could merge a code with its neighbour
        bad = np.isin(band, missing) if missing else np.zeros(band.shape, bool)
        values = band.astype(np.float32)
        values[bad] = np.nan
        if channel.type == "categorical":
            check_codes(values, channel.codes, file=path, name=channel.name)
            out.extend(one_hot(values, channel.codes))
        else:
            out.append(values)
    return np.stack(out)


def _labels(
    codes: np.ndarray, settings: PatchSettings, path: Path
) -> tuple[np.ndarray, np.ndarray]:
    """Mask codes -> (landslide, valid); an undeclared code is an error naming all codes seen."""
    mapping = settings.mask_codes
    seen = np.unique(codes)
    declared = [v for c in MASK_CLASSES for v in mapping[c]]
    unknown = seen[~np.isin(seen, declared)]
    if unknown.size:
        classes = {c: list(v) for c, v in mapping.items() if v}
        raise UnknownCodeError(
            f"mask code(s) {[v.item() for v in unknown[:20]]} are not in mask_codes "
            f"{classes}; the mask holds {[v.item() for v in seen[:20]]}",
            file=path, key="data.mask_codes",
            hint="map every code to landslide, background or ignore in mask_codes")
    return np.isin(codes, mapping["landslide"]), ~np.isin(codes, mapping["ignore"])


def _pack(shapes: Sequence[tuple[int, int]], width: int
          ) -> tuple[list[tuple[int, int]], int]:
    """Shelf packing: the (row, col) of each patch in a canvas ``width`` wide, and its height.

    Patches go, tallest first, into the first shelf (a band of rows as high as its first
    patch) with room left, else onto a new shelf; patches of one size thus stack in order,
    one per shelf when they are as wide as the canvas.
    """
    shelves: list[list[int]] = []  # [row, height, used width]
    where: list[tuple[int, int]] = [(0, 0)] * len(shapes)
    height = 0
    for k in sorted(range(len(shapes)), key=lambda k: (-shapes[k][0], k)):
        h, w = shapes[k]
        shelf = next((sh for sh in shelves if sh[2] + w <= width and h <= sh[1]), None)
        if shelf is None:
            shelf = [height, h, 0]
            shelves.append(shelf)
            height += h
        where[k] = (shelf[0], shelf[2])
        shelf[2] += w
    return where, height


def build_patches(settings: PatchSettings, out_dir: Path | None, key: str) -> tuple[dict, dict]:
    """Headers first (channel counts, sizes), then the values one shelf of patches at a time.

    Each patch keeps its own size (cropped around its centre to a declared
    ``patch_shape``); the patches are packed into shelves of one canvas, so a set of 61 to
    738 px patches is not padded to 738 x 738 each. Cells of the canvas no patch covers
    are NaN and invalid.
    """
    # a wrong file fails the build before anything is written, and the sizes are known
    sizes = [_open_image(p.image, settings, read=False).size for p in settings.patches]
    slot = settings.patch_shape or (max(h for h, _ in sizes), max(w for _, w in sizes))
    shapes = [(min(h, slot[0]), min(w, slot[1])) for h, w in sizes]
    width = max(w for _, w in shapes)
    where, height = _pack(shapes, width)
    outputs = [(name, c) for c in settings.channels for name in c.outputs]
    stores = {"dynamic": 0, "static": 0}
    slots = []
    for _, channel in outputs:
        store = "dynamic" if channel.kind == "optical" else "static"
        slots.append((store, stores[store]))
        stores[store] += 1
    labelled = settings.masks is not None
    writer = CubeWriter(out_dir, n_dynamic=stores["dynamic"], n_static=stores["static"],
                        n_dates=1, n_label_dates=int(labelled), height=height, width=width)
    shelves: dict[int, list[int]] = {}
    for k, (row, _) in enumerate(where):
        shelves.setdefault(row, []).append(k)
    described: list[dict[str, Any]] = [{} for _ in settings.patches]
    for row, members in sorted(shelves.items()):
        rows = max(shapes[k][0] for k in members)
        values = np.full((len(outputs), rows, width), np.nan, np.float32)
        landslide = np.zeros((rows, width), bool)
        valid = np.zeros((rows, width), bool)
        for k in members:
            patch, (h, w), (sh, sw), col = settings.patches[k], sizes[k], shapes[k], where[k][1]
            # a patch larger than the declared shape keeps its centre
            r0, c0 = (h - sh) // 2, (w - sw) // 2
            image = _open_image(patch.image, settings, read=True)
            cells = np.s_[:sh, col: col + sw]
            values[(slice(None), *cells)] = _encode(image, settings, patch.image)[
                :, r0: r0 + sh, c0: c0 + sw]
            if patch.mask is not None:
                codes = _read_mask(patch.mask, settings)
                if codes.shape != (h, w):
                    raise SizeMismatchError(
                        f"mask is {codes.shape[0]} x {codes.shape[1]} px, its image "
                        f"{patch.image.name} {h} x {w} px", file=patch.mask, key="data.masks",
                        hint="pair each image with the mask of the same patch (see masks)")
                positive, known = _labels(codes, settings, patch.mask)
                landslide[cells] = positive[r0: r0 + sh, c0: c0 + sw]
                valid[cells] = known[r0: r0 + sh, c0: c0 + sw]
            described[k] = {"id": patch.id, "image": os.path.relpath(patch.image, settings.root),
                            "row": row, "col": col, "size": [h, w], "shape": [sh, sw],
                            "offset": [r0, c0]}
        for (store, index), block in zip(slots, values, strict=True):
            if store == "dynamic":
                writer.write_dynamic(index, 0, row, block)
            else:
                writer.write_static(index, row, block)
        if labelled:
            writer.write_labels(0, row, landslide, valid)
    sources = [{"name": name, "kind": c.kind, "type": c.type, "store": store, "index": index,
                "origin": str(settings.root / settings.images)}
               for (name, c), (store, index) in zip(outputs, slots, strict=True)]
    meta = {"version": CUBE_VERSION, "hash": key, "format": "patches", "sources": sources,
            "dates": [DATE], "label_dates": [DATE] if labelled else [],
            "label_origin": str(settings.root / settings.masks) if labelled else None,
            "grid": None, "patch_shape": list(slot), "layout": "packed",
            "patch_ids": [p.id for p in settings.patches], "patches": described}
    return writer.finish(meta), meta
