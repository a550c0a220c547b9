"""Storage URLs as text: masking passwords, expanding bare names, the file behind a URL.

No storage is opened here, so :mod:`hpo.engine.errors` can mask the URL it names without
importing the storages.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

DEFAULT_DIR = Path("studies")
"""Where a bare database or journal name (no directory, no scheme) is put."""


def mask_url(url: str) -> str:
    """Hide the password of a URL, for logs, errors and exports.

    Args:
        url: Any URL; strings that are not URLs are returned unchanged.

    Returns:
        The URL with its password replaced by ``***``.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if not parts.password:
        return url
    userinfo, _, hostinfo = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{hostinfo}"))


def expand_bare_name(url: str) -> str:
    """A URL for ``url``; a bare file name becomes a SQLite or journal file under ``studies/``.

    ``name.db`` -> ``sqlite:///studies/name.db``; ``name.log`` (or ``.jsonl``,
    ``.journal``) -> ``journal:///<absolute path>``. A URL with a scheme is returned as is.
    """
    if "://" in url:
        return url
    path = Path(url)
    if path.parent == Path("."):
        path = DEFAULT_DIR / path
    if path.suffix in (".log", ".jsonl", ".journal"):
        return f"journal:///{path.resolve()}"
    return f"sqlite:///{path}"


def scheme_of(url: str) -> str:
    """The URL's scheme without its driver (``postgresql+psycopg2`` -> ``postgresql``)."""
    return urlsplit(url).scheme.split("+", 1)[0]


def file_of(url: str) -> Path | None:
    """The file behind a ``sqlite:///`` or ``journal://`` URL (``None``: a server or memory)."""
    scheme = scheme_of(url)
    if scheme == "sqlite":
        path = url.split(":///", 1)[-1].split("?", 1)[0]
        return None if path in ("", ":memory:") else Path(path)
    if scheme == "journal":
        return Path(url[len("journal://") :])
    return None


__all__ = ["DEFAULT_DIR", "expand_bare_name", "file_of", "mask_url", "scheme_of"]
