"""Stage search spaces: serialization, fingerprints, seeds and the refine stage's narrowing."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    distribution_to_json,
    json_to_distribution,
)

from hpo.engine.stage import Stage


def derive_seed(seed: int, *parts: object) -> int:
    """A seed derived from ``seed`` and labels, the same in every process and run.

    Python's ``hash()`` of a string is salted per process, so it would give every driver
    and every resume different random points.

    Args:
        seed: The search's seed.
        *parts: Labels, e.g. the stage name and a trial number.

    Returns:
        An integer in ``[0, 2**31)``.
    """
    text = json.dumps([seed, *[str(p) for p in parts]])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big") >> 1


def sampler_label(sampler: object) -> str | None:
    """How a stage's sampler is written down: its name, or the callable's qualified name."""
    if sampler is None or isinstance(sampler, str):
        return sampler
    return f"callable:{getattr(sampler, '__module__', '?')}.{getattr(sampler, '__qualname__', '?')}"


def stage_to_dict(stage: Stage) -> dict[str, Any]:
    """A JSON-able description of a stage (its sampler written as a label)."""
    return {
        "name": stage.name,
        "space": {k: json.loads(distribution_to_json(d)) for k, d in stage.space.items()},
        "defaults": dict(stage.defaults),
        "n_random": stage.n_random,
        "n_bayes": stage.n_bayes,
        "sampler": sampler_label(stage.sampler),
        "max_fail": stage.max_fail,
    }


def stage_from_dict(data: Mapping[str, Any]) -> Stage:
    """Rebuild a stage from :func:`stage_to_dict`; a callable sampler comes back as ``None``."""
    sampler = data.get("sampler")
    if isinstance(sampler, str) and sampler.startswith("callable:"):
        sampler = None
    return Stage(
        name=data["name"],
        space={k: json_to_distribution(json.dumps(v)) for k, v in data["space"].items()},
        defaults=dict(data["defaults"]),
        n_random=int(data["n_random"]),
        n_bayes=int(data["n_bayes"]),
        sampler=sampler,
        max_fail=data.get("max_fail"),
    )


def fingerprint(data: object) -> str:
    """A short, stable hash of JSON-able data (key order ignored)."""
    text = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def describe_change(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> str:
    """Name the leaves that differ between two stage descriptions.

    Nested mappings are walked, so a changed bound reads ``space.x.attributes.high: 9 -> 10``
    rather than two whole stage descriptions.
    """
    changes = []
    for key in sorted(set(old) | set(new), key=str):
        before, after = old.get(key, _ABSENT), new.get(key, _ABSENT)
        if before == after:
            continue
        path = f"{prefix}{key}"
        if isinstance(before, Mapping) and isinstance(after, Mapping):
            changes.append(describe_change(before, after, prefix=f"{path}."))
        else:
            changes.append(f"{path}: {_shown(before)} -> {_shown(after)}")
    return ", ".join(changes) or "no change"


_ABSENT = object()


def _shown(value: Any) -> str:
    return "(absent)" if value is _ABSENT else repr(value)


def narrow(
    dist: BaseDistribution,
    center: Any,
    *,
    width: float = 0.25,
    min_int_steps: int = 2,
    seen: Iterable[Any] = (),
) -> BaseDistribution:
    """Narrow a distribution around a value, for the refine stage.

    Floats and ints keep ``center ± width × range``, measured in the parameter's own scale
    (log for log parameters) and clipped to the original range; ints keep at least
    ``min_int_steps`` steps on each side. Categoricals keep the choices in ``seen`` plus
    ``center``, in their original order.

    Args:
        dist: The stage's distribution.
        center: The incumbent's value.
        width: Half-width as a fraction of the range.
        min_int_steps: Least half-width of an int range, in steps.
        seen: Values of the stage's best trials (categoricals only).

    Returns:
        The narrowed distribution (the original when it cannot be narrowed).
    """
    if isinstance(dist, CategoricalDistribution):
        keep = {*seen, center}
        return CategoricalDistribution([c for c in dist.choices if c in keep])
    if isinstance(dist, FloatDistribution):
        low, high = _scaled_window(dist.low, dist.high, center, dist.log, width)
        if dist.step is not None:
            low = dist.low + math.floor((low - dist.low) / dist.step + 1e-9) * dist.step
            high = dist.low + math.ceil((high - dist.low) / dist.step - 1e-9) * dist.step
            high = min(high, dist.high)
        return FloatDistribution(low, high, log=dist.log, step=dist.step)
    if isinstance(dist, IntDistribution):
        low, high = _scaled_window(dist.low, dist.high, center, dist.log, width)
        step = dist.step
        low_i = dist.low + math.floor((low - dist.low) / step) * step
        high_i = dist.low + math.ceil((high - dist.low) / step) * step
        low_i = min(low_i, center - min_int_steps * step)
        high_i = max(high_i, center + min_int_steps * step)
        low_i = max(low_i, dist.low)
        high_i = min(high_i, dist.high)
        # Keep the high end on the step grid of the original distribution.
        high_i = dist.low + (high_i - dist.low) // step * step
        return IntDistribution(int(low_i), int(high_i), log=dist.log, step=step)
    return dist


def _scaled_window(
    low: float, high: float, center: float, log: bool, width: float
) -> tuple[float, float]:
    if log:
        lo, hi, c = math.log(low), math.log(high), math.log(center)
        half = width * (hi - lo)
        # Clip after exp(): exp(log(x)) may land a rounding error outside the range.
        return max(low, math.exp(c - half)), min(high, math.exp(c + half))
    half = width * (high - low)
    return max(low, center - half), min(high, center + half)


__all__ = [
    "derive_seed",
    "describe_change",
    "fingerprint",
    "narrow",
    "sampler_label",
    "stage_from_dict",
    "stage_to_dict",
]
