"""The scene description (the ``[data]`` section / scene.toml) parsed into checked dataclasses."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data.errors import DataNotFoundError, SceneSpecError
from data.terrain import DEFAULT_TPI_RADII, DEM_DERIVATIVES

__all__ = [
    "FORMATS",
    "OPTION_KEYS",
    "GridSpec",
    "LabelSpec",
    "SceneSpec",
    "SourceSpec",
    "load_scene",
    "parse_grid",
    "parse_scene",
    "resolve_section",
]

FORMATS = ("geotiff", "l4s", "patches", "kashmir", "hokkaido")
SCENE_KEYS = {"format", "dates", "sources", "labels", "grid"}
# Keys that are not part of the scene but travel in the same [data] section of a study file.
OPTION_KEYS = {
    "patch_size", "overlap", "split", "fractions", "block_size", "seed", "target",
    "cache_dir", "scene", "select", "folds", "fold", "fold_role", "stratify", "context",
    "normalization", "clip",
    # validation and the buffer (any cube); groups and split lists (patch collections)
    "validation", "buffer", "group", "splits", "train", "val", "test", "test_groups",
    # how to regenerate a synthetic scene (the toolkit's ``[data.synthetic]``); an exported
    # data section carries it, and the cube itself does not depend on it
    "synthetic",
}
_SOURCE_KEYS = {
    "name", "kind", "type", "nodata", "path", "paths", "vector", "codes", "encoding",
    "derive", "api_decay", "tpi_radii",
}
_DERIVE = {"raster": set(DEM_DERIVATIVES), "dynamic": {"api"}, "vector": {"distance"}}


@dataclass(frozen=True)
class SourceSpec:
    """One input source of a scene.

    Attributes:
        name: Unique source name.
        kind: ``optical`` or ``factor``.
        type: ``continuous`` or ``categorical``.
        path: Static raster (one for all dates).
        paths: Raster per date name (a dynamic source).
        vector: Line layer (distance to faults).
        nodata: Overrides the files' nodata.
        codes: Declared categorical codes.
        encoding: ``onehot`` or ``codes`` (categorical only).
        derive: Derived sources to add: DEM derivatives (``slope``, ``aspect``,
            ``curvature``, ``roughness``, ``tpi``; :mod:`data.terrain`) of a static raster,
            ``api`` of a dynamic one, ``distance`` of a vector layer.
        api_decay: Decay of the antecedent precipitation index.
        tpi_radii: Window radii in pixels of the ``tpi`` outputs, one output each.
    """

    name: str
    kind: str
    type: str
    path: Path | None = None
    paths: dict[str, Path] | None = None
    vector: Path | None = None
    nodata: float | None = None
    codes: tuple[int, ...] = ()
    encoding: str = "onehot"
    derive: tuple[str, ...] = ()
    api_decay: float = 0.9
    tpi_radii: tuple[int, ...] = DEFAULT_TPI_RADII

    @property
    def dynamic(self) -> bool:
        """True when the source has one raster per date."""
        return self.paths is not None


@dataclass(frozen=True)
class LabelSpec:
    """Landslide labels: rasters per date or a vector inventory.

    Attributes:
        paths: Label raster per date name (nonzero = landslide).
        vector: Polygon inventory.
        date_field: Field with each polygon's observation date; None = all dates.
    """

    paths: dict[str, Path] | None = None
    vector: Path | None = None
    date_field: str | None = None


@dataclass(frozen=True)
class GridSpec:
    """The target grid: like a raster, or CRS + resolution (+ bounds).

    Attributes:
        like: Raster whose grid to use.
        crs: Target CRS.
        resolution: Pixel size in CRS units.
        bounds: (left, bottom, right, top); default: the first optical raster's extent.
    """

    like: Path | None = None
    crs: str | None = None
    resolution: float | None = None
    bounds: tuple[float, float, float, float] | None = None


@dataclass(frozen=True)
class SceneSpec:
    """A checked scene description with absolute paths.

    Attributes:
        format: Adapter name.
        dates: Date names in order.
        sources: The sources, in output order.
        labels: Labels, or None for an unlabelled scene.
        grid: Grid choice; None = the first optical (else first) raster's grid.
        origin: Where the description came from, for messages.
    """

    format: str
    dates: tuple[str, ...]
    sources: tuple[SourceSpec, ...]
    labels: LabelSpec | None
    grid: GridSpec | None
    origin: str


def load_scene(path: str | Path) -> dict[str, Any]:
    """Read the ``[data]`` table of a scene.toml (or of a study file).

    Paths inside stay relative to the file; pass ``base_dir=path.parent`` when building.

    Args:
        path: The TOML file.

    Returns:
        The ``[data]`` table as a dict.

    Raises:
        DataNotFoundError: The file does not exist.
        SceneSpecError: It is not valid TOML or has no ``[data]`` table.
    """
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError("scene file not found", file=path, hint="check the path")
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SceneSpecError(f"not valid TOML ({exc})", file=path, hint="fix the syntax") from exc
    section = doc.get("data")
    if not isinstance(section, dict):
        raise SceneSpecError(
            "no [data] table", file=path, key="data",
            hint="a scene file holds exactly one [data] section",
        )
    return section


def resolve_section(section: Mapping[str, Any], base_dir: Path) -> tuple[dict[str, Any], Path]:
    """Follow ``scene = "path"``: the scene file's keys plus the section's options.

    Args:
        section: A ``[data]`` section.
        base_dir: Directory its relative paths are relative to.

    Returns:
        (merged section, directory the merged section's scene paths are relative to).
    """
    if "scene" not in section:
        return dict(section), base_dir
    scene_path = (base_dir / str(section["scene"])).resolve()
    scene = load_scene(scene_path)
    if "scene" in scene:
        raise SceneSpecError(
            "a scene file cannot point at another scene", file=scene_path, key="scene",
            hint="list the sources in this file",
        )
    merged = dict(scene)
    merged.update({k: v for k, v in section.items() if k != "scene"})
    return merged, scene_path.parent


class _Checker:
    """Shared helpers that turn a bad value into a SceneSpecError naming the key."""

    def __init__(self, origin: str, base_dir: Path) -> None:
        self.origin = origin
        self.base_dir = base_dir

    def fail(self, key: str, message: str, hint: str) -> SceneSpecError:
        return SceneSpecError(message, file=self.origin, key=key, hint=hint)

    def keys(self, table: Mapping[str, Any], allowed: set[str], key: str) -> None:
        unknown = sorted(set(table) - allowed)
        if unknown:
            raise self.fail(key, f"unknown key(s) {unknown}", f"allowed: {sorted(allowed)}")

    def choice(self, table: Mapping[str, Any], name: str, choices: tuple[str, ...], key: str,
               default: str | None = None) -> str:
        value = table.get(name, default)
        if value not in choices:
            raise self.fail(f"{key}.{name}", f"{value!r} is not one of {list(choices)}",
                            f"set {name} to one of {list(choices)}")
        return value

    def path(self, value: Any, key: str) -> Path:
        if not isinstance(value, str) or not value:
            raise self.fail(key, f"expected a file path, got {value!r}", "write it as a string")
        return (self.base_dir / value).resolve()

    def dated_paths(self, value: Any, key: str, dates: tuple[str, ...], *, complete: bool
                    ) -> dict[str, Path]:
        if not isinstance(value, Mapping) or not value:
            raise self.fail(key, "expected a table of date name -> file",
                            'e.g. paths = { "2008" = "optical/2008_red.tif" }')
        unknown = [d for d in value if d not in dates]
        missing = [d for d in dates if d not in value]
        if unknown or (complete and missing):
            raise self.fail(key, f"dates {unknown or missing} "
                            f"{'are not scene dates' if unknown else 'have no file'}",
                            f"give one file for each of the scene dates {list(dates)}")
        return {d: self.path(value[d], f"{key}.{d}") for d in dates if d in value}


def parse_scene(
    section: Mapping[str, Any], base_dir: str | Path, *, origin: str | None = None
) -> SceneSpec:
    """Check a ``[data]`` section and resolve its paths.

    Args:
        section: The section (option keys such as ``patch_size`` are allowed and ignored).
        base_dir: Directory relative paths are resolved against.
        origin: File named in errors (default: ``"[data]"``).

    Returns:
        The scene.

    Raises:
        SceneSpecError: A key is missing, unknown or has a bad value.
    """
    base = Path(base_dir)
    check = _Checker(origin or "[data] section", base)
    check.keys(section, SCENE_KEYS | OPTION_KEYS, "data")
    fmt = check.choice(section, "format", FORMATS, "data", default="geotiff")
    dates = section.get("dates")
    if (not isinstance(dates, list) or not dates
            or not all(isinstance(d, str) and d for d in dates)):
        raise check.fail("data.dates", f"expected a list of date names, got {dates!r}",
                         'e.g. dates = ["2008", "2011"] (strings, in time order)')
    if len(set(dates)) != len(dates):
        raise check.fail("data.dates", "date names repeat", "give each date once")
    dates_t = tuple(dates)
    raw_sources = section.get("sources")
    if not isinstance(raw_sources, list) or not raw_sources:
        raise check.fail("data.sources", "expected at least one [[data.sources]] table",
                         "add the optical bands and factors as [[data.sources]]")
    sources = tuple(
        _parse_source(s, f"data.sources[{i}]", dates_t, check) for i, s in enumerate(raw_sources)
    )
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise check.fail("data.sources", f"source names repeat: {dup}", "give each a unique name")
    labels = _parse_labels(section.get("labels"), dates_t, check)
    grid = _parse_grid(section.get("grid"), check)
    return SceneSpec(fmt, dates_t, sources, labels, grid, check.origin)


def _parse_source(raw: Any, key: str, dates: tuple[str, ...], check: _Checker) -> SourceSpec:
    if not isinstance(raw, Mapping):
        raise check.fail(key, "expected a table", "write it as [[data.sources]]")
    check.keys(raw, _SOURCE_KEYS, key)
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise check.fail(f"{key}.name", "missing name", 'add name = "red"')
    key = f"{key} ({name})"
    kind = check.choice(raw, "kind", ("optical", "factor"), key)
    typ = check.choice(raw, "type", ("continuous", "categorical"), key, default="continuous")
    given = [k for k in ("path", "paths", "vector") if k in raw]
    if len(given) != 1:
        raise check.fail(key, f"needs exactly one of path / paths / vector, got {given}",
                         "path = static raster, paths = one raster per date, "
                         "vector = line layer")
    path = check.path(raw["path"], f"{key}.path") if "path" in raw else None
    vector = check.path(raw["vector"], f"{key}.vector") if "vector" in raw else None
    paths = (check.dated_paths(raw["paths"], f"{key}.paths", dates, complete=True)
             if "paths" in raw else None)
    codes = raw.get("codes", [])
    if typ == "categorical":
        if (not isinstance(codes, list) or not codes
                or not all(isinstance(c, int) and not isinstance(c, bool) for c in codes)):
            raise check.fail(f"{key}.codes", f"expected a list of integer codes, got {codes!r}",
                             "declare the codes the raster may hold, e.g. codes = [1, 2, 3]")
    elif "codes" in raw or "encoding" in raw:
        raise check.fail(key, "codes / encoding apply to categorical sources only",
                         'set type = "categorical" or drop them')
    encoding = check.choice(raw, "encoding", ("onehot", "codes"), key, default="onehot")
    derive = raw.get("derive", ["distance"] if vector else [])
    allowed = _DERIVE["vector" if vector else "dynamic" if paths else "raster"]
    if (not isinstance(derive, list) or not set(derive) <= allowed
            or (derive and typ == "categorical")):
        raise check.fail(f"{key}.derive", f"{derive!r} cannot be derived from this source",
                         f"this source allows {sorted(allowed)} (continuous sources only)")
    if vector is not None and derive != ["distance"]:
        raise check.fail(f"{key}.derive", "a vector source must derive distance",
                         'set derive = ["distance"]')
    nodata = raw.get("nodata")
    if nodata is not None and (isinstance(nodata, bool) or not isinstance(nodata, int | float)):
        raise check.fail(f"{key}.nodata", f"expected a number, got {nodata!r}", "e.g. nodata = 0")
    decay = raw.get("api_decay", 0.9)
    if not isinstance(decay, int | float) or not 0 < decay < 1:
        raise check.fail(f"{key}.api_decay", f"expected 0 < decay < 1, got {decay!r}",
                         "e.g. api_decay = 0.9")
    radii = raw.get("tpi_radii", list(DEFAULT_TPI_RADII))
    if (not isinstance(radii, list) or not radii or len(set(radii)) != len(radii)
            or not all(isinstance(r, int) and not isinstance(r, bool) and r > 0 for r in radii)):
        raise check.fail(f"{key}.tpi_radii", f"expected distinct positive pixel radii, got "
                         f"{radii!r}", "e.g. tpi_radii = [8, 32] (window sides 17 and 65 px)")
    if "tpi_radii" in raw and "tpi" not in derive:
        raise check.fail(f"{key}.tpi_radii", "tpi_radii without tpi in derive",
                         'add "tpi" to derive or drop tpi_radii')
    return SourceSpec(
        name=name, kind=kind, type=typ, path=path, paths=paths, vector=vector,
        nodata=None if nodata is None else float(nodata), codes=tuple(codes),
        encoding=encoding, derive=tuple(derive), api_decay=float(decay),
        tpi_radii=tuple(radii),
    )


def _parse_labels(raw: Any, dates: tuple[str, ...], check: _Checker) -> LabelSpec | None:
    if raw is None:
        return None
    key = "data.labels"
    if not isinstance(raw, Mapping):
        raise check.fail(key, "expected a table", "write it as [data.labels]")
    check.keys(raw, {"paths", "vector", "date_field"}, key)
    if ("paths" in raw) == ("vector" in raw):
        raise check.fail(key, "needs exactly one of paths / vector",
                         "label rasters per date, or a polygon inventory with a date_field")
    if "paths" in raw:
        return LabelSpec(paths=check.dated_paths(raw["paths"], f"{key}.paths", dates,
                                                 complete=False))
    field = raw.get("date_field")
    if field is not None and not isinstance(field, str):
        raise check.fail(f"{key}.date_field", f"expected a field name, got {field!r}",
                         'e.g. date_field = "year"')
    return LabelSpec(vector=check.path(raw["vector"], f"{key}.vector"), date_field=field)


def parse_grid(raw: Mapping[str, Any], base_dir: str | Path, *, origin: str | None = None
               ) -> GridSpec | None:
    """Check a ``[data.grid]`` table (``like``, or ``crs`` + ``resolution`` [+ ``bounds``]).

    Args:
        raw: The table.
        base_dir: Directory a relative ``like`` path is resolved against.
        origin: File named in errors.

    Returns:
        The grid choice.
    """
    return _parse_grid(raw, _Checker(origin or "grid", Path(base_dir)))


def _parse_grid(raw: Any, check: _Checker) -> GridSpec | None:
    if raw is None:
        return None
    key = "data.grid"
    if not isinstance(raw, Mapping):
        raise check.fail(key, "expected a table", "write it as [data.grid]")
    check.keys(raw, {"like", "crs", "resolution", "bounds"}, key)
    if "like" in raw:
        if len(raw) > 1:
            raise check.fail(key, "`like` excludes crs / resolution / bounds", "keep one way")
        return GridSpec(like=check.path(raw["like"], f"{key}.like"))
    crs, res, bounds = raw.get("crs"), raw.get("resolution"), raw.get("bounds")
    if not isinstance(crs, str) or not isinstance(res, int | float) or res <= 0:
        raise check.fail(key, "needs crs (string) and resolution (> 0)",
                         'e.g. crs = "EPSG:32643", resolution = 30')
    if bounds is not None and (
        not isinstance(bounds, list) or len(bounds) != 4
        or not all(isinstance(b, int | float) for b in bounds)
        or bounds[0] >= bounds[2] or bounds[1] >= bounds[3]
    ):
        raise check.fail(f"{key}.bounds", f"expected [left, bottom, right, top], got {bounds!r}",
                         "left < right and bottom < top, in the grid CRS")
    return GridSpec(crs=crs, resolution=float(res),
                    bounds=None if bounds is None else tuple(float(b) for b in bounds))
