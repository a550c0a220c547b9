"""The search record: what every stage study stores about its search, and its checks.

Each stage study's user attributes hold the search's definition (``hpo:search``, with the
study's ``index`` in run order), the stage's identity (``hpo:stage_key``, chained to the
previous stage's, so a change upstream is seen downstream), the stage as tuned
(``hpo:stage``) and the other stages' values it was tuned with (``hpo:fixed``). A driver
that opens a stage writes them once or checks them (:func:`claim_stage`); a search is
rebuilt from the latest ``hpo:search`` (:func:`find_record`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

import optuna
from optuna.storages import BaseStorage

from hpo.engine.errors import SearchNotFoundError, SpecError, StageChangedError
from hpo.engine.ledger import LEDGER_ATTR
from hpo.engine.space import describe_change, sampler_label
from hpo.engine.stage import REFINE, Refine, Stage
from hpo.engine.storage import describe_storage

SEARCH_ATTR = "hpo:search"
STAGE_KEY_ATTR = "hpo:stage_key"
FIXED_ATTR = "hpo:fixed"
SPACE_ATTR = "hpo:stage"
DIRECTIONS = ("maximize", "minimize")


def claim_stage(
    study: optuna.Study,
    label: str,
    *,
    key: dict[str, Any],
    fixed: dict[str, Any],
    space: dict[str, Any],
) -> None:
    """Write a new stage study's identity, or check a stored one was made by the same spec.

    Args:
        study: The stage study.
        label: The stage's label, for the error.
        key: The stage key (JSON-like).
        fixed: The other stages' values (JSON-like).
        space: The stage as tuned (JSON-like).

    Raises:
        StageChangedError: The stored key differs, or an unfinished stage was tuned with
            other values of the other stages.
    """
    attrs = study.user_attrs
    stored = attrs.get(STAGE_KEY_ATTR)
    if stored is None:
        # A new stage (or one whose creator died before this): idempotent writes, so
        # two drivers creating it at once agree. The key goes last: a driver that
        # sees it also sees the rest.
        study.set_user_attr(FIXED_ATTR, fixed)
        study.set_user_attr(SPACE_ATTR, space)
        study.set_user_attr(STAGE_KEY_ATTR, key)
    elif stored != key:
        raise StageChangedError(label, describe_change(stored, key))
    elif LEDGER_ATTR not in attrs and attrs.get(FIXED_ATTR) != fixed:
        raise StageChangedError(
            label,
            "other stages' values: " + describe_change(attrs.get(FIXED_ATTR) or {}, fixed),
        )


def find_record(storage: BaseStorage, study_name: str) -> dict[str, Any]:
    """The stored ``hpo:search`` of a search: its latest stage study's.

    Raises:
        SearchNotFoundError: No stage study of that search is in the storage.
    """
    records = [
        (s.user_attrs[SEARCH_ATTR], s._study_id)
        for s in storage.get_all_studies()
        if (s.user_attrs.get(SEARCH_ATTR) or {}).get("name") == study_name
    ]
    if not records:
        raise SearchNotFoundError(study_name, describe_storage(storage))
    # The latest stage's record; on equal index (a study left over from an earlier
    # shape of the search, e.g. a refine stage before passes were added) the newest.
    return max(records, key=lambda r: (r[0].get("index", 0), r[1]))[0]


def validate_search(
    stages: Sequence[Stage],
    refine: Refine | None,
    direction: str,
    study_name: str,
    lease_seconds: float,
) -> None:
    """Check a search's definition.

    Raises:
        SpecError: No stage, a stage or parameter twice, a stage named ``refine`` beside
            the refine stage, an unknown direction, an empty name or a lease under 1 s.
    """
    if not stages:
        raise SpecError("a search needs at least one stage", key="stages", hint="add a stage")
    seen_stages: set[str] = set()
    owner: dict[str, str] = {}
    for stage in stages:
        if not isinstance(stage, Stage):
            raise SpecError(
                f"{stage!r} is not a Stage", key="stages", hint="build stages with hpo.Stage"
            )
        if stage.name in seen_stages:
            raise SpecError(f"two stages named {stage.name!r}", key=f"stages.{stage.name}")
        if stage.name == REFINE and refine is not None:
            raise SpecError(
                "a stage is named 'refine' and the search has a refine stage",
                key=f"stages.{stage.name}",
                hint="rename the stage",
            )
        seen_stages.add(stage.name)
        for pname in stage.space:
            if pname in owner:
                raise SpecError(
                    f"parameter {pname!r} is in stages {owner[pname]!r} and {stage.name!r}",
                    key=f"stages.{stage.name}.{pname}",
                    hint="each parameter belongs to exactly one stage",
                )
            owner[pname] = stage.name
    if direction not in DIRECTIONS:
        raise SpecError(
            f"direction {direction!r}", key="direction", hint="use 'maximize' or 'minimize'"
        )
    if not isinstance(study_name, str) or not study_name.strip():
        raise SpecError("empty study name", key="name", hint="name the search")
    if lease_seconds < 1:
        raise SpecError(
            f"lease_seconds={lease_seconds}", key="lease_seconds", hint="use at least 1 second"
        )


def check_cycles(cycles: int) -> int:
    """``cycles`` when it is a whole number of passes >= 1, else a :class:`SpecError`."""
    if isinstance(cycles, bool) or not isinstance(cycles, int) or cycles < 1:
        raise SpecError(f"cycles = {cycles!r}", key="cycles", hint="use 1 or more passes")
    return cycles


def check_cycle_budget(budget: Sequence[int] | None) -> tuple[int, int] | None:
    """The per-pass ``(n_random, n_bayes)`` as a tuple (``None``: each stage's own budget)."""
    if budget is None:
        return None
    if (
        isinstance(budget, str | bytes)
        or len(budget) != 2
        or not all(isinstance(n, int) and not isinstance(n, bool) for n in budget)
        or budget[0] < 1
        or budget[1] < 0
    ):
        raise SpecError(
            f"cycle_budget = {budget!r}",
            key="cycle_budget",
            hint="give (n_random, n_bayes) with n_random >= 1 (the copied incumbent "
            "counts) and n_bayes >= 0, or None to repeat each stage's budget",
        )
    return int(budget[0]), int(budget[1])


def refine_to_dict(refine: Refine | None) -> dict[str, Any] | None:
    """The refine stage's settings as stored in ``hpo:search`` (a callable sampler by label)."""
    if refine is None:
        return None
    return {**asdict(refine), "sampler": sampler_label(refine.sampler)}


def refine_from_dict(data: Mapping[str, Any] | None) -> Refine | None:
    """The refine stage of a stored ``hpo:search`` (``None`` without one)."""
    if not data:
        return None
    sampler = data.get("sampler")
    if isinstance(sampler, str) and sampler.startswith("callable:"):
        sampler = None  # a callable cannot be stored; the search's sampler stands in
    return Refine(**{**data, "sampler": sampler})


def jsonable(value: Any) -> Any:
    """``value`` as it comes back from the storage (JSON), to compare like with like."""
    return json.loads(json.dumps(value, default=str))


__all__ = [
    "DIRECTIONS",
    "FIXED_ATTR",
    "SEARCH_ATTR",
    "SPACE_ATTR",
    "STAGE_KEY_ATTR",
    "check_cycle_budget",
    "check_cycles",
    "claim_stage",
    "find_record",
    "jsonable",
    "refine_from_dict",
    "refine_to_dict",
    "validate_search",
]
