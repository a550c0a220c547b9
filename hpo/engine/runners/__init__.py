"""How trials execute: ``local`` (in process) and ``ray`` (Ray Tune).

``RayRunner`` is imported on first use (``from hpo.engine.runners import RayRunner`` or
``make_runner("ray", ...)``), so the toolkit imports without Ray.
"""

from __future__ import annotations

from hpo.engine.errors import HPOError
from hpo.engine.runners.job import Outcome, PendingTrial, Runner, StageJob
from hpo.engine.runners.local import LocalRunner

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
            from hpo.engine.runners.ray.runner import RayRunner
        except ModuleNotFoundError as exc:
            if exc.name not in ("hpo.engine.runners.ray.runner", "ray"):
                raise
            raise HPOError(
                f"the ray runner is not available: {exc} (hint: pip install 'ray[tune]', "
                f"or use runner='local')"
            ) from exc
        return RayRunner(**options)
    raise HPOError(
        f"unknown runner {spec!r} (hint: use one of {', '.join(RUNNER_NAMES)}, "
        f"or a hpo.engine.runners.Runner instance)"
    )


def __getattr__(name: str) -> object:
    if name == "RayRunner":  # lazily: importing Ray costs seconds
        from hpo.engine.runners.ray.runner import RayRunner

        return RayRunner
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "RUNNER_NAMES",
    "LocalRunner",
    "RayRunner",
    "Outcome",
    "PendingTrial",
    "Runner",
    "StageJob",
    "make_runner",
]
