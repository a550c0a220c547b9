"""The results of ``hpo compare``: ``compare.json`` (kept to resume) and its markdown tables.

Every finished training run is stored at once, so a rerun of the same settings continues
where the last one stopped; :func:`summarize` pools the seeds' and folds' test metrics and
:func:`markdown` writes one table per split (and one of the seed ensembles).
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from data.shift import shifted_channels
from hpo.engine.atomic import write_json, write_text
from hpo.engine.errors import SpecError
from hpo.study.schema import StudySpec
from hpo.study.variants import VARIANTS
from networks import NETWORK_NAMES
from networks.checkpoint import package_versions

RESULTS_FILE = "compare.json"
TABLE_FILE = "compare.md"
FORMAT = "landslide-hpo/compare/1"
METRICS = ("miou", "f1", "auc")


class RecordedSettings(Protocol):
    """The settings the results record: a :class:`hpo.study.compare.CompareSettings`.

    A protocol, since :mod:`hpo.study.compare` builds on this module.
    """

    def to_dict(self) -> dict[str, Any]:
        """The settings as JSON-able data."""


def summarize(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Mean and sample standard deviation of every test metric per split and variant.

    Runs of every fold and seed are pooled. Metrics at 0.5 and at the validation-chosen
    threshold are both given (``f1@0.5``, ``f1``, ...); AUC does not depend on it.
    """
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["split"], row["variant"]), []).append(row)
    order = list(VARIANTS)
    out = []
    for (split, variant), group in sorted(
        groups.items(), key=lambda kv: (kv[0][0], order.index(kv[0][1]))
    ):
        entry: dict[str, Any] = {"split": split, "variant": variant, "runs": len(group)}
        for metric in METRICS:
            at = [(r["test"]["at_threshold"] or r["test"]["at_0.5"])[metric] for r in group]
            half = [r["test"]["at_0.5"][metric] for r in group]
            entry[metric] = _mean_std(at)
            if metric != "auc":
                entry[f"{metric}@0.5"] = _mean_std(half)
        out.append(entry)
    return out


def _mean_std(values: Sequence[float | None]) -> dict[str, float | None]:
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not finite:
        return {"mean": None, "std": None}
    std = statistics.stdev(finite) if len(finite) > 1 else 0.0
    return {"mean": statistics.fmean(finite), "std": std}


def metric_text(value: Any) -> str:
    """A metric with three decimals, or ``-`` when there is none."""
    return f"{value:.3f}" if isinstance(value, int | float) else "-"


def _cell(stat: Mapping[str, Any]) -> str:
    if stat["mean"] is None:
        return "-"
    return f"{stat['mean']:.3f} ± {stat['std']:.3f}"


WEAK_SHARE = 1 / 3
"""A network variant whose test F1 is under this share of the split's best is flagged."""


def _learned_little(entries: Sequence[Mapping[str, Any]]) -> list[str]:
    """A warning under a split's table for the networks that learned little there.

    A baseline far behind is more often a defect of the comparison (too few epochs, tiles
    too small for its downsampling, a learning rate that does not suit it) than a win.
    """
    scored = [(e["variant"], e["f1"]["mean"]) for e in entries if e["f1"]["mean"] is not None]
    if not scored:
        return []
    best_name, best = max(scored, key=lambda vf: vf[1])
    weak = [f"{name} ({f1:.3f})" for name, f1 in scored
            if VARIANTS[name].model in NETWORK_NAMES and f1 < WEAK_SHARE * best]
    if not weak:
        return []
    return [
        f"Learned little: {', '.join(weak)}, under a third of {best_name}'s test F1 "
        f"({best:.3f}). Before reading this as a win, check that they trained long enough "
        f"(`[compare] epochs`), on tiles large enough for their downsampling "
        f"(`patch_size`), at a learning rate that suits them.",
        "",
    ]


def markdown(state: Mapping[str, Any]) -> str:
    """The comparison as markdown tables, one per split."""
    summary = summarize(state["rows"])
    settings = state["settings"]
    lines = [
        f"# hpo compare: {state['study']}",
        "",
        f"{settings['trials']} objective evaluations per tuned variant (layer-wise: random "
        f"then Bayesian per stage), {settings['seeds']} training seed(s) per best "
        f"configuration, metrics on the test split (never seen by tuning): mean ± std "
        f"over seeds" + (f" and {settings['folds']} folds" if settings["folds"] else "")
        + ". F1 and MIoU at the threshold chosen on validation; @0.5 at 0.5."
        + (" Each tuned network variant tuned its own training length (optim.epochs "
           f"{settings['epochs'][0]}-{settings['epochs'][1]})." if settings.get("epochs")
           else ""),
        "",
    ]
    searches = {(s["split"], s["variant"]): s for s in state["searches"]}
    for split in dict.fromkeys(e["split"] for e in summary):
        lines += [
            f"## split: {split}",
            "",
            "| variant | MIoU | F1 | AUC | F1@0.5 | MIoU@0.5 | best val | tuning s | runs |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for e in (e for e in summary if e["split"] == split):
            s = searches.get((split, e["variant"]))
            seconds = f"{s['seconds']:.0f}" if s else "-"
            lines.append(
                f"| {e['variant']} | {_cell(e['miou'])} | {_cell(e['f1'])} | "
                f"{_cell(e['auc'])} | {_cell(e['f1@0.5'])} | {_cell(e['miou@0.5'])} | "
                f"{metric_text(s['best_value']) if s else '-'} | "
                f"{seconds} | {e['runs']} |"
            )
        lines.append("")
        lines += _learned_little([e for e in summary if e["split"] == split])
        shifted: dict[str, float] = {}
        for row in (r for r in state["rows"] if r["split"] == split):
            for channel, share in (row.get("test_outside_training") or {}).items():
                shifted[channel] = max(share, shifted.get(channel, 0.0))
        if shifted_channels(shifted):
            lines += [
                f"Test inputs far outside the training range (share of valid values beyond "
                f"the training 2-98 % range by more than its width): "
                f"{shifted_channels(shifted)}; scores there measure extrapolation.",
                "",
            ]
        ensembles = [e for e in summarize(state.get("ensembles", [])) if e["split"] == split]
        if ensembles:
            lines += [
                f"Seed ensembles: the {settings['seeds']} seeds' probabilities averaged, "
                f"the threshold chosen on their averaged validation probabilities; mean ± "
                f"std over folds.",
                "",
                "| variant | MIoU | F1 | AUC | F1@0.5 | MIoU@0.5 | ensembles |",
                "|---|---|---|---|---|---|---|",
            ]
            lines += [
                f"| {e['variant']} | {_cell(e['miou'])} | {_cell(e['f1'])} | "
                f"{_cell(e['auc'])} | {_cell(e['f1@0.5'])} | {_cell(e['miou@0.5'])} | "
                f"{e['runs']} |"
                for e in ensembles
            ]
            lines.append("")
        lines += paired_lines([p for p in state.get("paired", []) if p["split"] == split])
    for name, reason in state["skipped"].items():
        lines.append(f"- {name}: not run ({reason})")
    for name in dict.fromkeys(e["variant"] for e in summary):
        lines.append(f"- **{name}**: {VARIANTS[name].description}")
    return "\n".join(lines) + "\n"


def paired_lines(pairs: list[dict[str, Any]]) -> list[str]:
    """Markdown of ``compare_paired.paired_against``'s figures, one table per split."""
    lines = []
    for split in dict.fromkeys(p["split"] for p in pairs):
        rows = [p for p in pairs if p["split"] == split]
        lines += [f"Split {split}: test F1 (at the validation threshold) against "
                  f"{rows[0]['reference']}, paired by test tile and seed: mean difference "
                  "and 95 % bootstrap interval, the test's held-out units (blocks, patches "
                  "or tiles) and the seed pairs drawn again; few units, wide intervals:", "",
                  "| variant | F1 difference | 95 % interval | runs | test units |",
                  "|---|---|---|---|---|"]
        lines += [f"| {p['variant']} | {p['mean']:+.3f} | [{p['low']:+.3f}, {p['high']:+.3f}] "
                  f"| {p['runs']} | {p['tiles']} |" for p in rows]
        lines.append("")
    return lines


def settings_key(spec: StudySpec, settings: RecordedSettings) -> str:
    """What a stored comparison must match to be continued: study, seed, budgets, splits.

    Adding a variant or switching the ensembles keeps what the others finished.
    """
    doc = {"study": spec.fingerprint(), "seed": spec.seed, **settings.to_dict()}
    doc.pop("variants")  # adding a variant keeps what the others finished
    doc.pop("ensemble")  # nor does scoring ensembles change a single run
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def load_state(path: Path, key: str, fresh: bool) -> dict[str, Any]:
    """The stored comparison to continue, or an empty one.

    Raises:
        SpecError: The file is unreadable or holds a comparison of other settings.
    """
    empty = {"format": FORMAT, "key": key, "rows": [], "searches": [], "skipped": {},
             "ensembles": []}
    if fresh or not path.is_file():
        return empty
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise SpecError(f"cannot read {path}: {exc}",
                        hint="delete it or pass --fresh to start the comparison over") from exc
    if state.get("format") != FORMAT or state.get("key") != key:
        raise SpecError(
            f"{path} holds a comparison with other settings (study, seed, trials, seeds, "
            f"splits or folds changed)",
            hint="pass --fresh to start over, or -o ANOTHER_DIR to keep both",
        )
    return state


def save_state(out_dir: Path, state: dict[str, Any], settings: RecordedSettings) -> None:
    """Write ``compare.json`` and ``compare.md`` (atomically), summaries refreshed."""
    state["settings"] = settings.to_dict()
    state["summary"] = summarize(state["rows"])
    state["ensemble_summary"] = summarize(state.get("ensembles", []))
    state["versions"] = package_versions()
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / RESULTS_FILE, state)
    write_text(out_dir / TABLE_FILE, markdown(state))


__all__ = [
    "FORMAT",
    "METRICS",
    "RESULTS_FILE",
    "TABLE_FILE",
    "load_state",
    "metric_text",
    "markdown",
    "paired_lines",
    "save_state",
    "settings_key",
    "summarize",
]
