"""Final training with an exported best configuration, evaluated once on the test split.

``hpo train best.yaml`` is this module: the export names the model, its full config and
the data section; the data are prepared exactly as tuning prepared them (same cube, same
split, see :func:`hpo.study.prepare.prepare_final_data`), the model is trained on the training
split (or training + validation), and the test split, which tuning never read, gives the
reported MIoU / F1 / AUC. A run folder holds the checkpoint, ``metrics.json`` and plots.
With ``members`` above one, the configuration is trained with that many seeds and saved
as one :class:`networks.SeedEnsemble`, whose threshold is chosen on the members' averaged
validation probabilities.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import networks
from data.shift import outside_training, shifted_channels
from hpo.engine.atomic import write_json
from hpo.engine.errors import ExportError, HPOError
from hpo.study.export import load_export
from hpo.study.figures import plot_history, plot_roc
from hpo.study.files import CHECKPOINT_FILE, CURVES_FILE, METRICS_FILE, ROC_FILE, RUN_FORMAT
from hpo.study.prepare import FinalData, prepare_final_data
from hpo.study.scene import ensure_section_scene
from hpo.study.schema import ALLOW_OUTSIDE_ENV, allowed_outside
from networks import MODEL_NAMES, ModelConfig
from networks.errors import ConfigError
from networks.inference import evaluate_split, split_log_odds
from networks.metrics import threshold_of, validation_threshold


@dataclass
class TrainRun:
    """What :func:`train_export` left in its run folder.

    Attributes:
        run_dir: The folder.
        checkpoint: The checkpoint file.
        metrics: The ``metrics.json`` document.
        seconds: Wall time of data preparation, training and evaluation.
    """

    run_dir: Path
    checkpoint: Path
    metrics: dict[str, Any]
    seconds: float


def default_run_dir(search: str | None, now: datetime | None = None) -> Path:
    """``runs/<search>-<YYYYmmdd-HHMMSS>`` in the working folder.

    Args:
        search: The search's name (``"run"`` when unknown).
        now: The timestamp (default: now).

    Returns:
        The folder path (not created).
    """
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{search or 'run'}-{stamp}"


def train_export(
    export: str | Path | Mapping[str, Any],
    run_dir: str | Path | None = None,
    *,
    train_on: str = "train",
    seed: int | None = None,
    epochs: int | None = None,
    device: str | None = None,
    say: Callable[[str], None] = print,
    on_epoch: Callable[[int, dict[str, Any]], Any] | None = None,
    members: int = 1,
    allow_outside: Sequence[str | Path] = (),
) -> TrainRun:
    """Train the exported configuration and evaluate it once on the test split.

    Args:
        export: An export file (``hpo export``) or its loaded document.
        run_dir: Output folder (default: :func:`default_run_dir`); it must not hold a
            checkpoint yet.
        train_on: ``"train"`` or ``"train+val"``.
        seed: Training seed (default: the study's, as every trial used).
        epochs: Overrides ``optim.epochs`` of the exported config.
        device: ``"cpu"``, ``"cuda"``, ... (default: CUDA when available).
        say: Where to tell the user what happens.
        on_epoch: Called after every epoch as ``on_epoch(epoch, metrics)``.
        members: Seeds to train (``seed``, ``seed + 1``, ...); above one, they are saved
            and evaluated as one seed ensemble.
        allow_outside: Folders the export's ``data.cache_dir`` may also lie in (as
            ``--allow-outside`` for a study file).

    Returns:
        The run.

    Raises:
        ExportError: The export is unreadable, has no network config or seed, or its
            cube cache lies outside the allowed folders.
        HPOError: The run folder already holds a checkpoint, or ``members`` is out of
            range.
        data.DataError: The data cannot be prepared.
    """
    started = time.monotonic()
    source = str(export) if isinstance(export, str | Path) else None
    doc = load_export(export) if isinstance(export, str | Path) else dict(export)
    model_name, config = _model(doc, source)
    config = _checked_options(config, epochs, members)
    run_dir = _new_run_dir(run_dir, doc.get("search"))
    split_seed = _split_seed(doc, source)
    seed = split_seed if seed is None else seed
    section, base_dir = _data(doc, source)
    final, shifted = _final_data(section, base_dir, split_seed, train_on, source,
                                 allow_outside, say)
    seeds = [seed + i for i in range(members)]
    job = (config, section, base_dir, split_seed, train_on, model_name)
    histories = _train_members(job, final, seeds, device, say, on_epoch)
    model, threshold, chosen = _model_and_threshold(doc, histories, final, config, train_on)
    test = evaluate_split(model, final.test_set, threshold, config.optim.batch_size)
    run_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = networks.save_checkpoint(
        run_dir / CHECKPOINT_FILE, model, model_name=model_name, config=config,
        source_names=final.source_names, norm_stats=final.norm,
        extra={"patch_size": int(final.splits.info["patch_size"]), "threshold": threshold,
               "train_on": train_on, "seed": seed, "seeds": seeds, "search": doc.get("search"),
               "data_hash": final.cube.hash, "dates": list(final.cube.dates),
               "test": test["at_0.5"]},
    )
    plot_history(histories[0].epochs, run_dir / CURVES_FILE)
    plot_roc(test["roc"], run_dir / ROC_FILE)
    metrics = {
        "format": RUN_FORMAT, "search": doc.get("search"), "export": source,
        "model": model_name, "config": config.to_dict(), "source_names": final.source_names,
        "train_on": train_on, "seed": seed, "seeds": seeds, "split": final.splits.to_dict(),
        "tuned": {"metric": doc.get("metric"), "validation_value": doc.get("best_value")},
        "threshold": threshold, **chosen, "test": test, "test_outside_training": shifted,
        **_histories(seeds, histories), "versions": networks.package_versions(),
        "seconds": round(time.monotonic() - started, 2),
        "files": {"checkpoint": CHECKPOINT_FILE, "curves": CURVES_FILE, "roc": ROC_FILE},
    }
    write_json(run_dir / METRICS_FILE, metrics)
    return TrainRun(run_dir, checkpoint, metrics, time.monotonic() - started)


def _new_run_dir(run_dir: str | Path | None, search: str | None) -> Path:
    """The run folder (default: :func:`default_run_dir`), which must hold no checkpoint yet."""
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir(search)
    if (run_dir / CHECKPOINT_FILE).exists():
        raise HPOError(f"{run_dir} already holds a trained model (hint: pass another -o RUN_DIR)")
    return run_dir


def _split_seed(doc: Mapping[str, Any], source: str | None) -> int:
    """The study's seed, which made the split tuning used."""
    split_seed = doc.get("seed")
    if not isinstance(split_seed, int):
        raise ExportError(
            "the export has no integer 'seed'", path=source,
            hint="export the study again with `hpo export STUDY.toml`",
        )
    return split_seed


def _final_data(
    section: dict[str, Any],
    base_dir: Path,
    split_seed: int,
    train_on: str,
    source: str | None,
    allow_outside: Sequence[str | Path],
    say: Callable[[str], None],
) -> tuple[FinalData, dict[str, float]]:
    """The export's data as tuning prepared them, and how far the test inputs shift.

    Returns:
        ``(final data, share of each channel's test values far outside training)``.
    """
    _check_cache_dir(section, base_dir, source, allow_outside)
    ensure_section_scene(section, base_dir, origin=source, say=say)
    final = prepare_final_data(section, base_dir, seed=split_seed, train_on=train_on)
    say(f"data: {final.describe()}")
    shifted = outside_training(final.cube, final.norm, final.source_names, final.splits.test)
    far = shifted_channels(shifted)
    if far:
        # the score of a test split the model must extrapolate on says little about others
        say(f"warning: test inputs far outside the training range: {far}")
    return final, shifted


def _checked_options(config: ModelConfig, epochs: int | None, members: int) -> ModelConfig:
    """The config with ``--epochs`` applied, once ``--epochs`` and ``--members`` are valid."""
    if epochs is not None:
        if epochs < 1:
            raise HPOError(f"--epochs {epochs}: use 1 or more")
        config = dataclasses.replace(config, optim=dataclasses.replace(config.optim, epochs=epochs))
    if isinstance(members, bool) or not isinstance(members, int) or not 1 <= members <= 64:
        raise HPOError(f"--members {members!r}: use 1 (one model) to 64")
    return config


def _histories(seeds: Sequence[int], histories: Sequence[Any]) -> dict[str, Any]:
    """The run's training record: the first member's epochs, every member's last one."""
    history = histories[0]
    return {
        "validation_last_epoch": history.epochs[-1] if history.epochs else None,
        "history": history.epochs,
        "members": [
            {"seed": member_seed, "validation_last_epoch": h.epochs[-1] if h.epochs else None}
            for member_seed, h in zip(seeds, histories, strict=True)
        ],
    }


def _train_members(
    job: tuple,
    final: FinalData,
    seeds: Sequence[int],
    device: str | None,
    say: Callable[[str], None],
    on_epoch: Callable[[int, dict[str, Any]], Any] | None,
) -> list[Any]:
    """Train one model per seed: side by side in worker processes when CPUs allow.

    ``job`` is ``(config, section, base_dir, split_seed, train_on, model_name)``, what a
    worker needs to prepare the same data again.
    """
    members = len(seeds)
    workers = _member_workers(members, device)
    histories = []
    if workers > 1:
        say(f"training {members} members, {workers} at a time (one process each)")
        with ProcessPoolExecutor(workers, mp_context=get_context("forkserver")) as pool:
            for i, done in enumerate(pool.map(_train_member, [(*job, s) for s in seeds])):
                histories.append(done)
                say(f"member {i + 1}/{members}: seed {seeds[i]} trained")
        return histories
    config, model_name = job[0], job[-1]
    for i, member_seed in enumerate(seeds):
        if members > 1:
            say(f"member {i + 1}/{members}: seed {member_seed}")
        histories.append(networks.train(
            config,
            final.train_set,
            final.val_set,
            seed=member_seed,
            model=model_name,
            device=device,
            callbacks=[on_epoch] if on_epoch is not None else (),
        ))
    return histories


def _model_and_threshold(
    doc: Mapping[str, Any],
    histories: Sequence[Any],
    final: FinalData,
    config: Any,
    train_on: str,
) -> tuple[Any, float | None, dict[str, str]]:
    """The model to save (one member, or the seed ensemble) and its decision threshold.

    Returns:
        ``(model, threshold, {"threshold_source", "threshold_note"})``.
    """
    if len(histories) == 1:
        model, threshold = histories[0].model, validation_threshold(histories[0])
    else:
        model = networks.SeedEnsemble([h.model for h in histories])
        threshold = threshold_of(
            *split_log_odds(model, final.val_set, config.optim.batch_size)
        )
    note, source = "chosen on the validation split", "validation"
    pooled = doc.get("threshold")
    if isinstance(pooled, dict) and isinstance(pooled.get("threshold"), int | float):
        source = "tuning replicates"
        # Chosen on tuning's replicates of this configuration and kept only when it beat
        # 0.5 out of sample there: one run's validation split would fit its noise.
        threshold = float(pooled["threshold"])
        note = (f"chosen on {pooled.get('runs')} tuning replicates of this configuration"
                + ("" if pooled.get("kept") else
                   "; 0.5, since their best cut did not beat 0.5 out of sample"))
    if train_on == "train+val" and threshold is not None and pooled is None:
        note = f"{note}, which was trained on (optimistic)"
    return model, threshold, {"threshold_source": source, "threshold_note": note}


def _model(doc: Mapping[str, Any], source: str | None) -> tuple[str, Any]:
    model = doc.get("model") or {}
    name = model.get("name") or "fusion"
    if name not in MODEL_NAMES or not isinstance(model.get("config"), Mapping):
        raise ExportError(
            "no network model and config in the export (a search over a custom objective?)",
            path=source,
            hint="export a search of studies/*.toml that tunes a network",
        )
    try:
        return name, ModelConfig.from_dict(model["config"])
    except ConfigError as exc:
        raise ExportError(f"model.config: {exc}", path=source) from exc


def _check_cache_dir(
    section: Mapping[str, Any], base: Path, source: str | None, allow: Sequence[str | Path]
) -> None:
    """Hold the export's cube cache to the folders a study file's is held to.

    An edited export could otherwise write its cube anywhere: only the study's folder,
    the folder above it (where the shipped studies share ``../.cache``), the working
    folder and the folders the user allows are accepted.
    """
    configured = section.get("cache_dir")
    if configured is None:
        return
    if not isinstance(configured, str):
        raise ExportError(f"data.cache_dir = {configured!r}", path=source,
                          hint="write it as a folder path, or re-export the study")
    lexical = Path(os.path.normpath(base / Path(configured).expanduser()))
    base = Path(os.path.normpath(base.absolute()))
    # never a file system's root: an export naming data_base_dir "/" would allow all
    roots = [Path.cwd()] + [r for r in (base, base.parent) if r.parent != r]
    if any(lexical.is_relative_to(root) for root in roots + allowed_outside(allow)):
        return
    raise ExportError(
        f"data.cache_dir {configured!r} resolves to {lexical}, outside {base}, its parent "
        "and the working folder",
        path=source,
        hint=f"re-export the study, or allow the folder with --allow-outside {lexical.parent} "
        f"(or {ALLOW_OUTSIDE_ENV})",
    )


def _data(doc: Mapping[str, Any], source: str | None) -> tuple[dict[str, Any], Path]:
    section = doc.get("data")
    if not isinstance(section, Mapping):
        raise ExportError("no data section in the export", path=source, hint="re-export it")
    base = doc.get("data_base_dir")
    if base is None and source is not None:
        base = Path(source).resolve().parent
    return dict(section), Path(base or ".")


def _member_workers(members: int, device: str | None) -> int:
    """Processes to train ensemble members in: one per CPU this process may use.

    A CPU training run uses one thread (see ``networks.train``), so members train side by
    side, each in its own process, and give the same models as one after another.
    """
    if members < 2 or (device or "cpu") != "cpu":
        return 1
    return max(1, min(members, len(os.sched_getaffinity(0))))


def _train_member(job: tuple) -> Any:
    """One ensemble member, in a worker process (the cached cube is memory-mapped)."""
    config, section, base_dir, split_seed, train_on, model_name, member_seed = job
    final = prepare_final_data(section, base_dir, seed=split_seed, train_on=train_on)
    return networks.train(config, final.train_set, final.val_set, seed=member_seed,
                          model=model_name, device="cpu")


__all__ = [
    "CHECKPOINT_FILE",
    "METRICS_FILE",
    "RUN_FORMAT",
    "TrainRun",
    "default_run_dir",
    "train_export",
]
