"""Groups and explicit split lists of a patch collection, read from the study, tables or files.

A patch's **group** is the place or time it comes from (region, scene, acquisition, tile-grid
block). Splits that keep groups whole test and validate on places the model never trained
on, which is what a shifted test (another region, a later year) asks for. Three ways to give
groups, in the ``[data]`` section of a patch folder (files relative to the folder ``path``)::

    group = { regex = '^(?P<group>[a-z]+)_' }      # on the patch id: the named group
                                                   # (or the first group, or the whole match)
    group = { file = "groups.csv", column = "region" }   # a CSV table; id_column = "id"
    group = { file = "groups.json" }               # {"north": ["a_1", ...]} or {"a_1": "north"}

or a ``groups`` entry in the folder's manifest (same shapes as the JSON file). **Split
lists** fix the patches of a split, e.g. a benchmark's official test list::

    splits = "splits.json"                         # {"train": [...], "val": [...], "test": [...]}
    splits = { test = "test.txt" }                 # a file per list (one id a line) or a list
    test = "test.txt"                              # the same, one key per list
    test_groups = ["north"]                        # or: the test split is these groups

Every id must name a patch, and no id may be in two lists (a :class:`SplitFileError` names
the file, the list and the ids).
"""

from __future__ import annotations

import csv
import json
import re
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from data.errors import DataNotFoundError, SceneSpecError, SplitFileError

__all__ = ["LIST_NAMES", "PATCH_SPLIT_KEYS", "read_mapping", "resolve_patch_splits"]

LIST_NAMES = ("train", "val", "test")
"""The split lists a split file may hold (``validation`` is read as ``val``)."""
PATCH_SPLIT_KEYS = ("group", "splits", "train", "val", "test", "test_groups")
"""``[data]`` keys that only a patch collection (patches with ids) understands."""
_GROUP_KEYS = {"regex", "file", "column", "id_column"}
_SHOW = 8  # ids named in a message


def _fail(origin: str | Path | None, key: str, message: str, hint: str) -> SplitFileError:
    return SplitFileError(message, file=origin, key=key, hint=hint)


def _few(values: Sequence[Any]) -> str:
    shown = ", ".join(repr(v) for v in list(values)[:_SHOW])
    return f"[{shown}{', ...' if len(values) > _SHOW else ''}] ({len(values)})"


def read_mapping(path: Path, key: str) -> Any:
    """Parse a JSON or TOML file (by suffix; JSON otherwise).

    Args:
        path: The file.
        key: The study key that named it, for errors.

    Returns:
        The parsed document.

    Raises:
        DataNotFoundError: The file does not exist.
        SplitFileError: It is not valid JSON / TOML.
    """
    if not path.is_file():
        raise DataNotFoundError("file not found", file=path, key=key,
                                hint="the path is relative to the data folder (`path`)")
    text = path.read_text(encoding="utf-8")
    try:
        return tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _fail(path, key, f"cannot parse it ({exc})",
                    "write it as JSON (or TOML with a .toml suffix)") from exc


def _read_list(value: Any, root: Path, key: str, origin: str | None) -> tuple[list[str], str]:
    """A list of ids given inline, or a file: JSON list, or text with one id a line."""
    if isinstance(value, list):
        where = origin or "study"
        ids = value
    elif isinstance(value, str) and value:
        path = (root / value).resolve()
        where = str(path)
        if path.suffix.lower() == ".json":
            ids = read_mapping(path, key)
        else:
            if not path.is_file():
                raise DataNotFoundError("split list not found", file=path, key=key,
                                        hint="the path is relative to the data folder (`path`)")
            ids = [line.split("#", 1)[0].strip()
                   for line in path.read_text(encoding="utf-8").splitlines()]
            ids = [i for i in ids if i]
    else:
        raise _fail(origin, key, f"expected a file name or a list of patch ids, got {value!r}",
                    'e.g. test = "test.txt" (one id a line) or test = ["a_1", "a_2"]')
    if not isinstance(ids, list) or not all(
            isinstance(i, str | int) and not isinstance(i, bool) for i in ids):
        raise _fail(where, key, "expected a list of patch ids", '["a_1", "a_2", ...]')
    return [str(i) for i in ids], where


def _split_lists(section: Mapping[str, Any], root: Path, ids: Sequence[str],
                 origin: str | None, manifest: Mapping[str, Any] | None
                 ) -> tuple[dict[str, list[str]], dict[str, str]]:
    """The split lists (train / val / test) and where each came from, checked."""
    inline = [n for n in LIST_NAMES if n in section]
    raw: Any = None
    where: str | None = origin
    key = "data.splits"
    if "splits" in section:
        if inline:
            raise _fail(origin, f"data.{inline[0]}", "split lists given twice",
                        f"give them in `splits` or as {inline}, not both")
        raw = section["splits"]
        if isinstance(raw, str) and raw:
            path = (root / raw).resolve()
            raw, where = read_mapping(path, key), str(path)
    elif inline:
        raw = {n: section[n] for n in inline}
    elif manifest is not None and "splits" in manifest:
        raw, where, key = manifest["splits"], str(manifest.get("__file__")), "manifest.splits"
    if raw is None:
        return {}, {}
    if not isinstance(raw, Mapping) or not raw:
        raise _fail(where, key, f"expected named lists {list(LIST_NAMES)}, got {raw!r}",
                    'e.g. {"train": [...], "val": [...], "test": [...]}')
    lists: dict[str, list[str]] = {}
    sources: dict[str, str] = {}
    for name, value in raw.items():
        norm = "val" if name == "validation" else name
        if norm not in LIST_NAMES or norm in lists:
            raise _fail(where, f"{key}.{name}", f"unknown or repeated list {name!r}",
                        f"name the lists {list(LIST_NAMES)}")
        base = Path(where).parent if where and key == "data.splits" and where != origin else root
        lists[norm], sources[norm] = _read_list(value, base, f"{key}.{norm}", where)
    known = set(ids)
    for name, members in lists.items():
        at = sources[name]
        missing = [i for i in members if i not in known]
        if missing:
            raise _fail(at, f"{key}.{name}", f"ids not in the patch folder: {_few(missing)}",
                        f"every id must name a patch (ids are like {_few(list(ids))}); "
                        "fix the list or the `id` regex")
        repeated = sorted({i for i in members if members.count(i) > 1})
        if repeated:
            raise _fail(at, f"{key}.{name}", f"ids listed twice: {_few(repeated)}",
                        "list each patch once")
    names = list(lists)
    for a, first in enumerate(names):
        for second in names[a + 1:]:
            both = sorted(set(lists[first]) & set(lists[second]))
            if both:
                raise _fail(sources[second], f"{key}.{second}",
                            f"ids in both {first} and {second}: {_few(both)}",
                            "the lists must be disjoint: a patch belongs to one split")
    return lists, sources


def _group_table(doc: Any, path: str, key: str, column: str | None,
                 id_column: str) -> dict[str, str]:
    """{id: group} from a JSON/TOML mapping or a list of records."""
    out: dict[str, str] = {}
    if isinstance(doc, Mapping) and doc and all(isinstance(v, list) for v in doc.values()):
        for group, members in doc.items():  # {"north": ["a_1", ...]}
            for pid in members:
                if str(pid) in out:
                    raise _fail(path, key, f"patch {pid!r} is in groups {out[str(pid)]!r} and "
                                f"{group!r}", "give each patch one group")
                out[str(pid)] = str(group)
        return out
    if isinstance(doc, Mapping) and all(isinstance(v, str | int) for v in doc.values()):
        return {str(k): str(v) for k, v in doc.items()}  # {"a_1": "north"}
    if isinstance(doc, list) and column is not None and all(isinstance(r, Mapping) for r in doc):
        return _records(doc, path, key, column, id_column)
    raise _fail(path, key, "expected {group: [ids]}, {id: group} or records with a column",
                '{"north": ["a_1", "a_2"], "south": ["b_1"]}')


def _records(rows: Sequence[Mapping[str, Any]], path: str, key: str, column: str,
             id_column: str) -> dict[str, str]:
    header = set(rows[0]) if rows else set()
    for needed, what in ((id_column, "id_column"), (column, "column")):
        if needed not in header:
            raise _fail(path, f"{key}.{what}", f"no column {needed!r} (columns: "
                        f"{sorted(header)})", f"set {what} to one of them")
    return {str(r[id_column]).strip(): str(r[column]).strip() for r in rows}


def _groups(section: Mapping[str, Any], root: Path, ids: Sequence[str], origin: str | None,
            manifest: Mapping[str, Any] | None) -> tuple[dict[str, str] | None, str | None]:
    """{id: group} for every patch (or None without groups) and a description of the source."""
    raw = section.get("group")
    if raw is None:
        if manifest is None or "groups" not in manifest:
            return None, None
        path = str(manifest.get("__file__"))
        table = _group_table(manifest["groups"], path, "manifest.groups", None, "id")
        return _complete(table, ids, path, "manifest.groups"), f"manifest {path}"
    hint = ("group = { regex = '^(?P<group>[a-z]+)_' } or "
            'group = { file = "groups.csv", column = "region" }')
    if not isinstance(raw, Mapping) or not raw or not set(raw) <= _GROUP_KEYS or (
            ("regex" in raw) == ("file" in raw)):
        raise _fail(origin, "data.group", f"expected a table with regex or file, got {raw!r}",
                    hint)
    if "regex" in raw:
        if set(raw) != {"regex"}:
            raise _fail(origin, "data.group", "regex takes no other key", hint)
        try:
            regex = re.compile(raw["regex"]) if isinstance(raw["regex"], str) else None
        except re.error as exc:
            raise _fail(origin, "data.group.regex", f"not a regular expression ({exc})",
                        hint) from exc
        if regex is None:
            raise _fail(origin, "data.group.regex", f"expected a string, got {raw['regex']!r}",
                        hint)
        table = {}
        for pid in ids:
            match = regex.search(pid)
            if match is None:
                raise _fail(origin, "data.group.regex", f"patch id {pid!r} does not match "
                            f"{regex.pattern!r}", "widen the regex: every patch needs a group")
            table[pid] = (match.group("group") if "group" in regex.groupindex
                          else match.group(1) if regex.groups else match.group(0))
        return table, f"regex {regex.pattern!r} on the patch ids"
    file = raw["file"]
    if not isinstance(file, str) or not file:
        raise _fail(origin, "data.group.file", f"expected a file name, got {file!r}", hint)
    path = (root / file).resolve()
    id_column = raw.get("id_column", "id")
    column = raw.get("column")
    for name, value in (("column", column), ("id_column", id_column)):
        if value is not None and not (isinstance(value, str) and value):
            raise _fail(origin, f"data.group.{name}", f"expected a column name, got {value!r}",
                        hint)
    if path.suffix.lower() in (".csv", ".tsv", ".txt"):
        if column is None:
            raise _fail(origin, "data.group.column", "a table needs the column of the groups",
                        'e.g. group = { file = "groups.csv", column = "region" }')
        if not path.is_file():
            raise DataNotFoundError("group table not found", file=path, key="data.group.file",
                                    hint="the path is relative to the data folder (`path`)")
        with path.open(newline="", encoding="utf-8") as handle:
            sample = handle.read(4096)
            handle.seek(0)
            delimiter = "\t" if path.suffix.lower() == ".tsv" or (
                "\t" in sample and "," not in sample) else ","
            rows = list(csv.DictReader(handle, delimiter=delimiter))
        table = _records(rows, str(path), "data.group", column, id_column)
        what = f"column {column!r} of {path.name}"
    else:
        table = _group_table(read_mapping(path, "data.group.file"), str(path), "data.group",
                             column, id_column)
        what = str(path.name)
    return _complete(table, ids, str(path), "data.group"), what


def _complete(table: Mapping[str, str], ids: Sequence[str], path: str, key: str
              ) -> dict[str, str]:
    """Every patch's group.

    A patch the table does not name is an error; extra rows are not, since a table may
    describe a whole data set of which the folder holds a part.
    """
    missing = [i for i in ids if i not in table]
    if missing:
        raise _fail(path, key, f"no group for patches {_few(missing)}",
                    "every patch needs a group; add them to the table")
    return {i: table[i] for i in ids}


def resolve_patch_splits(section: Mapping[str, Any], root: Path, ids: Sequence[str],
                         origin: str | None = None,
                         manifest: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Groups and split lists of a patch collection, as split options of its cube.

    Args:
        section: The ``[data]`` section.
        root: The data folder; file names are relative to it.
        ids: Every patch id, in cube order.
        origin: The study (or scene) file, named in errors about inline values.
        manifest: The folder's parsed manifest (``groups`` / ``splits`` entries), with its
            path under ``__file__``; the study's keys win.

    Returns:
        ``{"groups": {id: group}, "group_from": str, "lists": {name: [ids]},
        "lists_from": {name: file}}``, each only when given; ``test_groups`` checked.

    Raises:
        SplitFileError: A list names an unknown id, lists overlap, a patch has no group, a
            test group is unknown.
        DataNotFoundError: A named file does not exist.
    """
    ids = [str(i) for i in ids]
    out: dict[str, Any] = {}
    groups, group_from = _groups(section, root, ids, origin, manifest)
    if groups is not None:
        out |= {"groups": groups, "group_from": group_from}
    lists, sources = _split_lists(section, root, ids, origin, manifest)
    if lists:
        out |= {"lists": lists, "lists_from": sources}
    if "test_groups" in section:
        chosen = section["test_groups"]
        if not isinstance(chosen, list) or not chosen or not all(
                isinstance(g, str | int) and not isinstance(g, bool) for g in chosen):
            raise _fail(origin, "data.test_groups", f"expected a list of group names, got "
                        f"{chosen!r}", 'e.g. test_groups = ["north"]')
        if groups is None:
            raise _fail(origin, "data.test_groups", "test_groups needs groups",
                        "declare them with group = { regex = ... } or { file = ... }")
        if "test" in lists or "train" in lists:
            raise _fail(origin, "data.test_groups", "the test split is given twice (by "
                        "test_groups and by a split list)", "keep one of them")
        known = sorted(set(groups.values()))
        unknown = [str(g) for g in chosen if str(g) not in known]
        if unknown:
            raise _fail(origin, "data.test_groups", f"unknown group(s) {unknown}",
                        f"groups: {_few(known)}")
        out["test_groups"] = [str(g) for g in chosen]
    return out


def check_only_patches(section: Mapping[str, Any], fmt: str) -> None:
    """Refuse patch-collection split keys on a format without patch ids.

    Raises:
        SceneSpecError: One is given.
    """
    given = [k for k in PATCH_SPLIT_KEYS if k in section]
    if given:
        raise SceneSpecError(f"{given} apply to patch collections, and format {fmt!r} is a "
                             "scene", key=f"data.{given[0]}",
                             hint='use split = "blocked" (spatial blocks) for a scene, or '
                             'format = "patches" / "l4s"')
