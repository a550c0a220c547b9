"""The toolkit's exception hierarchy: every error a user can cause is an ``HPOError``."""

from __future__ import annotations


class HPOError(Exception):
    """Base class of every error the tuning toolkit raises on purpose."""


class SpecError(HPOError, ValueError):
    """A study file, stage or search definition is invalid.

    Args:
        message: What is wrong.
        file: The study file, when there is one.
        key: The dotted key that is wrong, when there is one.
        hint: How to fix it.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        key: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.file = file
        self.key = key
        self.hint = hint
        parts = []
        if file:
            parts.append(str(file))
        if key:
            parts.append(f"[{key}]")
        head = ": ".join([" ".join(parts), message]) if parts else message
        super().__init__(f"{head} (hint: {hint})" if hint else head)
