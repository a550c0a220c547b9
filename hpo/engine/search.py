"""The layer-wise engine: stages in order, each random search then Bayesian optimization.

Every stage is its own Optuna study ``<study_name>.<NN>.<stage>`` in one storage. Its
user attributes hold the search (``hpo:search``), the stage's identity
(``hpo:stage_key``, to detect a changed spec), the values of the other stages'
parameters (``hpo:fixed``) and, once the stage is finished, its ledger entry
(``hpo:ledger``). Everything a driver needs is read back from the storage, so a crash,
a second driver or a later run continue from the same state.

With ``cycles > 1`` the stages run again, pass after pass (:mod:`hpo.engine.schedule`).
Each run of a stage (a *slot*) is its own study; ``NN`` numbers the slots in run order
and passes after the first add ``.c<k>`` (``demo.01.optim``, ``demo.02.temporal``,
``demo.03.optim.c2``, ``demo.04.temporal.c2``, then ``demo.05.refine``). Stage names
cannot contain a dot, so the suffix is unambiguous; the slots are still found through
``hpo:search`` (its ``index``), never by parsing names.
"""

from __future__ import annotations

import difflib
import logging
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpo.engine.barrier import close_stage
from hpo.engine.errors import HPOError, SpecError
from hpo.engine.leases import Keepalive
from hpo.engine.ledger import Ledger, read_ledger
from hpo.engine.record import (
    FIXED_ATTR,
    SEARCH_ATTR,
    STAGE_KEY_ATTR,
    check_cycle_budget,
    check_cycles,
    claim_stage,
    find_record,
    jsonable,
    refine_from_dict,
    refine_to_dict,
    validate_search,
)
from hpo.engine.replicates import ReplicatedObjective, Replication
from hpo.engine.results import SearchResult, StageResult, stage_result
from hpo.engine.runners import Runner, RunPlan, StageJob
from hpo.engine.runners.isolated import check_timeout
from hpo.engine.runners.job import Objective, as_two_argument
from hpo.engine.samplers import SamplerSpec
from hpo.engine.samplers.phased import StageSampler
from hpo.engine.schedule import Schedule
from hpo.engine.space import (
    derive_seed,
    fingerprint,
    sampler_label,
    stage_from_dict,
    stage_to_dict,
)
from hpo.engine.stage import Refine, Stage
from hpo.engine.storage import StorageLike, describe_storage, make_artifact_store, make_storage
from hpo.engine.strategy import (
    DEFAULT_STRATEGY,
    STAGEWISE,
    bayes_sampler,
    check_strategy,
    uses_shared_model,
)

_log = logging.getLogger("hpo")


class LayerwiseSearch:
    """Tunes stages in order: per stage, random search then Bayesian optimization.

    Args:
        stages: The stages, in tuning order; parameter names must be unique across them.
        objective: ``objective(params)`` or ``objective(params, trial)`` returning the
            value to optimize; ``params`` holds every stage's parameters. ``None`` for a
            search only inspected (status, export, report).
        direction: ``maximize`` or ``minimize``.
        storage: Storage URL (see :func:`hpo.make_storage`), Optuna storage, or ``None``
            for in memory.
        study_name: The search's name; stage studies are ``<study_name>.<NN>.<stage>``.
        sampler: Bayesian sampler of stages that name none: ``gp``, ``tpe``, ``skopt``,
            ``random`` or a callable ``seed -> BaseSampler``.
        runner: ``local``, ``ray`` or a :class:`~hpo.engine.runners.Runner`.
        seed: Seed of the whole search; each stage's seed derives from it and its name.
        refine: Optional last stage over all parameters near the incumbent: a
            :class:`~hpo.Refine`, its Bayesian budget, or a dict of its fields.
        remeasure_incumbent: Evaluate each stage's incumbent again instead of copying
            the previous stage's best (noisy objectives).
        artifact_store: A folder or Optuna artifact store for trial artifacts.
        callbacks: ``callback(study, frozen_trial)`` after every finished trial.
        metric: The metric whose per-epoch values are the trials' intermediate values;
            ``None`` takes the objective's ``metric`` attribute when it has one.
        pruner: An Optuna pruner for :meth:`TrialContext.should_stop`; ``None``: never.
        lease_seconds: After how long without a heartbeat or lease renewal a RUNNING
            trial counts as orphaned (its driver gone) and is marked FAIL.
        spec_fingerprint: Fingerprint of the study file, stored for provenance.
        cycles: Passes over the stages. Pass ``k > 1`` re-tunes every stage with all
            other stages at their latest ledger values (earlier stages at this pass's,
            later ones at the previous pass's), starting from the incumbent copied in
            as its first trial. The refine stage, if any, runs after the last pass.
        cycle_budget: ``(n_random, n_bayes)`` of every stage in passes after the first
            (``n_random`` counts the copied incumbent); ``None`` repeats each stage's
            own budget.
        trial_timeout: Seconds a trial may run; one past it is killed and recorded FAIL
            ``timed out after N s``. The local runner then runs each trial in a child
            process (the objective must pickle); the ray runner limits each Tune trial.
            ``None``: no limit. For a runner instance, give it to the runner instead.
        isolate: Local runner: run each trial in its own child process even without a
            timeout, so a trial the OS kills (out of memory) is a FAIL, not a dead driver.
        replication: Noisy objectives: a :class:`~hpo.Replication`, a repeat count or a
            dict. With ``repeats > 1`` every trial is the mean over replicates (the
            objective reads ``trial.replicate`` / ``trial.replicate_seed``), raced
            against the stage's best; a stage measures its incumbent afresh, with
            replicate seeds of its own, where the previous stage selected it, and takes
            its replicates over where that stage handed it on unchanged; the ledger
            hands on the best mean among trials with every replicate, with its standard
            error and the stage's noise.
        strategy: ``shared`` (default): stages on the default ``gp`` sampler share one
            GP over every trial of the search, the acquisition moving only the active
            stage (see :mod:`hpo.engine.strategy`); ``stagewise``: the paper's method, each
            stage modelled on its own trials only. ``None``: ``shared``, except that a
            search stored before strategies existed goes on stage-wise.

    Raises:
        SpecError: Invalid stages or options.
    """

    def __init__(
        self,
        stages: Sequence[Stage],
        objective: Objective | None = None,
        *,
        direction: str = "maximize",
        storage: StorageLike = None,
        study_name: str = "search",
        sampler: SamplerSpec = "gp",
        runner: str | Runner = "local",
        seed: int = 0,
        refine: Refine | int | Mapping[str, Any] | None = None,
        remeasure_incumbent: bool = False,
        artifact_store: Any = None,
        callbacks: Sequence[Callable[[optuna.Study, FrozenTrial], None]] = (),
        metric: str | None = None,
        pruner: optuna.pruners.BasePruner | None = None,
        lease_seconds: float = 60.0,
        spec_fingerprint: str | None = None,
        cycles: int = 1,
        cycle_budget: tuple[int, int] | None = None,
        trial_timeout: float | None = None,
        isolate: bool = False,
        strategy: str | None = None,
        replication: Replication | int | Mapping[str, Any] | None = None,
    ) -> None:
        self.stages = list(stages)
        self.refine = Refine.coerce(refine)
        validate_search(self.stages, self.refine, direction, study_name, lease_seconds)
        self.cycles = check_cycles(cycles)
        self.cycle_budget = check_cycle_budget(cycle_budget)
        self._schedule = Schedule(self.stages, refine=self.refine, cycles=self.cycles,
                                  cycle_budget=self.cycle_budget)
        self.objective = objective
        self.direction = direction
        self.study_name = study_name
        self.sampler = sampler
        self.runner = runner
        self.seed = int(seed)
        self.replication = Replication.coerce(replication)
        # A copied incumbent keeps the value its own stage selected it by (biased up: it
        # won a noisy race). Stored in every stage key: with replicates it stays True, as
        # it was before _incumbent_copy took over what a handed-on incumbent reuses.
        self.remeasure_incumbent = remeasure_incumbent or self.replication.replicated
        self.callbacks = tuple(callbacks)
        self.metric = metric if metric is not None else getattr(objective, "metric", None)
        self.pruner = pruner or optuna.pruners.NopPruner()
        self.lease_seconds = float(lease_seconds)
        self.spec_fingerprint = spec_fingerprint
        self.trial_timeout = check_timeout(trial_timeout, key="trial_timeout")
        self.isolate = bool(isolate)
        # None: the default for a new search; a stored one keeps the method it began with
        self._strategy_given = strategy is not None
        self.strategy = check_strategy(strategy) if strategy is not None else DEFAULT_STRATEGY
        if isinstance(runner, Runner) and (self.trial_timeout is not None or self.isolate):
            raise SpecError(
                "trial_timeout / isolate given with a runner instance",
                key="trial_timeout",
                hint="pass them to the runner, e.g. LocalRunner(trial_timeout=600)",
            )
        interval = max(1, int(self.lease_seconds // 4))
        self.storage = make_storage(
            storage,
            heartbeat_interval=interval,
            grace_period=max(interval + 1, math.ceil(self.lease_seconds)),
        )
        self.artifact_store = make_artifact_store(artifact_store)

    # ----------------------------------------------------------------- names and specs

    @property
    def stage_names(self) -> list[str]:
        """Stage labels in run order (``<stage>.c<k>`` in pass ``k > 1``), ``refine`` last."""
        return self._schedule.labels

    def stage_study_name(self, index: int) -> str:
        """The study name of the stage at ``index`` (0-based, in run order)."""
        return f"{self.study_name}.{index + 1:02d}.{self.stage_names[index]}"

    def spec(self) -> dict[str, Any]:
        """The search's definition as stored in every stage study (``hpo:search``)."""
        spec = {
            "version": 1,
            "name": self.study_name,
            "direction": self.direction,
            "seed": self.seed,
            "sampler": sampler_label(self.sampler),
            "stages": [stage_to_dict(s) for s in self.stages],
            "refine": refine_to_dict(self.refine),
            "remeasure_incumbent": self.remeasure_incumbent,
            "spec_fingerprint": self.spec_fingerprint,
            "cycles": self.cycles,
            "cycle_budget": list(self.cycle_budget) if self.cycle_budget else None,
            "strategy": self.strategy,
        }
        if self.replication.replicated:
            spec["replication"] = self.replication.to_dict()
        if self.metric:  # what `hpo status URL` names the values by
            spec["metric"] = self.metric
        spec["fingerprint"] = fingerprint(spec)
        return jsonable(spec)

    def _stage_key(self, index: int) -> dict[str, Any]:
        # What a stage's trials depend on; the previous stage's key is chained in, so a
        # change upstream changes every key after it.
        # The first pass's keys carry no pass number, so they are the keys of a search
        # without cycles: adding passes to a finished search keeps its finished stages.
        previous = fingerprint(self._stage_key(index - 1)) if index else None
        later: dict[str, Any] = {}
        if not self._schedule.is_refine(index):
            slot = self._schedule.slots[index]
            what: Any = stage_to_dict(slot.stage)  # the spec's defaults, this pass's budget
            sampler = slot.stage.sampler or self.sampler
            if slot.cycle > 1:
                later["cycle"] = slot.cycle
        else:
            what = refine_to_dict(self.refine)
            sampler = self.refine.sampler or self.sampler  # type: ignore[union-attr]
        if uses_shared_model(self.strategy, sampler):
            # Only where the strategy changes the trials: stage-wise keys stay those of
            # searches stored before strategies existed, so they resume as they were.
            later["strategy"] = self.strategy
        if self.replication.replicated:
            # Trials of another replicate count are not comparable (their means are
            # estimates of different precision): changing it is a change of the stage.
            later["replication"] = self.replication.to_dict()
        return jsonable(
            {
                "stage": what,
                "direction": self.direction,
                "seed": self.seed,
                "sampler": sampler_label(sampler),
                "remeasure_incumbent": self.remeasure_incumbent,
                "previous": previous,
                **later,
            }
        )

    # ----------------------------------------------------------------------- running

    def run(self, *, fresh: bool = False, from_stage: str | None = None) -> SearchResult:
        """Run the search, resuming whatever the storage already holds.

        Finished stages are skipped; the open stage completes its budget (trials of dead
        drivers are failed first); then the remaining stages run.

        Args:
            fresh: Delete this search's stage studies first and start over.
            from_stage: Delete the stage studies from this stage on and re-tune them.

        Returns:
            The search as stored at the end.

        Raises:
            HPOError: No objective (a loaded search).
            StageChangedError: A stored stage was tuned with a different spec.
            StageFailedError: A stage reached ``max_fail`` failed trials.
        """
        if self.objective is None:
            raise HPOError(
                "this search has no objective (hint: LayerwiseSearch.load() is for status "
                "and export; build the search with an objective to run it)"
            )
        if fresh:
            self.reset()
        elif from_stage is not None:
            self.reset(from_stage)
        self.strategy = self._stored_strategy()
        objective = as_two_argument(self.objective)
        if self.replication.replicated:
            objective = ReplicatedObjective(objective, self.replication, self.seed)
        runner = self.runner if isinstance(self.runner, Runner) else RunPlan(
            kind=self.runner, trial_timeout=self.trial_timeout, isolate=self.isolate
        ).make()
        keepalive = Keepalive(self.storage, lease_seconds=self.lease_seconds)
        try:
            ledgers: dict[str, Ledger] = {}
            for index in range(len(self.stage_names)):
                stage = self._stage_at(index, ledgers)
                study = self._open_stage(index, stage, ledgers)
                ledger = read_ledger(study)
                if ledger is None:
                    _log.info(
                        "stage %d/%d %s: %d trials (%d random incl. the incumbent)",
                        index + 1, len(self.stage_names), self.stage_names[index],
                        stage.budget, stage.n_random,
                    )
                    job = self._stage_job(index, stage, study, ledgers, objective, keepalive)
                    # until the barrier writes the ledger: a confirmation run it queued
                    # raises the budget by one, and the runner runs it
                    while ledger is None:
                        runner.run_stage(job)
                        ledger = close_stage(
                            study, stage, direction=self.direction,
                            replication=self.replication, lease_seconds=self.lease_seconds,
                        )
                else:
                    _log.info(
                        "stage %s finished earlier: %.6g (trial %d)",
                        self.stage_names[index], ledger.value, ledger.trial_number,
                    )
                # Keyed by stage name: a later pass replaces the earlier one's entry, so
                # every later slot sees each stage at its latest tuned values.
                ledgers[stage.name] = ledger
        finally:
            keepalive.close()
            runner.close()
        return self.status()

    def _stage_job(
        self,
        index: int,
        stage: Stage,
        study: optuna.Study,
        ledgers: Mapping[str, Ledger],
        objective: Callable[..., Any],
        keepalive: Keepalive,
    ) -> StageJob:
        """The job a runner gets for the open stage at ``index``."""
        return StageJob(
            study=study,
            stage=stage,
            fixed=self._schedule.fixed(index, ledgers),
            objective=objective,
            keepalive=keepalive,
            order=self._schedule.order(),
            copy_from=self._incumbent_copy(index, ledgers),
            metric=self.metric,
            artifact_store=self.artifact_store,
            ledgers=dict(ledgers),
            lease_seconds=self.lease_seconds,
            callbacks=self.callbacks,
            replication=self.replication,
        )

    def _incumbent_copy(self, index: int, ledgers: Mapping[str, Ledger]) -> Ledger | None:
        """The entry the incumbent at ``index`` is copied from, ``None`` to measure it.

        Without replicates it is copied unless ``remeasure_incumbent``. With replicates it
        is measured again where its stage selected it (the winner of a noisy race is
        biased up), and taken over, replicates and seeds, where its stage handed it on
        unchanged (``Ledger.seeds``): measuring it again would spend ``repeats`` or
        ``max_repeats`` trainings per stage on what is known (on the quickstart, six
        29-epoch runs in every stage after the first).
        """
        source = self._schedule.incumbent_source(index, ledgers)
        if self.replication.replicated:
            return source if source is not None and source.seeds else None
        return None if self.remeasure_incumbent else source

    def _stored_strategy(self) -> str:
        """The strategy to run: a search stored before strategies existed stays stage-wise.

        Its stage keys have no ``strategy``; running it on with the shared model would
        change every stored stage (a :class:`StageChangedError`), so an upgrade keeps the
        method the search was tuned with. A strategy named explicitly is held to: a
        stored search of another one is then a :class:`StageChangedError`.
        """
        if self._strategy_given or self.strategy == STAGEWISE or not self._schedule.slots:
            return self.strategy
        try:
            first = optuna.load_study(study_name=self.stage_study_name(0), storage=self.storage,
                                      sampler=optuna.samplers.RandomSampler())
        except KeyError:
            return self.strategy  # a new search
        key = first.user_attrs.get(STAGE_KEY_ATTR)
        sampler = self._schedule.slots[0].stage.sampler or self.sampler
        if key and "strategy" not in key and uses_shared_model(self.strategy, sampler):
            _log.info("%s was stored before search strategies existed: it goes on stage-wise",
                      self.study_name)
            return STAGEWISE
        return self.strategy

    def _stage_at(self, index: int, ledgers: Mapping[str, Ledger]) -> Stage:
        """The stage as tuned at ``index``; the refine stage narrowed around the best."""
        if not self._schedule.is_refine(index):
            return self._schedule.stage_at(index, ledgers)
        return self._schedule.refine_stage(
            ledgers,
            lambda i: self._load_stage_study(i).get_trials(
                deepcopy=False, states=(TrialState.COMPLETE,)
            ),
            maximize=self.direction == "maximize",
        )

    def _open_stage(
        self, index: int, stage: Stage, ledgers: Mapping[str, Ledger]
    ) -> optuna.Study:
        """Create or load a stage study and check it was made by the same spec."""
        cycle = self._schedule.cycle_at(index)
        # Later passes draw other random points than the first (which keeps its seed).
        seed = derive_seed(self.seed, stage.name, *([f"c{cycle}"] if cycle > 1 else []))
        sampler = StageSampler(
            self._bayes_sampler(index, stage, ledgers, seed),
            n_random=stage.n_random,
            seed=seed,
            incumbent=stage.defaults,
        )
        name = self.stage_study_name(index)
        study = optuna.create_study(
            storage=self.storage,
            study_name=name,
            direction=self.direction,
            sampler=sampler,
            pruner=self.pruner,
            load_if_exists=True,
        )
        claim_stage(
            study,
            self.stage_names[index],
            key=self._stage_key(index),
            fixed=jsonable(self._schedule.fixed(index, ledgers)),
            space=jsonable(stage_to_dict(stage)),
        )
        spec = {**self.spec(), "index": index, "stage": stage.name}
        if study.user_attrs.get(SEARCH_ATTR) != spec:
            study.set_user_attr(SEARCH_ATTR, spec)
        if self.metric and study.metric_names != [self.metric]:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                # optuna-dashboard then labels the value "f1", not "Objective 0".
                study.set_metric_names([self.metric])
        return study

    def _bayes_sampler(
        self, index: int, stage: Stage, ledgers: Mapping[str, Ledger], seed: int
    ) -> optuna.samplers.BaseSampler:
        """The stage's Bayesian sampler, as the search's strategy builds it."""
        space = {k: d for s in self.stages for k, d in s.space.items()}
        return bayes_sampler(
            self.strategy,
            stage.sampler or self.sampler,
            seed,
            space=space,
            active=stage.space,
            fixed=self._schedule.fixed(index, ledgers),
            # Every stage study run before this one (all finished: this stage opened
            # after their barriers), read from the storage when first needed.
            earlier=lambda: [self._load_stage_study(i) for i in range(index)],
        )

    # ------------------------------------------------------------- status and loading

    def _load_stage_study(self, index: int) -> optuna.Study:
        return optuna.load_study(
            study_name=self.stage_study_name(index),
            storage=self.storage,
            sampler=optuna.samplers.RandomSampler(),
        )

    def status(self) -> SearchResult:
        """The search as stored now (works without an objective).

        Returns:
            Every stage's state, ledger and counts, and the merged best configuration.
        """
        results = []
        ledgers: dict[str, Ledger] = {}
        for index, label in enumerate(self.stage_names):
            try:
                study: optuna.Study | None = self._load_stage_study(index)
            except KeyError:
                study = None
            result = stage_result(
                label, index, self.stage_study_name(index), study,
                self._schedule.budget_at(index),
                stage=self._schedule.name_at(index), cycle=self._schedule.cycle_at(index),
            )
            if result.ledger is not None:
                ledgers[result.stage] = result.ledger  # in run order: the latest pass wins
            results.append(result)
        finished = [r.ledger for r in results if r.ledger is not None]
        return SearchResult(
            study_name=self.study_name,
            storage=describe_storage(self.storage),
            direction=self.direction,
            stages=results,
            best_params=self._schedule.merged(ledgers),
            best_value=finished[-1].value if finished else None,
            spec=self.spec(),
        )

    def reset(self, from_stage: str | None = None) -> list[str]:
        """Delete stage studies so they are tuned again.

        Args:
            from_stage: Delete this stage's study and every later one (in run order; a
                stage name means its first pass, ``<stage>.c<k>`` its pass ``k``);
                ``None`` deletes every study of this search (also those of stages no
                longer in the spec).

        Returns:
            Names of the deleted studies.

        Raises:
            SpecError: ``from_stage`` is not a stage of this search.
        """
        names = self.stage_names
        if from_stage is not None and from_stage not in names:
            close = difflib.get_close_matches(from_stage, names, n=1)
            raise SpecError(
                f"no stage {from_stage!r}",
                key="from_stage",
                hint=f"did you mean {close[0]!r}?" if close else f"stages: {', '.join(names)}",
            )
        start = names.index(from_stage) if from_stage is not None else 0
        deleted = []
        for summary in self.storage.get_all_studies():
            record = summary.user_attrs.get(SEARCH_ATTR) or {}
            if record.get("name") != self.study_name or record.get("index", -1) < start:
                continue
            optuna.delete_study(study_name=summary.study_name, storage=self.storage)
            deleted.append(summary.study_name)
        if deleted:
            _log.info("deleted stage studies %s", sorted(deleted))
        return sorted(deleted)

    @classmethod
    def load(
        cls, storage: StorageLike, study_name: str, objective: Objective | None = None, **kw: Any
    ) -> LayerwiseSearch:
        """Rebuild a search from its stage studies' ``hpo:search`` attribute.

        Args:
            storage: The storage URL or object.
            study_name: The search's name.
            objective: Optional objective, to run the search again.
            **kw: Options not stored (runner, callbacks, pruner, artifact_store, ...).

        Returns:
            The search, e.g. for :meth:`status`.

        Raises:
            SearchNotFoundError: No stage study of that search is in the storage.
        """
        opened = make_storage(storage)
        record = find_record(opened, study_name)
        sampler = record.get("sampler") or "gp"
        if sampler.startswith("callable:"):
            sampler = kw.pop("sampler", "gp")  # a callable cannot be stored
        refine = record.get("refine")
        kw.setdefault("cycles", record.get("cycles", 1))
        kw.setdefault("cycle_budget", record.get("cycle_budget"))
        # Searches stored before strategies existed were tuned stage-wise.
        kw.setdefault("strategy", record.get("strategy", STAGEWISE))
        kw.setdefault("replication", record.get("replication"))
        kw.setdefault("metric", record.get("metric"))
        return cls(
            [stage_from_dict(d) for d in record["stages"]],
            objective,
            direction=record["direction"],
            storage=opened,
            study_name=study_name,
            sampler=kw.pop("sampler", sampler),
            seed=record["seed"],
            refine=refine_from_dict(refine),
            remeasure_incumbent=record.get("remeasure_incumbent", False),
            spec_fingerprint=record.get("spec_fingerprint"),
            **kw,
        )


__all__ = [
    "FIXED_ATTR",
    "LayerwiseSearch",
    "SEARCH_ATTR",
    "SearchResult",
    "StageResult",
]
