"""Adapter for a folder of image patches with masks: GeoTIFF / TIFF / PNG (rasterio) or HDF5.

A patch collection like Landslide4Sense, described in the study file instead of fixed: the
images are found by a glob, each mask by a name template, and every channel is declared
(name, optical or factor, continuous or categorical, nodata). Patches of different sizes
are padded to one slot (the largest patch, or a declared ``patch_shape`` that crops larger
ones around their centre) and stacked vertically into one cube without a grid, which is
split by patch. Padding is NaN and invalid, so it is never scored and never measured by
the normalization. Example::

    [data]
    format = "patches"
    path = "my-patches"                      # the folder; the patterns are relative to it
    images = "img/*.tif"                     # a glob, sorted by patch id (numbers as numbers)
    masks = "mask/{stem}.png"                # {stem} = image name without suffix, {id}
    mask_codes = { landslide = [1, 2], background = [0], ignore = [255] }
    channels = [
      { name = "red", kind = "optical", nodata = 0 },
      { name = "dem", kind = "factor", nodata = [-9999, -32768] },
      { name = "geology", kind = "factor", type = "categorical", codes = [1, 2, 3] },
    ]

The channel list may instead come from a manifest file in the folder (``manifest.json``:
``{"channels": [...]}``, names defaulting to the GeoTIFF band descriptions), with single
channels overridden in the study: ``channels = { dem = { nodata = -9999 } }``.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.errors import NotGeoreferencedWarning, RasterioError

from data.build import CUBE_VERSION
from data.errors import (
    BandCountMismatchError,
    MissingMaskError,
    NoFilesMatchedError,
    SceneSpecError,
    SizeMismatchError,
    UnknownCodeError,
    UnreadableFileError,
)
from data.factors import check_codes, one_hot
from data.groups import read_mapping, resolve_patch_splits
from data.raster import Grid, open_raster
from data.scene import GridSpec
from data.sources.base import Recipe, adapter_root, check_adapter_keys
from data.store import CubeWriter

__all__ = ["DATE", "HDF5_SUFFIXES", "LAYOUTS", "MANIFEST_NAMES", "MASK_CLASSES", "recipe"]

DATE = "image"
"""The cube's one date name: a patch is one observation."""
HDF5_SUFFIXES = (".h5", ".hdf5", ".he5")
"""Files read with h5py; every other file is read with rasterio (GeoTIFF, TIFF, PNG, ...)."""
LAYOUTS = ("auto", "chw", "hwc")
"""Axis order of a 3-D HDF5 dataset; ``auto`` finds the axis holding the declared channels."""
MASK_CLASSES = ("landslide", "background", "ignore")
"""What ``mask_codes`` maps each mask value to; ``ignore`` pixels are invalid (never scored)."""
_DEFAULT_MASK_CODES = {"landslide": (1,), "background": (0,), "ignore": ()}
_KEYS = {"path", "images", "id", "masks", "image_key", "mask_key", "layout", "channels",
         "mask_codes", "patch_shape", "manifest"}
MANIFEST_NAMES = ("manifest.json", "manifest.toml")
"""Manifest files looked for in the patch folder when the study names none."""
_MANIFEST_KEYS = {"channels", "groups", "splits"}
_CHANNEL_KEYS = {"name", "kind", "type", "nodata", "codes"}


@dataclass(frozen=True)
class _Channel:
    """One declared image channel and the cube sources it becomes."""

    name: str
    kind: str
    type: str
    nodata: tuple[float, ...]
    codes: tuple[int, ...]

    @property
    def outputs(self) -> list[str]:
        """Cube source names: the channel, or one per code when one-hot encoded."""
        if self.type == "categorical":
            return [f"{self.name}_{c}" for c in self.codes]
        return [self.name]


@dataclass(frozen=True)
class _Patch:
    id: str
    image: Path
    mask: Path | None


@dataclass(frozen=True)
class _Settings:
    """The checked ``[data]`` section of a patch folder."""

    root: Path
    images: str
    masks: str | None
    patches: tuple[_Patch, ...]
    channels: tuple[_Channel, ...]
    layout: str
    image_key: str | None
    mask_key: str | None
    mask_codes: dict[str, tuple[int, ...]]
    patch_shape: tuple[int, int] | None
    manifest: Path | None = None
    split_options: dict[str, Any] | None = None

    def description(self) -> dict[str, Any]:
        """Everything that shapes the cube, JSON-able (the inputs' stats are added by the key)."""
        return {
            "format": "patches", "root": str(self.root),
            "patches": [[p.id, str(p.image), str(p.mask) if p.mask else None]
                        for p in self.patches],
            "channels": [asdict(c) for c in self.channels], "layout": self.layout,
            "image_key": self.image_key, "mask_key": self.mask_key,
            "mask_codes": {k: list(v) for k, v in self.mask_codes.items()},
            "patch_shape": list(self.patch_shape) if self.patch_shape else None,
            "canvas": "packed",  # each patch at its own size (a cube of padded slots before)
        }


def recipe(section: Mapping[str, Any], base_dir: Path, grid: Grid | GridSpec | None,
           origin: str | None = None) -> Recipe:
    """A recipe for ``format = "patches"`` (see the module docstring for an example).

    Keys: ``path`` (folder), ``images`` (glob), ``id`` (regex with a group ``(?P<id>...)``
    applied to each image's file name; default: the name without suffix), ``masks``
    (template with ``{id}`` / ``{stem}``; leave out for an unlabelled set), ``mask_codes``
    (default ``{landslide = [1], background = [0]}``), ``channels`` (one table per channel
    in file order; or a table ``{name = {key = value}}`` overriding the manifest's),
    ``manifest`` (a JSON / TOML file in the folder with ``channels``, ``groups``,
    ``splits``; default ``manifest.json`` / ``manifest.toml`` when present; without
    channels anywhere the band descriptions name them), ``layout`` (HDF5 only; rasterio
    reads band-first), ``image_key`` / ``mask_key`` (HDF5 dataset names; default: the
    file's only dataset), ``patch_shape`` (``[rows, cols]`` or one side; default: the
    largest patch). Groups and split lists (``group``, ``splits``, ``train`` / ``val`` /
    ``test``, ``test_groups``) are described in :mod:`data.groups`.

    Args:
        section: The ``[data]`` section.
        base_dir: Directory ``path`` is relative to.
        grid: Must be None: a patch collection has no common grid.
        origin: File named in errors about the section.

    Returns:
        The recipe; files are found and paired here, so a dry run reports a missing mask.
    """
    check_adapter_keys(section, _KEYS, "patches")
    if grid is not None:
        raise SceneSpecError("a patch collection has no common grid", file=origin,
                             key="data.grid", hint="drop the grid; patches are stacked as they are")
    settings = _parse(section, adapter_root(section, base_dir, "patches"), origin)

    def build(out_dir: Path | None, block_size: int, key: str) -> tuple[dict, dict]:
        return _build(settings, out_dir, key)

    inputs = tuple(p.image for p in settings.patches) + tuple(
        p.mask for p in settings.patches if p.mask is not None) + (
        (settings.manifest,) if settings.manifest else ())
    return Recipe(settings.description(), inputs, build, settings.split_options)


# ----------------------------------------------------------------------------- parsing
def _fail(origin: str | None, key: str, message: str, hint: str) -> SceneSpecError:
    return SceneSpecError(message, file=origin, key=f"data.{key}", hint=hint)


def _codes(value: Any, origin: str | None, key: str, hint: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(
            isinstance(c, int) and not isinstance(c, bool) for c in value):
        raise _fail(origin, key, f"expected a list of integer codes, got {value!r}", hint)
    return tuple(value)


def _parse(section: Mapping[str, Any], root: Path, origin: str | None) -> _Settings:
    pattern = section.get("images")
    if not isinstance(pattern, str) or not pattern or Path(pattern).is_absolute():
        raise _fail(origin, "images", f"expected a glob relative to `path`, got {pattern!r}",
                    'e.g. images = "img/*.tif" or "img/image_*.h5"')
    found = sorted(p for p in root.glob(pattern) if p.is_file())
    if not found:
        raise NoFilesMatchedError(f"no file matches images = {pattern!r}", file=root,
                                  key="data.images",
                                  hint="the glob is relative to `path`; check both")
    ids = _patch_ids(found, section.get("id"), origin)
    masks = section.get("masks")
    if masks is not None:
        _check_template(masks, origin)
    elif "mask_codes" in section or "mask_key" in section:
        raise _fail(origin, "masks", "mask_codes / mask_key without masks",
                    'add masks = "mask/{stem}.png", or drop them for an unlabelled set')
    patches = []
    for path, pid in sorted(zip(found, ids, strict=True), key=lambda pair: _natural(pair[1])):
        mask = None
        if masks is not None:
            mask = root / masks.format(id=pid, stem=path.stem)
            if not mask.is_file():
                raise MissingMaskError(
                    f"image {path.name} has no mask", file=mask, key="data.masks",
                    hint=f"every image needs the mask that masks = {masks!r} names; "
                    "fix the template, add the mask or remove the image")
        patches.append(_Patch(pid, path, mask))
    layout = section.get("layout", "auto")
    if layout not in LAYOUTS:
        raise _fail(origin, "layout", f"{layout!r} is not one of {list(LAYOUTS)}",
                    'chw = channels first, hwc = channels last (HDF5 only)')
    for key in ("image_key", "mask_key"):
        if key in section and not (isinstance(section[key], str) and section[key]):
            raise _fail(origin, key, f"expected an HDF5 dataset name, got {section[key]!r}",
                        'e.g. image_key = "img"')
    manifest = _manifest(section, root, origin)
    tables, where = _channel_tables(section, manifest, found[0], origin)
    return _Settings(
        root=root, images=pattern, masks=masks, patches=tuple(patches),
        channels=_parse_channels(tables, where), layout=layout,
        image_key=section.get("image_key"), mask_key=section.get("mask_key"),
        mask_codes=_parse_mask_codes(section.get("mask_codes"), origin),
        patch_shape=_parse_shape(section.get("patch_shape"), origin),
        manifest=Path(manifest["__file__"]) if manifest else None,
        split_options=resolve_patch_splits(section, root, [p.id for p in patches], origin,
                                           manifest),
    )


def _manifest(section: Mapping[str, Any], root: Path, origin: str | None
              ) -> dict[str, Any] | None:
    """The folder's manifest, or None.

    ``manifest`` names the file, else manifest.json / manifest.toml in the folder are used
    when present (``manifest = false``: none). A bare list is the channel list. The path
    is kept under ``__file__``.
    """
    raw = section.get("manifest")
    if raw is False:
        return None
    if raw is not None:
        if not isinstance(raw, str) or not raw:
            raise _fail(origin, "manifest", f"expected a file name, got {raw!r}",
                        'e.g. manifest = "channels.json" (in the data folder), or false')
        path = (root / raw).resolve()
    else:
        path = next((root / n for n in MANIFEST_NAMES if (root / n).is_file()), None)
        if path is None:
            return None
    doc = read_mapping(path, "data.manifest")
    if isinstance(doc, list):
        doc = {"channels": doc}
    if not isinstance(doc, Mapping) or not set(doc) <= _MANIFEST_KEYS:
        extra = sorted(set(doc) - _MANIFEST_KEYS) if isinstance(doc, Mapping) else doc
        raise SceneSpecError(f"unexpected manifest content {extra!r}", file=path,
                             key="manifest", hint=f"a manifest holds {sorted(_MANIFEST_KEYS)}")
    return {**doc, "__file__": str(path)}


def _descriptions(path: Path) -> list[str | None]:
    """A raster's band descriptions (None where a band has none); none for HDF5."""
    if _is_hdf5(path):
        return []
    with _open_quietly(path) as src:
        return [d or None for d in src.descriptions]


def _channel_tables(section: Mapping[str, Any], manifest: Mapping[str, Any] | None,
                    first: Path, origin: str | None) -> tuple[Any, str | None]:
    """The channel tables and the file they come from.

    A list in the study replaces everything; otherwise the manifest's ``channels`` (names
    missing there are the band descriptions), else the first image's band descriptions
    (kind ``optical``), with a study table ``{name = {key = value}}`` overriding entries.
    """
    study = section.get("channels")
    if isinstance(study, list):
        return study, origin
    if study is not None and not isinstance(study, Mapping):
        raise _fail(origin, "channels", f"expected a list of channel tables or a table of "
                    f"overrides, got {study!r}",
                    'e.g. channels = { dem = { kind = "factor", nodata = -9999 } }')
    if manifest is not None and "channels" in manifest:
        where = str(manifest["__file__"])
        tables = manifest["channels"]
        if not isinstance(tables, list) or not all(isinstance(t, Mapping) for t in tables):
            raise SceneSpecError("channels must be a list of tables", file=where,
                                 key="manifest.channels",
                                 hint='[{"name": "red", "kind": "optical", "nodata": 0}, ...]')
        names = _descriptions(first)
        tables = [{"name": names[i], **t} if "name" not in t and i < len(names) and names[i]
                  else dict(t) for i, t in enumerate(tables)]
    else:
        names = _descriptions(first)
        if not names or not all(names):
            raise _fail(origin, "channels", "no channel is declared, and the images have no "
                        "band descriptions to name them",
                        'declare them: channels = [{ name = "red", kind = "optical" }, ...], '
                        "or put a manifest.json with a channels list in the folder")
        where = str(first)
        tables = [{"name": n, "kind": "optical"} for n in names]
    for name, change in (study or {}).items():
        known = [t.get("name") for t in tables]
        if name not in known:
            raise _fail(origin, f"channels.{name}", f"no channel named {name!r} to override",
                        f"channels: {known}")
        if not isinstance(change, Mapping) or "name" in change:
            raise _fail(origin, f"channels.{name}", f"expected a table of changes, got "
                        f"{change!r}", 'e.g. { kind = "factor", nodata = -9999 }')
        i = known.index(name)
        tables[i] = {**tables[i], **change}
    return tables, where


def _patch_ids(files: Sequence[Path], raw: Any, origin: str | None) -> list[str]:
    if raw is None:
        ids = [p.stem for p in files]
    else:
        try:
            regex = re.compile(raw) if isinstance(raw, str) else None
        except re.error as exc:
            raise _fail(origin, "id", f"not a regular expression ({exc})",
                        r"e.g. id = 'image_(?P<id>\d+)'") from exc
        if regex is None or "id" not in regex.groupindex:
            raise _fail(origin, "id", f"expected a regex with a group (?P<id>...), got {raw!r}",
                        r"e.g. id = 'image_(?P<id>\d+)'")
        ids = []
        for path in files:
            match = regex.search(path.name)
            if match is None:
                raise _fail(origin, "id", f"{path.name} does not match id = {raw!r}",
                            "narrow the images glob or widen the regex")
            ids.append(match.group("id"))
    seen: dict[str, Path] = {}
    for path, pid in zip(files, ids, strict=True):
        if pid in seen:
            raise _fail(origin, "id", f"{seen[pid].name} and {path.name} have the same id "
                        f"{pid!r}", "give each image its own id (see `id`)")
        seen[pid] = path
    return ids


def _check_template(template: Any, origin: str | None) -> None:
    hint = 'e.g. masks = "mask/{stem}.png" or "mask/mask_{id}.h5"'
    if not isinstance(template, str) or not template:
        raise _fail(origin, "masks", f"expected a file name template, got {template!r}", hint)
    try:
        template.format(id="1", stem="image_1")
    except KeyError as exc:
        raise _fail(origin, "masks", f"unknown placeholder {{{exc.args[0]}}}",
                    f"use {{id}} and {{stem}} only; {hint}") from exc
    except (ValueError, IndexError) as exc:
        raise _fail(origin, "masks", f"not a template ({exc})", hint) from exc


def _natural(text: str) -> list[Any]:
    """Sort key that orders ``image_2`` before ``image_10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def _parse_channels(raw: Any, origin: str | None) -> tuple[_Channel, ...]:
    if not isinstance(raw, list) or not raw:
        raise _fail(origin, "channels", "expected a list of channel tables, in file order",
                    'e.g. channels = [{ name = "red", kind = "optical" }, ...]')
    channels = []
    for i, item in enumerate(raw):
        key = f"channels[{i}]"
        if not isinstance(item, Mapping):
            raise _fail(origin, key, f"expected a table, got {item!r}",
                        '{ name = "red", kind = "optical" }')
        unknown = sorted(set(item) - _CHANNEL_KEYS)
        if unknown:
            raise _fail(origin, key, f"unknown key(s) {unknown}",
                        f"allowed: {sorted(_CHANNEL_KEYS)}")
        name = item.get("name")
        if not isinstance(name, str) or not name.strip():
            raise _fail(origin, key, "missing name", 'add name = "red"')
        kind = item.get("kind")
        typ = item.get("type", "continuous")
        if kind not in ("optical", "factor") or typ not in ("continuous", "categorical"):
            raise _fail(origin, f"{key} ({name})", f"kind {kind!r} / type {typ!r}",
                        'kind = "optical" (per-date imagery) or "factor"; type = "continuous" '
                        'or "categorical"')
        nodata = item.get("nodata", [])
        nodata = nodata if isinstance(nodata, list) else [nodata]
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in nodata):
            raise _fail(origin, f"{key} ({name}).nodata", f"expected numbers, got {nodata!r}",
                        "e.g. nodata = 0 or nodata = [-9999, 65535]")
        codes: tuple[int, ...] = ()
        if typ == "categorical":
            codes = _codes(item.get("codes"), origin, f"{key} ({name}).codes",
                           "declare the codes the channel may hold, e.g. codes = [1, 2, 3]")
            if not codes:
                raise _fail(origin, f"{key} ({name}).codes", "no codes declared",
                            "e.g. codes = [1, 2, 3]")
        elif "codes" in item:
            raise _fail(origin, f"{key} ({name})", "codes apply to categorical channels only",
                        'set type = "categorical" or drop codes')
        channels.append(_Channel(name, kind, typ, tuple(float(v) for v in nodata), codes))
    names = [n for c in channels for n in c.outputs]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise _fail(origin, "channels", f"source names repeat: {dup}",
                    "give each channel a unique name (categorical ones become NAME_CODE)")
    return tuple(channels)


def _parse_mask_codes(raw: Any, origin: str | None) -> dict[str, tuple[int, ...]]:
    if raw is None:
        return dict(_DEFAULT_MASK_CODES)
    hint = "e.g. mask_codes = { landslide = [1, 2], background = [0], ignore = [255] }"
    if not isinstance(raw, Mapping) or not set(raw) <= set(MASK_CLASSES):
        raise _fail(origin, "mask_codes", f"expected a table of {list(MASK_CLASSES)}, got {raw!r}",
                    hint)
    out = {c: _codes(raw.get(c, []), origin, f"mask_codes.{c}", hint) for c in MASK_CLASSES}
    if not out["landslide"]:
        raise _fail(origin, "mask_codes.landslide", "no landslide code", hint)
    every = [v for codes in out.values() for v in codes]
    if len(set(every)) != len(every):
        dup = sorted({v for v in every if every.count(v) > 1})
        raise _fail(origin, "mask_codes", f"code(s) {dup} are in two classes",
                    "give each mask code one class")
    return out


def _parse_shape(raw: Any, origin: str | None) -> tuple[int, int] | None:
    if raw is None:
        return None
    shape = [raw, raw] if isinstance(raw, int) else raw
    if (not isinstance(shape, list) or len(shape) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape)):
        raise _fail(origin, "patch_shape", f"expected [rows, cols] > 0, got {raw!r}",
                    "e.g. patch_shape = [128, 128]; leave out to pad to the largest patch")
    return shape[0], shape[1]


# ----------------------------------------------------------------------------- reading
def _is_hdf5(path: Path) -> bool:
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
def _open_quietly(path: Path) -> Iterator[Any]:
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


def _open_image(path: Path, settings: _Settings, *, read: bool) -> _Image:
    """Check an image's channel count (from its header) and read it when ``read``."""
    n = len(settings.channels)
    values = None
    if _is_hdf5(path):
        with _hdf5_dataset(path, settings.image_key, "image") as dataset:
            found = tuple(dataset.shape)
            last = len(found) == 3 and _channels_last(found, n, settings.layout, path)
            chw = (found[2], *found[:2]) if last else (1, *found) if len(found) == 2 else found
            if read and len(chw) == 3 and chw[0] == n:
                values = np.asarray(dataset)
                values = np.moveaxis(values, -1, 0) if last else values.reshape(chw)
        file_nodata: Sequence[float | None] = [None] * n
    else:
        with _open_quietly(path) as src:
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


def _read_mask(path: Path, settings: _Settings) -> np.ndarray:
    """The raw (H, W) mask codes."""
    if _is_hdf5(path):
        with _hdf5_dataset(path, settings.mask_key, "mask") as dataset:
            array = np.asarray(dataset)
    else:
        with _open_quietly(path) as src:
            array = _read_all(src, path)
    if array.ndim == 3 and 1 in (array.shape[0], array.shape[-1]):
        array = array.reshape(array.shape[:2] if array.shape[-1] == 1 else array.shape[1:])
    if array.ndim != 2:
        raise BandCountMismatchError(f"mask of shape {array.shape}; expected one band", file=path,
                                     key="data.masks", hint="write the mask as one band of codes")
    return array


def _encode(image: _Image, settings: _Settings, path: Path) -> np.ndarray:
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


def _labels(codes: np.ndarray, settings: _Settings, path: Path) -> tuple[np.ndarray, np.ndarray]:
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


def _build(settings: _Settings, out_dir: Path | None, key: str) -> tuple[dict, dict]:
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
