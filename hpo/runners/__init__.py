"""How trials execute: ``local`` (in process) and ``ray`` (Ray Tune)."""

from __future__ import annotations

from hpo.errors import HPOError
from hpo.runners.base import Outcome, PendingTrial, Runner, StageJob
from hpo.runners.local import LocalRunner

RUNNER_NAMES = ("local", "ray")


def make_runner(spec: str | Runner, **options: object) -> Runner:
    """Build a runner from its name, or return a runner instance unchanged.

    Args:
        spec: ``"local"``, ``"ray"`` or a :class:`Runner`.
        **options: Passed to the runner's constructor (e.g. resources for Ray).

    Returns:
        The runner.

    Raises:
        HPOError: Unknown name, or the Ray runner is not available.
    """
    if isinstance(spec, Runner):
        return spec
    if spec == "local":
        return LocalRunner(**options)
    if spec == "ray":
        try:
            from hpo.runners.ray import RayRunner
        except ModuleNotFoundError as exc:
            if exc.name not in ("hpo.runners.ray", "ray"):
                raise
            raise HPOError(
                f"the ray runner is not available yet ({exc}) (hint: use runner='local' "
                f"for now; the Ray Tune runner is its own issue)"
            ) from exc
        return RayRunner(**options)
    raise HPOError(
        f"unknown runner {spec!r} (hint: use one of {', '.join(RUNNER_NAMES)}, "
        f"or a hpo.runners.Runner instance)"
    )


__all__ = [
    "RUNNER_NAMES",
    "LocalRunner",
    "Outcome",
    "PendingTrial",
    "Runner",
    "StageJob",
    "make_runner",
]
