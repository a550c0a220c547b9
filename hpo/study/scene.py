"""A study file and its scene: the spec with the command line's overrides applied.

The synthetic scene is generated when missing, and a scene's cube is opened for
``hpo predict``.

:mod:`hpo.study.prepare` turns the scene into the data sets tuning and training read.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import data
from data.scene import resolve_section
from data.sources import recipe_for
from hpo.engine.errors import SpecError
from hpo.study.schema import StudySpec, load_study_file

SYNTHETIC_KEY = "synthetic"
"""``[data.synthetic]``: generate the study's scene when its file does not exist."""

_SYNTHETIC_KEYS = {"size": 256, "seed": 0, "n_dates": 5}



def load_study(
    path: str | Path,
    *,
    storage: str | None = None,
    runner: str | None = None,
    check_paths: bool = True,
    data_path: str | Path | None = None,
    allow_outside: Sequence[str | Path] = (),
) -> StudySpec:
    """Read a study file, with the command line's overrides applied.

    A missing scene file is not an error when the ``[data]`` section carries a
    ``[data.synthetic]`` table (:func:`ensure_scene` generates it).

    Args:
        path: The study file.
        storage: A storage URL replacing the file's (relative paths: the working folder).
        runner: ``"local"`` or ``"ray"``, replacing ``[runner] kind``.
        check_paths: Check that the data files exist (or can be generated).
        data_path: Where the data are (relative paths: the working folder), replacing
            ``[data] path`` (a data folder: Landslide4Sense, Kashmir, ...) or ``[data]
            scene`` (a scene file, or the folder holding ``scene.toml``). It must exist
            and hold data: the study's own data are never used in its place.
        allow_outside: Folders the study file may write into (storage, artifacts, cube
            cache) besides its own folder and the working folder (``--allow-outside``;
            the environment's ``HPO_ALLOW_OUTSIDE`` adds more).

    Returns:
        The validated spec.

    Raises:
        SpecError: The file is missing or invalid, its scene is missing and cannot be
            generated, or ``data_path`` is missing or empty.
    """
    # A storage given on the command line is the user's choice: the file's own is then
    # not held to the study folder.
    explicit = ("storage",) if storage is not None else ()
    spec = load_study_file(path, check_paths=False, explicit=explicit, allow=allow_outside)
    if data_path is not None:
        spec = _with_data_path(spec, Path(data_path), check=check_paths)
    if check_paths and not _scene_ready(spec) and synthetic_settings(spec) is None:
        # raises the spec's own message
        spec = load_study_file(path, check_paths=True, explicit=explicit, allow=allow_outside)
    synthetic_settings(spec)  # validate the table even when the scene exists
    if storage is not None:
        spec = dataclasses.replace(spec, storage=_storage_url(storage))
    if runner is not None:
        if runner not in ("local", "ray"):
            raise SpecError(
                f"unknown runner {runner!r}",
                key="runner.kind",
                hint="use --runner local or --runner ray",
            )
        spec = dataclasses.replace(spec, runner=dataclasses.replace(spec.runner, kind=runner))
    return spec


def _with_data_path(spec: StudySpec, where: Path, *, check: bool = True) -> StudySpec:
    """``spec`` with its data folder (or scene file) replaced by ``where``.

    With ``check``, ``where`` must exist and hold data (a scene file, or a folder that is
    not empty); without, it is taken as given (commands that only read results).
    """
    given = where
    where = where.expanduser().resolve()
    data = dict(spec.data)

    def refuse(problem: str, hint: str) -> SpecError:
        # Named here, not left to the data checks: a missing override once fell back to
        # the study's own data silently.
        return SpecError(
            f"--data-path {given}: {problem}",
            file=str(spec.file) if spec.file else None,
            key="data",
            hint=hint,
        )

    if check and ("path" in data or "scene" in data) and not where.exists():
        raise refuse("not found (it does not exist)",
                     "check the path (relative to the working folder)")
    if "path" in data:
        if check and where.is_dir() and not any(where.iterdir()):
            raise refuse("the folder is empty", "point it at the folder that holds the data")
        data["path"] = str(where)
    elif "scene" in data:
        scene = where / "scene.toml" if where.is_dir() else where
        if check and not scene.is_file():
            raise refuse(
                f"no scene file {scene.name} in the folder",
                f"pass the scene file itself, or write one with `hpo synth {given}`",
            )
        data["scene"] = str(scene)
        data.pop(SYNTHETIC_KEY, None)  # the user's data: nothing to generate
    else:
        raise SpecError(
            "--data-path needs a [data] section with `path` or `scene`",
            file=str(spec.file) if spec.file else None,
            key="data",
            hint="edit the source paths in the study file instead",
        )
    return dataclasses.replace(spec, data=data)


def _storage_url(url: str) -> str:
    """A command-line storage URL; relative file paths are relative to the working folder."""
    if "://" not in url:
        path = Path(url).expanduser().resolve()
        if path.suffix in (".log", ".jsonl", ".journal"):
            return f"journal://{path}"
        return f"sqlite:///{path}"
    if url.startswith("sqlite:///") and url[len("sqlite:///") :] not in ("", ":memory:"):
        return f"sqlite:///{Path(url[len('sqlite:///') :]).expanduser().resolve()}"
    return url


def scene_file(spec: StudySpec) -> Path | None:
    """The scene file the study's ``[data] scene`` names (absolute), or ``None``."""
    return _section_scene_file(spec.data, spec.base_dir)


def _scene_ready(spec: StudySpec) -> bool:
    path = scene_file(spec)
    return path is None or path.is_file()


def synthetic_settings(spec: StudySpec) -> dict[str, int] | None:
    """The validated ``[data.synthetic]`` table (defaults filled in), or ``None``.

    Raises:
        SpecError: The table has an unknown key or a bad value, or the study has no
            ``scene`` file to write.
    """
    return _synthetic_settings(spec.data, spec.base_dir, spec.file)


def _section_scene_file(data: Mapping[str, Any], base_dir: Path) -> Path | None:
    scene = data.get("scene")
    if not isinstance(scene, str):
        return None
    path = Path(scene).expanduser()
    return path if path.is_absolute() else (Path(base_dir) / path).resolve()


def _synthetic_settings(
    data: Mapping[str, Any], base_dir: Path, origin: Path | str | None
) -> dict[str, int] | None:
    raw = data.get(SYNTHETIC_KEY)
    if raw is None:
        return None
    file = str(origin) if origin else None
    key = f"data.{SYNTHETIC_KEY}"
    if not isinstance(raw, Mapping):
        raise SpecError(
            "expected a table",
            file=file,
            key=key,
            hint="write it as [data.synthetic] with size, seed, n_dates",
        )
    for name in raw:
        if name not in _SYNTHETIC_KEYS:
            raise SpecError(
                f"unknown key {name!r}",
                file=file,
                key=f"{key}.{name}",
                hint=f"valid keys: {', '.join(_SYNTHETIC_KEYS)}",
            )
    settings = {**_SYNTHETIC_KEYS, **raw}
    for name, value in settings.items():
        low = {"size": 16, "seed": 0, "n_dates": 1}[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise SpecError(
                f"{name} = {value!r}",
                file=file,
                key=f"{key}.{name}",
                hint=f"use an integer >= {low}",
            )
    path = _section_scene_file(data, base_dir)
    if path is None:
        raise SpecError(
            "[data.synthetic] needs a scene file to write",
            file=file,
            key=key,
            hint='add scene = "some/folder/scene.toml" to [data]',
        )
    if path.name != "scene.toml":
        raise SpecError(
            f"synthetic scenes are written as scene.toml, not {path.name}",
            file=file,
            key="data.scene",
            hint="name the scene file scene.toml",
        )
    return settings


def ensure_scene(spec: StudySpec, say: Callable[[str], None] = print) -> Path | None:
    """Generate the study's synthetic scene when its file does not exist yet.

    Args:
        spec: The study.
        say: Where to tell the user what happens.

    Returns:
        The scene file written, or ``None`` when nothing had to be generated.

    Raises:
        SpecError: The scene file is missing and the study has no ``[data.synthetic]``.
    """
    return ensure_section_scene(spec.data, spec.base_dir, origin=spec.file, say=say)


def ensure_section_scene(
    data: Mapping[str, Any],
    base_dir: str | Path,
    *,
    origin: str | Path | None = None,
    say: Callable[[str], None] = print,
) -> Path | None:
    """:func:`ensure_scene` for a bare ``[data]`` section (e.g. an export's).

    Args:
        data: The section, ``synthetic`` table included.
        base_dir: The folder its relative paths refer to.
        origin: The file it came from, for messages.
        say: Where to tell the user what happens.

    Returns:
        The scene file written, or ``None`` when nothing had to be generated.

    Raises:
        SpecError: The scene file is missing and the section has no ``synthetic`` table.
    """
    base_dir = Path(base_dir)
    path = _section_scene_file(data, base_dir)
    if path is None or path.is_file():
        return None
    settings = _synthetic_settings(data, base_dir, origin)
    if settings is None:
        raise SpecError(
            f"scene file {str(path)!r} does not exist",
            file=str(origin) if origin else None,
            key="data.scene",
            hint=f"generate it with `hpo synth {path.parent}`",
        )
    # the generator pulls in geopandas and scipy, which only a missing scene needs
    from data.synthetic import generate_scene

    say(
        f"scene {path} does not exist: generating the synthetic scene "
        f"({settings['size']} x {settings['size']} px, {settings['n_dates']} dates, "
        f"seed {settings['seed']})"
    )
    scene = generate_scene(
        path.parent, size=settings["size"], n_dates=settings["n_dates"], seed=settings["seed"]
    )
    say(describe_scene(scene))
    return Path(scene.scene_path)


def describe_scene(scene: Any) -> str:
    """One line of statistics of a :class:`data.synthetic.SyntheticScene`."""
    rows, cols = scene.shape
    last = scene.dates[-1]
    return (
        f"{rows} x {cols} px, dates {', '.join(scene.dates)}, "
        f"{scene.n_landslides[last]} landslides covering "
        f"{100 * scene.landslide_fraction[last]:.1f} % of the scene at {last}"
    )


def data_section(spec: StudySpec) -> dict[str, Any]:
    """The ``[data]`` section as :func:`data.prepare` reads it.

    The ``synthetic`` table is the toolkit's, not the data package's, so it is left out.
    """
    return {k: v for k, v in spec.data.items() if k != SYNTHETIC_KEY}


def open_scene(
    target: str | Path,
    *,
    cache_dir: str | Path | None = None,
    say: Callable[[str], None] = print,
) -> Any:
    """The cube of a scene given as a folder, a scene file or a study file.

    Args:
        target: A folder holding ``scene.toml``, a scene file, or a study file (its
            ``[data]``; a missing ``[data.synthetic]`` scene is generated).
        cache_dir: Where the cube is cached (default: the study's ``cache_dir``, else
            ``.cache/cubes`` in the working folder, since a scene folder may be read-only).
        say: Where to tell the user what happens.

    Returns:
        The prepared (cached, memory-mapped) cube.

    Raises:
        SpecError: The study file is invalid.
        data.DataError: The scene is missing or cannot be read.
    """
    path = Path(target).expanduser().resolve()
    if path.is_dir():
        path = path / "scene.toml"
    if not path.is_file():
        raise data.DataNotFoundError(
            "scene not found", file=path, hint="pass a scene folder, scene.toml or study file"
        )
    try:
        is_study = "stages" in tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError):
        is_study = path.suffix == ".toml" and path.name != "scene.toml"
    if is_study:
        spec = load_study(path)
        ensure_scene(spec, say=say)
        cached = Path(cache_dir) if cache_dir is not None else None
        return data.prepare(data_section(spec), spec.base_dir, cached)
    cached = Path(cache_dir) if cache_dir is not None else Path.cwd() / data.DEFAULT_CACHE_DIR
    return data.prepare({"scene": path.name}, path.parent, cached)


def check_data(spec: StudySpec) -> list[Path]:
    """Check the data section and that every input file exists, without building anything.

    Returns:
        The input files.

    Raises:
        data.DataError: A key is wrong or a file is missing.
    """
    section, base = resolve_section(data_section(spec), spec.base_dir)
    recipe = recipe_for(section, base, None, str(spec.file) if spec.file else None)
    missing = [p for p in recipe.inputs if not Path(p).exists()]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise data.DataNotFoundError(
            f"input file missing{more}",
            file=missing[0],
            hint="check the scene's paths (relative to its file)",
        )
    return [Path(p) for p in recipe.inputs]


__all__ = [
    "SYNTHETIC_KEY",
    "check_data",
    "data_section",
    "describe_scene",
    "ensure_scene",
    "ensure_section_scene",
    "load_study",
    "open_scene",
    "scene_file",
    "synthetic_settings",
]
