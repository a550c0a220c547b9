"""The toolkit's exception hierarchy: every error a user can cause is an ``HPOError``."""

from __future__ import annotations

from hpo.engine.urls import mask_url


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
        self.message = message
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


class StorageError(HPOError):
    """A storage URL cannot be opened.

    Args:
        message: What went wrong.
        url: The URL; only its password-masked form is kept and shown.
        hint: How to fix it.
    """

    def __init__(self, message: str, *, url: str | None = None, hint: str | None = None) -> None:
        self.url = mask_url(url) if url else None
        self.hint = hint
        text = f"{self.url}: {message}" if self.url else message
        super().__init__(f"{text} (hint: {hint})" if hint else text)


class StageChangedError(HPOError):
    """A stage's spec differs from the one its stored study was tuned with.

    Args:
        stage: The stage name.
        changes: What differs, in words.
    """

    def __init__(self, stage: str, changes: str) -> None:
        self.stage = stage
        self.changes = changes
        super().__init__(
            f"stage {stage!r} was tuned with a different spec ({changes}) (hint: start over "
            f"with --fresh, or re-tune from this stage on with --from-stage {stage}; in Python "
            f"run(fresh=True) or run(from_stage={stage!r}))"
        )


class StageFailedError(HPOError):
    """A stage reached its ``max_fail`` failed trials before its budget.

    Args:
        stage: The stage name.
        n_fail: Failed trials counted.
        reasons: The most recent failure reasons.
    """

    def __init__(self, stage: str, n_fail: int, reasons: list[str]) -> None:
        self.stage = stage
        self.n_fail = n_fail
        self.reasons = reasons
        last = "; ".join(reasons[-3:]) or "no reason recorded"
        super().__init__(
            f"stage {stage!r} stopped after {n_fail} failed trials (last: {last}) (hint: fix "
            f"the objective or the stage's ranges, or raise max_fail; the search resumes "
            f"where it stopped)"
        )


class TrialFaultError(HPOError):
    """A trial's own process timed out, was killed, or died without a result.

    Raised in the driver by an isolated objective (``trial_timeout`` / ``isolate``); the
    runner records the trial FAIL with ``reason`` as ``hpo:fail_reason`` and ``kind`` as
    ``hpo:fail_kind`` (``timeout``, ``killed`` or ``objective``), and the stage goes on.

    Args:
        reason: What happened, e.g. ``timed out after 600 s``.
        kind: Whose fault: ``timeout``, ``killed`` or ``objective``; each counts towards
            the stage's ``max_fail``.
    """

    def __init__(self, reason: str, kind: str = "objective") -> None:
        self.reason = reason
        self.kind = kind
        super().__init__(reason)

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        return type(self), (self.reason, self.kind)


class SearchNotFoundError(HPOError):
    """No stage study of the named search exists in the storage.

    Args:
        study_name: The search's name.
        url: The storage, password masked.
    """

    def __init__(self, study_name: str, url: str) -> None:
        self.study_name = study_name
        super().__init__(
            f"no layer-wise search named {study_name!r} in {url} (hint: check the study name "
            f"and storage URL, or run `hpo tune` first)"
        )


class ExportError(HPOError, ValueError):
    """A best-configuration export cannot be written or read.

    Args:
        message: What is wrong.
        path: The export file.
        hint: How to fix it.
    """

    def __init__(self, message: str, *, path: str | None = None, hint: str | None = None) -> None:
        self.path = path
        self.hint = hint
        text = f"{path}: {message}" if path else message
        super().__init__(f"{text} (hint: {hint})" if hint else text)
