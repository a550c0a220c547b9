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

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from data.errors import (
    MissingMaskError,
    NoFilesMatchedError,
    SceneSpecError,
)
from data.groups import read_mapping, resolve_patch_splits
from data.raster import Grid
from data.scene import GridSpec
from data.sources.base import Recipe, adapter_root, check_adapter_keys
from data.sources.patch_files import build_patches, is_hdf5, open_quietly
from data.sources.patch_settings import (
    DEFAULT_MASK_CODES,
    LAYOUTS,
    MANIFEST_NAMES,
    MASK_CLASSES,
    Channel,
    Patch,
    PatchSettings,
)

__all__ = ["recipe"]

_KEYS = {"path", "images", "id", "masks", "image_key", "mask_key", "layout", "channels",
         "mask_codes", "patch_shape", "manifest"}
_MANIFEST_KEYS = {"channels", "groups", "splits"}
_CHANNEL_KEYS = {"name", "kind", "type", "nodata", "codes"}



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
        return build_patches(settings, out_dir, key)

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


def _parse(section: Mapping[str, Any], root: Path, origin: str | None) -> PatchSettings:
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
        patches.append(Patch(pid, path, mask))
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
    return PatchSettings(
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
    if is_hdf5(path):
        return []
    with open_quietly(path) as src:
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


def _parse_channels(raw: Any, origin: str | None) -> tuple[Channel, ...]:
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
        channels.append(Channel(name, kind, typ, tuple(float(v) for v in nodata), codes))
    names = [n for c in channels for n in c.outputs]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise _fail(origin, "channels", f"source names repeat: {dup}",
                    "give each channel a unique name (categorical ones become NAME_CODE)")
    return tuple(channels)


def _parse_mask_codes(raw: Any, origin: str | None) -> dict[str, tuple[int, ...]]:
    if raw is None:
        return dict(DEFAULT_MASK_CODES)
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
