"""The exceptions ``networks`` raises on purpose for errors a user can cause."""

from __future__ import annotations


class NetworksError(Exception):
    """Base class of every error the ``networks`` package raises on purpose.

    Args:
        message: What is wrong.
        hint: How to fix it, appended to the message when given.
    """

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.hint = hint
        super().__init__(f"{message} (hint: {hint})" if hint else message)


class ConfigError(NetworksError, ValueError):
    """A model configuration, parameter name or value is invalid.

    Args:
        message: What is wrong.
        key: The dotted parameter name at fault (``"optim.lr"``), when there is one.
        hint: How to fix it.
    """

    def __init__(self, message: str, *, key: str | None = None, hint: str | None = None) -> None:
        self.key = key
        super().__init__(f"[{key}] {message}" if key else message, hint=hint)


class CheckpointError(NetworksError):
    """A file is not a readable checkpoint, or a checkpoint cannot be written or rebuilt."""


class TrainingError(NetworksError):
    """Training cannot go on, e.g. the loss became NaN or a data set is unusable."""
