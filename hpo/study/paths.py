"""A study file on disk: reading it, and the paths it names, its outputs held to allowed folders.

A study file is data only (TOML: no includes, no code). The files it makes the toolkit
write (the storage file, the artifact folder, the cube cache) must stay inside the study
file's folder or the working folder; see :data:`OUTPUT_KEYS`. The user, not the study file,
may allow more folders (:func:`allowed_outside`). A path given on the command line
(``--storage``, ``-o``) is the user's own choice and may point anywhere.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Collection
from pathlib import Path
from typing import Any

from hpo.engine.errors import SpecError
from hpo.study.fields import fail

ALLOW_OUTSIDE_ENV = "HPO_ALLOW_OUTSIDE"
"""Environment variable: folders (``os.pathsep``-separated) a study file may also write into."""
OUTPUT_KEYS = ("storage", "artifacts", "data.cache_dir")
"""Study-file keys naming where the toolkit writes; each must stay inside the study's folder
or the working folder (``data.cache_dir`` may also use the study folder's parent, where the
shipped studies share ``../.cache/cubes``)."""

_STORAGE_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "redis", "rediss", "journal")
_JOURNAL_SUFFIXES = (".log", ".jsonl", ".journal")
_TOML_ONLY = {".yaml": "YAML", ".yml": "YAML", ".json": "JSON"}


def read_study_file(path: Path) -> dict[str, Any]:
    """A study file's tables, as TOML reads them (not validated yet).

    Args:
        path: The ``.toml`` file, absolute.

    Raises:
        SpecError: The path is a folder or missing, or the file is not readable UTF-8
            TOML; the hint names the format when the file is YAML or JSON.
    """
    if path.is_dir():
        raise SpecError(
            "is a folder, not a study file",
            file=str(path),
            hint="pass the .toml file inside it, e.g. studies/quickstart.toml",
        )
    if not path.is_file():
        raise SpecError(
            "study file not found",
            file=str(path),
            hint="check the path; studies/quickstart.toml is a template to copy",
        )
    hint = "see https://toml.io for the syntax"
    if path.suffix.lower() in _TOML_ONLY:
        hint = f"study files are TOML, not {_TOML_ONLY[path.suffix.lower()]}: " + hint
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise SpecError(
            f"not a text file (byte {exc.start} is not UTF-8)", file=str(path), hint=hint
        ) from exc
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"not valid TOML: {exc}", file=str(path), hint=hint) from exc
    except OSError as exc:
        raise SpecError(
            f"cannot read: {exc.strerror or exc}", file=str(path), hint="check its permissions"
        ) from exc


def allowed_outside(extra: Collection[str | Path] = ()) -> list[Path]:
    """Folders outside the study's own that the user allows it to write into.

    The study file cannot widen them: they come from the command line
    (``--allow-outside``, passed as ``extra``) and the environment variable
    :data:`ALLOW_OUTSIDE_ENV` (folders separated by ``os.pathsep``).

    Args:
        extra: Folders given on the command line.

    Returns:
        Absolute folders (symbolic links not followed, as output paths are judged).
    """
    listed = [p for p in os.environ.get(ALLOW_OUTSIDE_ENV, "").split(os.pathsep) if p.strip()]
    return [Path(os.path.normpath(Path(p).expanduser().absolute())) for p in [*extra, *listed]]


def resolve_path(base: Path, path: str) -> Path:
    """A path as written in a study file, absolute (relative ones against ``base``)."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else (base / p).resolve()


@dataclasses.dataclass(frozen=True)
class StudyContext:
    """What validating a study file needs to know beyond its tables (the validation context).

    Attributes:
        file: The study file (``None``: built from a dict).
        base: The folder its relative paths refer to.
        check_paths: Check that the files it refers to exist.
        explicit: Output keys the command line replaces (not confined).
        allow: Further folders output paths may lie in.
    """

    file: Path | None
    base: Path
    check_paths: bool
    explicit: frozenset[str]
    allow: tuple[Path, ...]

    def output(self, path: str, key: str, *, parent_ok: bool = False) -> Path:
        """Resolve an output path of the study file, held to the allowed folders.

        Args:
            path: The path as written (relative to the study file's folder).
            key: Its dotted key.
            parent_ok: Also allow the folder above the study's (the cube cache).

        Returns:
            The absolute path.

        Raises:
            PydanticCustomError: It leaves the study's folder and the working folder,
                through ``..``, ``~`` or an absolute path, and the command line did not give it.
        """
        resolved = resolve_path(self.base, path)
        if key in self.explicit:
            return resolved
        # Judged on the path as written, before symbolic links: a link the user made inside
        # the study's folder is the user's choice, not the study file's.
        lexical = Path(os.path.normpath(self.base / Path(path).expanduser()))
        roots = [self.base, Path.cwd()] + ([self.base.parent] if parent_ok else [])
        if not any(lexical.is_relative_to(root) for root in [*roots, *self.allow]):
            where = " or ".join(dict.fromkeys(str(root) for root in roots))
            raise fail(
                f"{path!r} resolves to {lexical}, outside {where}",
                "a study file may only write inside its own folder or the working folder: "
                "use a relative path without '..', run hpo from a folder that contains it"
                + (", pass it on the command line (--storage)" if key == "storage" else "")
                + f", or allow the folder with --allow-outside {lexical.parent} (or "
                f"{ALLOW_OUTSIDE_ENV})",
            )
        return resolved

    def storage_url(self, url: str | None, name: str | None) -> str:
        """The study's storage URL, a file in it resolved and held to the allowed folders.

        Args:
            url: As written: a URL, or a bare file name (a SQLite file, or a journal file
                for ``.log``, ``.jsonl`` and ``.journal``), as ``make_storage`` accepts
                too; ``None`` (left out): ``<study dir>/<name>.db``.
            name: The study's name.

        Returns:
            The URL, with an absolute file path for ``sqlite`` and ``journal``.

        Raises:
            PydanticCustomError: An unknown scheme, or a file outside the allowed folders.
        """
        if url is None:
            return f"sqlite:///{self.base / f'{name}.db'}"
        if "://" not in url:
            path = self.output(url, "storage")
            return f"journal://{path}" if path.suffix in _JOURNAL_SUFFIXES \
                else f"sqlite:///{path}"
        scheme = url.split("://", 1)[0].split("+", 1)[0]
        if scheme not in _STORAGE_SCHEMES:
            raise fail(
                f"unknown storage scheme {scheme!r}",
                "use sqlite:///file.db, postgresql://user@host/db, redis://host:6379/0 "
                "or journal:///file.log",
            )
        if scheme == "sqlite":
            path = url.split(":///", 1)[-1]
            if path in ("", ":memory:"):
                return url
            return f"{url.split(':///', 1)[0]}:///{self.output(path, 'storage')}"
        if scheme == "journal":
            # journal://rel/path is relative, journal:///abs/path absolute (as make_storage
            # reads it)
            return f"journal://{self.output(url[len('journal://') :], 'storage')}"
        return url


__all__ = [
    "ALLOW_OUTSIDE_ENV",
    "OUTPUT_KEYS",
    "StudyContext",
    "allowed_outside",
    "read_study_file",
    "resolve_path",
]
