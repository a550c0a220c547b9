"""The ray runner: every trial of a stage is a Ray Tune trial; Optuna keeps the studies.

Per stage, one Tune experiment whose searcher is the toolkit's own
(:class:`~hpo.engine.runners.ray.searcher.StageSearcher`): it asks the stage's Optuna study
for each trial and tells it every outcome, and says FINISHED when the stage's budget is
COMPLETE. Nothing is restored from Tune (no ``Tuner.restore``): a search that stopped,
however it stopped, resumes from its Optuna studies like with the local runner.

- Resources per trial: ``cpu`` and ``gpu`` (fractions share a device), at most
  ``max_concurrent`` trials at once (default: as many as the cluster's resources fit);
  torch in each trial uses ``floor(cpu)`` threads (at least one).
- The objective (for a study: the :class:`~hpo.NetworkObjective` with its prepared data
  sets) goes to the object store once per search; a cached cube pickles as its path.
- Actors are reused between trials of a stage (``reuse_actors``): a new worker process
  per trial costs seconds (see ``benchmarks/perf/ray_runner.py``).
- ``asha``: ASHA early stopping on the search metric per epoch; a stopped trial is PRUNED
  with the epochs it reached, so it never becomes a stage's best.
- ``max_retries``: a crashed trial (exception, killed worker) restarts from its last
  checkpoint (what the objective gave :meth:`~hpo.TrialContext.save_state`, and the
  epochs it reported) up to that many times, then is FAIL with the reason.
- ``trial_timeout``: the worker runs the objective in a child process
  (:mod:`hpo.engine.runners.isolated`) and kills it at the timeout; the trial is FAIL
  ``timed out after N s`` at once (not retried: it would most likely hang again).
- Ray is started once per search (or joined: ``address`` or ``RAY_ADDRESS``) and shut
  down by :meth:`RayRunner.close` only when this runner started or joined it. A local
  instance started here dies with the driver, even on SIGKILL (a small reaper process
  stops what Ray's own fate sharing leaves behind).
- SQLite takes one driver per search: a second driver finding live RUNNING trials of
  another is refused and pointed at ``postgresql://``, ``redis://`` or ``journal://``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import optuna
import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler

from hpo.engine.errors import HPOError, SpecError
from hpo.engine.runners.isolated import check_timeout
from hpo.engine.runners.job import INTERRUPTED, Runner, StageJob
from hpo.engine.runners.ray import reaper
from hpo.engine.runners.ray.guard import refuse_second_driver
from hpo.engine.runners.ray.searcher import PrunerStopper, StageCallback, StageRun, StageSearcher
from hpo.engine.runners.ray.trainable import EPOCH_KEY, VALUE_KEY, run_trial

_log = logging.getLogger("hpo")

_TUNE_ENV = {
    # Optuna keeps the results: Tune's JSON/CSV/TensorBoard files per trial only cost.
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
    # Reports without the search metric (undefined at an epoch) are fine.
    "TUNE_DISABLE_STRICT_METRIC_CHECKING": "1",
    # Ctrl-C raises KeyboardInterrupt at once, like with the local runner.
    "TUNE_DISABLE_SIGINT_HANDLER": "1",
    # No experiment banner and status tables (the engine logs progress).
    "RAY_AIR_NEW_OUTPUT": "0",
    # Keeping one checkpoint per trial snapshots Tune's (tiny) experiment state at every
    # checkpoint; that is expected here, not a bottleneck worth a warning.
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
}
_QUIET_LOGGERS = {
    # Without Tune's loggers its result grid cannot read per-trial metrics: expected.
    "ray.tune.analysis.experiment_analysis": logging.CRITICAL,
    "ray.tune.result_grid": logging.CRITICAL,
    "ray.tune.tune": logging.WARNING,
}


class RayRunner(Runner):
    """Runs each stage's trials as Ray Tune trials, several at once.

    Several drivers on one search are several processes (each its own ``hpo tune``);
    Ray Tune keeps process-wide state, so two searches must not run from threads of one
    process at the same time.

    Args:
        cpu: CPUs per trial (fractions allowed).
        gpu: GPUs per trial; fractions share a GPU (``0.25``: four trials per GPU).
        max_concurrent: Trials of this driver running at once; ``None``: as many as the
            cluster's resources fit.
        address: Ray cluster to join (``ray.init(address=...)``); ``None`` joins
            ``RAY_ADDRESS`` when set, else starts a local instance.
        max_retries: Times a crashed trial is restarted from its last checkpoint before
            it counts as FAIL.
        asha: ASHA early stopping: ``None`` (off), ``True`` (defaults), or an object or
            mapping with ``grace`` (epochs before a trial may be stopped, default 1),
            ``reduction_factor`` (default 3) and optionally ``max_t``.
        trial_timeout: Seconds a trial may run before it is killed and recorded FAIL
            ``timed out after N s``; ``None``: no limit.
        reuse_actors: Reuse worker processes between the trials of a stage.
        storage_path: Where Tune keeps trial checkpoints (must be shared by every node
            of a multi-node cluster); ``None``: a temporary folder, removed on close.
        num_cpus: CPUs of a local instance started here (default: all).
        num_gpus: GPUs of a local instance started here (default: those detected;
            logical GPUs work for testing).
        log_to_driver: Show the trials' output in the driver.
        poll_interval: Seconds between reads of the stage study while waiting.

    Raises:
        SpecError: Invalid resources or options.
    """

    name = "ray"

    def __init__(
        self,
        *,
        cpu: float = 1.0,
        gpu: float = 0.0,
        max_concurrent: int | None = None,
        address: str | None = None,
        max_retries: int = 0,
        asha: Any = None,
        trial_timeout: float | None = None,
        reuse_actors: bool = True,
        storage_path: str | os.PathLike[str] | None = None,
        num_cpus: int | None = None,
        num_gpus: float | None = None,
        log_to_driver: bool = True,
        poll_interval: float = 0.5,
    ) -> None:
        _check_number(cpu, "runner.cpu", 0.0)
        _check_number(gpu, "runner.gpu", 0.0)
        if cpu <= 0 and gpu <= 0:
            raise SpecError("a trial needs some resources", key="runner.cpu",
                            hint="give each trial cpu > 0 or gpu > 0")
        if max_concurrent is not None and (
            isinstance(max_concurrent, bool) or not isinstance(max_concurrent, int)
            or max_concurrent < 1
        ):
            raise SpecError(f"max_concurrent = {max_concurrent!r}", key="runner.max_concurrent",
                            hint="use an integer >= 1, or leave it out")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise SpecError(f"max_retries = {max_retries!r}", key="runner.max_retries",
                            hint="use an integer >= 0")
        self.cpu = float(cpu)
        self.gpu = float(gpu)
        self.max_concurrent = max_concurrent
        self.address = address
        self.max_retries = max_retries
        self.asha = _asha_settings(asha)
        self.trial_timeout = check_timeout(trial_timeout)
        self.reuse_actors = bool(reuse_actors)
        self.storage_path = str(storage_path) if storage_path is not None else None
        self.num_cpus = num_cpus
        self.num_gpus = num_gpus
        self.log_to_driver = log_to_driver
        self.poll_interval = float(poll_interval)
        self._ray_ready = False
        self._owns_ray = False
        self._reaper: subprocess.Popen[bytes] | None = None
        self._storage_root: str | None = None
        self._temp_root = False
        self._trainables: dict[tuple[int, int], Any] = {}

    # ------------------------------------------------------------------ Ray

    @property
    def threads(self) -> int:
        """Torch threads per trial: its whole CPUs, at least one."""
        return max(1, int(math.floor(self.cpu + 1e-9)))

    def start(self) -> None:
        """Start or join Ray (once per search; :meth:`run_stage` calls it)."""
        if self._ray_ready:
            return
        if self.storage_path is not None:
            self._storage_root = self.storage_path
            self._temp_root = False
        else:
            self._storage_root = tempfile.mkdtemp(prefix="hpo-ray-")
            self._temp_root = True
        if ray.is_initialized():
            self._owns_ray = False  # the caller's Ray: leave it running
        else:
            address = self.address or os.environ.get("RAY_ADDRESS") or None
            if address:
                ray.init(address=address, log_to_driver=self.log_to_driver)
            else:
                self._start_local()
            self._owns_ray = True
        if self._temp_root and _nodes() > 1:
            _log.warning(
                "ray runner: a multi-node cluster and no storage_path; trial checkpoints "
                "(artifacts, retries) need a folder every node shares"
            )
        self._ray_ready = True

    def _start_local(self) -> None:
        token = uuid.uuid4().hex
        # The reaper stops this instance's processes when this process dies, however,
        # and removes the temporary checkpoint folder.
        self._reaper = subprocess.Popen(
            [sys.executable, reaper.__file__, token, str(os.getpid()),
             self._storage_root if self._temp_root else ""],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            env={k: v for k, v in os.environ.items() if k != reaper.ENV_VAR},
        )
        os.environ[reaper.ENV_VAR] = token  # inherited by every Ray process
        try:
            ray.init(
                num_cpus=self.num_cpus,
                num_gpus=self.num_gpus,
                include_dashboard=False,
                log_to_driver=self.log_to_driver,
            )
        except BaseException:
            self._stop_reaper()
            raise
        finally:
            os.environ.pop(reaper.ENV_VAR, None)
        _log.info("ray runner: started a local Ray instance (%s)", ray.cluster_resources())

    def close(self) -> None:
        """Shut Ray down if this runner started or joined it; remove temporary files."""
        if self._ray_ready and self._owns_ray:
            ray.shutdown()
        self._stop_reaper()
        if self._temp_root and self._storage_root:
            shutil.rmtree(self._storage_root, ignore_errors=True)
        self._ray_ready = False
        self._owns_ray = False
        self._storage_root = None
        self._trainables.clear()

    def _stop_reaper(self) -> None:
        reaper, self._reaper = self._reaper, None
        if reaper is None:
            return
        with contextlib.suppress(OSError):
            reaper.stdin.close()  # type: ignore[union-attr]
        try:
            reaper.wait(timeout=15)
        except subprocess.TimeoutExpired:
            reaper.kill()

    # --------------------------------------------------------------- stages

    def run_stage(self, job: StageJob) -> None:
        """Run the stage's trials as Tune trials until its budget is COMPLETE.

        Raises:
            StageFailedError: ``max_fail`` trials failed.
            HPOError: Another driver runs this SQLite search, or a trial cannot fit in
                the cluster.
        """
        refuse_second_driver(job)
        self.start()
        concurrency = self._concurrency()
        prune = not isinstance(job.study.pruner, optuna.pruners.NopPruner)
        run = StageRun(
            job,
            max_concurrent=concurrency,
            threads=self.threads,
            poll_interval=self.poll_interval,
            prune=prune,
            timeout=self.trial_timeout,
        )
        for _ in range(3):
            self._fit(job, run)
            if run.error is not None:
                raise run.error
            if job.is_done(job.poll()):
                return
        raise HPOError(
            f"{job.study.study_name}: Ray Tune ended three times before the stage's budget "
            f"was complete (hint: see the log above; run again to resume)"
        )

    def _concurrency(self) -> int:
        total = ray.cluster_resources()
        cpus, gpus = float(total.get("CPU", 0)), float(total.get("GPU", 0))
        if self.cpu > cpus + 1e-9 or self.gpu > gpus + 1e-9:
            raise HPOError(
                f"a trial needs {self.cpu:g} CPU and {self.gpu:g} GPU but the Ray cluster has "
                f"{cpus:g} CPU and {gpus:g} GPU (hint: lower [runner] cpu / gpu, or join a "
                f"larger cluster with [runner] address or RAY_ADDRESS)"
            )
        fits = [math.floor(have / need + 1e-9) for have, need in ((cpus, self.cpu),
                                                                    (gpus, self.gpu)) if need]
        fit = max(1, min(fits))
        if self.max_concurrent is None:
            return fit
        if self.max_concurrent > fit:
            _log.info(
                "ray runner: max_concurrent=%d, but the cluster fits %d trials at once",
                self.max_concurrent, fit,
            )
        return min(self.max_concurrent, fit)

    def _trainable(self, job: StageJob) -> Any:
        key = (id(job.objective), id(job.artifact_store))
        if key not in self._trainables:
            # Once per search: the objective and its data sets go to the object store.
            self._trainables[key] = tune.with_parameters(
                run_trial, payload=(job.objective, job.artifact_store)
            )
        resources = {"cpu": self.cpu, "gpu": self.gpu}
        return tune.with_resources(self._trainables[key], resources)

    def _fit(self, job: StageJob, run: Any) -> None:
        scheduler = None
        if self.asha is not None:
            scheduler = ASHAScheduler(
                time_attr=EPOCH_KEY,
                metric=VALUE_KEY,
                mode="max" if job.study.direction.name == "MAXIMIZE" else "min",
                grace_period=self.asha["grace"],
                reduction_factor=self.asha["reduction_factor"],
                max_t=self.asha["max_t"],
            )
        name = f"{_safe(job.study.study_name)}-{uuid.uuid4().hex[:8]}"
        tuner = tune.Tuner(
            self._trainable(job),
            tune_config=tune.TuneConfig(
                search_alg=StageSearcher(run),
                scheduler=scheduler,
                num_samples=-1,
                reuse_actors=self.reuse_actors,
            ),
            run_config=tune.RunConfig(
                name=name,
                storage_path=self._storage_root,
                verbose=0,
                callbacks=[StageCallback(run)],
                stop=PrunerStopper(run) if run.prune else None,
                failure_config=tune.FailureConfig(max_failures=self.max_retries),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            ),
        )
        try:
            with _tune_environment(run.max_concurrent):
                tuner.fit()
        except KeyboardInterrupt:
            run.finish_all("interrupted", INTERRUPTED)
            raise
        except BaseException as exc:
            run.finish_all(f"Ray Tune failed: {type(exc).__name__}: {exc}", INTERRUPTED)
            raise
        finally:
            if self._temp_root and self._storage_root:
                shutil.rmtree(Path(self._storage_root) / name, ignore_errors=True)
        if run.live:
            run.finish_all("Ray Tune ended before the trial finished", INTERRUPTED)


@contextlib.contextmanager
def _tune_environment(concurrency: int) -> Iterator[None]:
    # Tune keeps one trial pending for a custom searcher: the next trial's worker would
    # only start once the previous one runs. Let every slot's worker start at once.
    settings = {**_TUNE_ENV, "TUNE_MAX_PENDING_TRIALS_PG": str(concurrency)}
    saved = {k: os.environ.get(k) for k in settings}
    levels = {name: logging.getLogger(name).level for name in _QUIET_LOGGERS}
    os.environ.update(settings)
    for name, level in _QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(level)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def _nodes() -> int:
    try:
        return sum(1 for node in ray.nodes() if node.get("Alive"))
    except Exception:  # noqa: BLE001 - only for a warning
        return 1


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:80]


def _check_number(value: Any, key: str, low: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= low:
        raise SpecError(f"{key.split('.')[-1]} = {value!r}", key=key,
                        hint=f"use a number >= {low:g}")


def _asha_settings(asha: Any) -> dict[str, Any] | None:
    """ASHA settings from ``None``, ``True``, an ``AshaSpec``-like object or a mapping."""
    if asha is None or asha is False:
        return None
    settings: dict[str, Any] = {"grace": 1, "reduction_factor": 3.0, "max_t": 10**6}
    if asha is not True:
        source = asha if isinstance(asha, Mapping) else {
            k: getattr(asha, k) for k in settings if hasattr(asha, k)
        }
        unknown = set(source) - set(settings)
        if unknown:
            raise SpecError(f"unknown ASHA keys {sorted(unknown)}", key="runner.asha",
                            hint="use grace, reduction_factor, max_t")
        settings.update(source)
    grace, factor, max_t = settings["grace"], settings["reduction_factor"], settings["max_t"]
    if isinstance(grace, bool) or not isinstance(grace, int) or grace < 1:
        raise SpecError(f"grace = {grace!r}", key="runner.asha.grace", hint="use 1 or more epochs")
    if isinstance(factor, bool) or not isinstance(factor, int | float) or factor < 2:
        raise SpecError(f"reduction_factor = {factor!r}", key="runner.asha.reduction_factor",
                        hint="use 2 or more")
    if isinstance(max_t, bool) or not isinstance(max_t, int) or max_t < grace:
        raise SpecError(f"max_t = {max_t!r}", key="runner.asha.max_t",
                        hint="use an integer >= grace")
    settings["reduction_factor"] = float(factor)
    return settings


__all__ = ["RayRunner"]
