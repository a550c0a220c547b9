"""Where and how a search's trials run, decided in one place.

A :class:`RunPlan` holds the runner settings (a study file's ``[runner]`` table, or a
search's own ``trial_timeout`` and ``isolate``) and decides from them:

- the runner: ``local`` (this machine) or ``ray`` (Ray Tune), see :meth:`RunPlan.runner`;
- each trial's resources: its CPUs (torch threads: ``floor(cpu)``, at least one) and
  GPUs, and how many trials run at once (local: ``max_concurrent``, but no more than fit
  this machine's cores at ``cpu`` each; ray: up to ``max_concurrent``, as many as the
  cluster fits);
- whether each trial runs in a child process of its own (:attr:`RunPlan.isolated`), and
  whether the objective is wrapped for it before anything else wraps it
  (:meth:`RunPlan.objective`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable
from typing import Any

from hpo.engine.errors import HPOError
from hpo.engine.runners.isolated import check_timeout, isolated
from hpo.engine.runners.job import Runner
from hpo.engine.runners.local import LocalRunner, default_workers, runs_isolated

_log = logging.getLogger("hpo")

RUNNER_NAMES = ("local", "ray")


def make_runner(spec: str | Runner, **options: Any) -> Runner:
    """Build a runner from its name, or return a runner instance unchanged.

    Args:
        spec: ``"local"``, ``"ray"`` or a :class:`Runner`.
        **options: Passed to the runner's constructor (e.g. resources for Ray).

    Returns:
        The runner.

    Raises:
        HPOError: Unknown name.
    """
    if isinstance(spec, Runner):
        return spec
    if spec == "local":
        return LocalRunner(**options)
    if spec == "ray":
        # Here, not at the top: importing Ray costs seconds that local searches never pay.
        from hpo.engine.runners.ray.runner import RayRunner

        return RayRunner(**options)
    raise _unknown(spec)


def _unknown(spec: object) -> HPOError:
    return HPOError(
        f"unknown runner {spec!r} (hint: use one of {', '.join(RUNNER_NAMES)}, "
        f"or a hpo.engine.runners.Runner instance)"
    )


@dataclasses.dataclass(frozen=True)
class RunPlan:
    """The runner, each trial's resources, and whether trials run in a child process.

    Args:
        kind: ``"local"`` or ``"ray"``.
        cpu: CPUs per trial (fractions allowed on Ray).
        gpu: GPUs per trial (Ray; fractions share a GPU).
        max_concurrent: Trials at once; ``None``: one (local) or as many as the Ray
            cluster fits.
        trial_timeout: Seconds a trial may run before it is killed and recorded FAIL;
            ``None``: no limit.
        isolate: Local: each trial in its own child process even without a timeout.
        address: Ray cluster to join.
        max_retries: Ray: restarts of a crashed trial before it is FAIL.
        asha: Ray: ASHA early stopping settings (``None``: off).

    Raises:
        HPOError: Unknown kind.
        SpecError: Invalid timeout.
    """

    kind: str = "local"
    cpu: float = 1.0
    gpu: float = 0.0
    max_concurrent: int | None = None
    trial_timeout: float | None = None
    isolate: bool = False
    address: str | None = None
    max_retries: int = 0
    asha: Any = None

    def __post_init__(self) -> None:
        if self.kind not in RUNNER_NAMES:
            raise _unknown(self.kind)
        object.__setattr__(self, "trial_timeout", check_timeout(self.trial_timeout))

    @classmethod
    def of(cls, settings: object) -> RunPlan:
        """The plan of runner settings that carry these fields as attributes (``[runner]``).

        Every field is read, so settings that lack one fail here, loudly.

        Raises:
            AttributeError: ``settings`` lacks one of the fields.
            HPOError: Unknown kind.
            SpecError: Invalid timeout.
        """
        return cls(**{f.name: getattr(settings, f.name) for f in dataclasses.fields(cls)})

    @property
    def workers(self) -> int:
        """Local trials at once: ``max_concurrent``, no more than this machine's cores fit.

        More workers than cores / ``cpu`` only slow each other down (as Ray fits trials
        to the cluster's resources).
        """
        return min(self.max_concurrent or 1, default_workers(self.cpu))

    @property
    def threads(self) -> int:
        """Torch threads of each local trial: its whole CPUs, at least one."""
        return max(1, int(math.floor(self.cpu)))

    @property
    def isolated(self) -> bool:
        """Whether each trial runs in a child process of its own.

        Local: with a timeout (only a process can be killed at it), with ``isolate``, or
        with several workers (a pool of processes). Ray: with a timeout (the Ray worker
        runs the trial in a child to kill it at the timeout); Ray trials always run in
        worker processes, so ``isolate`` adds nothing there.
        """
        if self.kind == "ray":
            return self.trial_timeout is not None
        return runs_isolated(trial_timeout=self.trial_timeout, isolate=self.isolate,
                             workers=self.workers)

    def objective(self, objective: Callable[..., Any]) -> Callable[..., Any]:
        """``objective``, isolated here when local trials run one at a time in a child process.

        Wrapped before anything else wraps it, so what is wrapped around it later (the
        command line's progress display) stays in this process; the runner finds the
        isolated objective in the chain of wrappers and does not isolate it again. A pool
        of workers and Ray's workers take the objective as it is.
        """
        if self.kind == "local" and self.isolated and self.workers == 1:
            return isolated(objective, timeout=self.trial_timeout)
        return objective

    def runner(self) -> str | Runner:
        """The runner: ``"local"`` when trials run one at a time in this process, else one.

        ``"local"`` is what a search builds by default; every other plan is an instance.
        """
        if self.kind == "ray":
            return make_runner(
                "ray",
                cpu=self.cpu,
                gpu=self.gpu,
                max_concurrent=self.max_concurrent,
                address=self.address,
                max_retries=self.max_retries,
                asha=self.asha,
                trial_timeout=self.trial_timeout,
            )
        workers = self.workers
        if self.max_concurrent is not None and workers < self.max_concurrent:
            _log.info(
                "local runner: max_concurrent = %d, but this machine fits %d trials of %g "
                "cpu at once", self.max_concurrent, workers, self.cpu,
            )
        if not self.isolated:
            return "local"
        return make_runner("local", trial_timeout=self.trial_timeout, isolate=self.isolate,
                           workers=workers, threads=self.threads)

    def make(self) -> Runner:
        """The runner, as an instance."""
        return make_runner(self.runner())


__all__ = ["RUNNER_NAMES", "RunPlan", "make_runner"]
