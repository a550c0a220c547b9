"""What the ``hpo`` commands share: exit statuses, usage errors, common options, targets.

Errors a user can cause print one line on stderr (``hpo: error: ...``, with a hint) and
exit non-zero: :data:`EXIT_USAGE` for a bad command line or a file it names that is missing
or not of its kind (study file, export, checkpoint), :data:`EXIT_ERROR` otherwise
(:func:`exit_status` decides which).
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import Any

from hpo import study as st
from hpo.engine.errors import HPOError, SearchNotFoundError, SpecError
from hpo.engine.search import SEARCH_ATTR, SearchResult
from hpo.engine.storage import mask_url, require_stored
from hpo.study.schema import StudySpec

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """A wrong command line (exit status 2)."""


# --------------------------------------------------------------------------- options


def add_command(
    subparsers: Any, name: str, help_: str, description: str
) -> argparse.ArgumentParser:
    """Add the subcommand ``name``, with the ``--debug`` that may also follow it.

    Args:
        subparsers: The top parser's ``add_subparsers()`` action.
        name: The command's name.
        help_: Its line in ``hpo --help``.
        description: The paragraph of ``hpo NAME --help``.

    Returns:
        The subcommand's parser, for its own arguments.
    """
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name, help=help_, description=description
    )
    # SUPPRESS: without the flag here, the top parser's `hpo --debug CMD` stands.
    parser.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show tracebacks and the engine's log",
    )
    return parser


def add_data_path(parser: argparse.ArgumentParser) -> None:
    """Add ``--data-path``, which replaces the study file's data location."""
    parser.add_argument(
        "--data-path",
        metavar="DIR",
        help="where the data are, replacing the study's [data] path (a data folder) or "
        "scene (a scene file or its folder)",
    )


def add_storage(parser: argparse.ArgumentParser) -> None:
    """Add ``--storage``, which replaces the study file's storage URL."""
    parser.add_argument("--storage", metavar="URL", help="storage URL overriding the study's")


def add_allow_outside(
    parser: argparse.ArgumentParser, what: str = "storage, artifacts and cube cache"
) -> None:
    """Add ``--allow-outside``, the folders a file may write ``what`` under besides its own."""
    parser.add_argument(
        "--allow-outside",
        action="append",
        default=[],
        metavar="DIR",
        help=f"let the file write its {what} under DIR too (repeatable; by default only "
        "its own folder and the working folder; the environment's HPO_ALLOW_OUTSIDE, "
        "folders separated by ':', adds more)",
    )


# --------------------------------------------------------------------------- text


def command(*words: str) -> str:
    """A command line to show the user, storage passwords masked (echoed commands get shared)."""
    return " ".join(shlex.quote(mask_url(w)) for w in words)


# --------------------------------------------------------------------------- targets


def resolve_target(args: argparse.Namespace) -> tuple[StudySpec | None, str, str | None]:
    """Read a ``STUDY.toml|URL`` argument.

    Args:
        args: ``target``, ``storage`` and optionally ``study`` (a search's name) and
            ``allow_outside``.

    Returns:
        The study (``None`` for a URL), the storage URL and the search's name (``None``
        for a URL without ``--study``).

    Raises:
        UsageError: ``--storage`` with a URL, or a target that is neither.
    """
    if args.target.endswith(".toml") or Path(args.target).is_file():
        spec = st.load_study(
            args.target, storage=args.storage, check_paths=False,
            allow_outside=getattr(args, "allow_outside", ()),
        )
        return spec, spec.storage, spec.name
    if args.storage:
        raise UsageError("--storage goes with a study file; the target already is a URL")
    url = args.target
    if "://" not in url:
        raise UsageError(f"{url!r} is neither a study file (.toml) nor a storage URL")
    require_stored(url)  # reading a search must not create a mistyped path
    return None, url, getattr(args, "study", None)


def target_search(
    args: argparse.Namespace, *, started: bool = False
) -> tuple[StudySpec | None, SearchResult, str]:
    """The stored search a ``STUDY.toml|URL`` argument names (see :func:`resolve_target`).

    Args:
        args: As for :func:`resolve_target`.
        started: Fail when a study file's storage does not exist yet; without it, a
            study never run reads as every stage pending (no storage is created).

    Returns:
        The study (``None`` for a URL), the search's state and the metric it optimizes.

    Raises:
        SearchNotFoundError: ``started`` and the study's storage does not exist yet.
    """
    spec, url, name = resolve_target(args)
    if spec is None:
        result = st.load_search(url, name).status()
        return None, result, _stored_metric(result)
    if started and not st.storage_exists(spec.storage):
        raise SearchNotFoundError(spec.name, mask_url(spec.storage))
    return spec, st.study_status(spec), spec.metric


def _stored_metric(result: SearchResult) -> str:
    """The metric a stored search optimizes, as its stage studies record it, else "value"."""
    for stage in result.stages:
        study = stage.study
        if study is None:
            continue
        metric = (study.user_attrs.get(SEARCH_ATTR) or {}).get("metric")
        if isinstance(metric, str) and metric:
            return metric
        names = study.metric_names
        if names and names[0]:
            return str(names[0])
    return "value"


# --------------------------------------------------------------------------- errors


def exit_status(exc: BaseException) -> int | None:
    """The exit status of an error a user can cause, or ``None`` for a bug."""
    if isinstance(exc, UsageError | SpecError):
        return EXIT_USAGE
    # Here, not at the top: `networks` pulls in torch, which most commands never load.
    from data.errors import DataError, SceneSpecError
    from networks.errors import ConfigError, NetworksError

    if isinstance(exc, SceneSpecError | ConfigError):
        return EXIT_USAGE
    if isinstance(exc, HPOError | DataError | NetworksError | OSError):
        return EXIT_ERROR
    return None


def one_line(exc: BaseException) -> str:
    """An error as the one line ``hpo: error:`` prints, with a hint, passwords masked."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, PermissionError) and "hint:" not in text:
        where = f" of {exc.filename}" if exc.filename else ""
        text += (
            f" (hint: check the permissions{where}, or choose a location you may write to "
            "with -o / --storage)"
        )
    return mask_url(text)
