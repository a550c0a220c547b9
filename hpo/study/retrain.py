"""Final training with an exported best configuration, evaluated once on the test split.

``hpo train best.yaml`` is this module: the export names the model, its full config and
the data section; the data are prepared exactly as tuning prepared them (same cube, same
split, see :func:`hpo.study.tune.prepare_final_data`), the model is trained on the training
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

import numpy as np

from hpo.engine.atomic import write_json
from hpo.engine.errors import ExportError, HPOError
from hpo.study.figures import pyplot, save_figure

RUN_FORMAT = "landslide-hpo/train-run/1"
CHECKPOINT_FILE = "model.pt"
METRICS_FILE = "metrics.json"
CURVES_FILE = "curves.png"
ROC_FILE = "roc.png"
_ROC_POINTS = 200


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
    import networks
    from data.shift import outside_training, shifted_channels
    from hpo.study import ensure_section_scene, prepare_final_data
    from hpo.study.export import load_export

    started = time.monotonic()
    source = str(export) if isinstance(export, str | Path) else None
    doc = load_export(export) if isinstance(export, str | Path) else dict(export)
    model_name, config = _model(doc, source)
    if epochs is not None:
        if epochs < 1:
            raise HPOError(f"--epochs {epochs}: use 1 or more")
        config = dataclasses.replace(config, optim=dataclasses.replace(config.optim, epochs=epochs))
    if isinstance(members, bool) or not isinstance(members, int) or not 1 <= members <= 64:
        raise HPOError(f"--members {members!r}: use 1 (one model) to 64")
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir(doc.get("search"))
    if (run_dir / CHECKPOINT_FILE).exists():
        raise HPOError(f"{run_dir} already holds a trained model (hint: pass another -o RUN_DIR)")
    split_seed = doc.get("seed")
    if not isinstance(split_seed, int):
        raise ExportError(
            "the export has no integer 'seed'", path=source,
            hint="export the study again with `hpo export STUDY.toml`",
        )
    seed = split_seed if seed is None else seed
    section, base_dir = _data(doc, source)
    _check_cache_dir(section, base_dir, source, allow_outside)
    ensure_section_scene(section, base_dir, origin=source, say=say)
    final = prepare_final_data(section, base_dir, seed=split_seed, train_on=train_on)
    say(f"data: {final.describe()}")
    shifted = outside_training(final.cube, final.norm, final.source_names, final.splits.test)
    far = shifted_channels(shifted)
    if far:
        # the score of a test split the model must extrapolate on says little about others
        say(f"warning: test inputs far outside the training range: {far}")

    seeds = [seed + i for i in range(members)]
    workers = _member_workers(members, device)
    if workers > 1:
        say(f"training {members} members, {workers} at a time (one process each)")
        job = (config, section, base_dir, split_seed, train_on, model_name)
        histories = []
        with ProcessPoolExecutor(workers, mp_context=get_context("forkserver")) as pool:
            for i, done in enumerate(pool.map(_train_member, [(*job, s) for s in seeds])):
                histories.append(done)
                say(f"member {i + 1}/{members}: seed {seeds[i]} trained")
    else:
        histories = []
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
    history = histories[0]
    if members == 1:
        model, threshold = history.model, _validation_threshold(history)
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
    test = evaluate_split(model, final.test_set, threshold, config.optim.batch_size)
    run_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = networks.save_checkpoint(
        run_dir / CHECKPOINT_FILE,
        model,
        model_name=model_name,
        config=config,
        source_names=final.source_names,
        norm_stats=final.norm,
        extra={
            "patch_size": int(final.splits.info["patch_size"]),
            "threshold": threshold,
            "train_on": train_on,
            "seed": seed,
            "seeds": seeds,
            "search": doc.get("search"),
            "data_hash": final.cube.hash,
            "dates": list(final.cube.dates),
            "test": test["at_0.5"],
        },
    )
    plot_history(history.epochs, run_dir / CURVES_FILE)
    plot_roc(test["roc"], run_dir / ROC_FILE)
    metrics = {
        "format": RUN_FORMAT,
        "search": doc.get("search"),
        "export": source,
        "model": model_name,
        "config": config.to_dict(),
        "source_names": final.source_names,
        "train_on": train_on,
        "seed": seed,
        "seeds": seeds,
        "split": final.splits.to_dict(),
        "tuned": {"metric": doc.get("metric"), "validation_value": doc.get("best_value")},
        "threshold": threshold,
        "threshold_source": source,
        "threshold_note": (
            f"{note}, which was trained on (optimistic)"
            if train_on == "train+val" and threshold is not None and pooled is None
            else note
        ),
        "test": test,
        "test_outside_training": shifted,
        "validation_last_epoch": history.epochs[-1] if history.epochs else None,
        "history": history.epochs,
        "members": [
            {"seed": member_seed, "validation_last_epoch": h.epochs[-1] if h.epochs else None}
            for member_seed, h in zip(seeds, histories, strict=True)
        ],
        "versions": networks.package_versions(),
        "seconds": round(time.monotonic() - started, 2),
        "files": {"checkpoint": CHECKPOINT_FILE, "curves": CURVES_FILE, "roc": ROC_FILE},
    }
    write_json(run_dir / METRICS_FILE, metrics)
    return TrainRun(run_dir, checkpoint, metrics, time.monotonic() - started)


def _model(doc: Mapping[str, Any], source: str | None) -> tuple[str, Any]:
    from networks import MODEL_NAMES, ModelConfig
    from networks.errors import ConfigError

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
    from hpo.study.schema import ALLOW_OUTSIDE_ENV, allowed_outside

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
    import networks
    from hpo.study import prepare_final_data

    config, section, base_dir, split_seed, train_on, model_name, member_seed = job
    final = prepare_final_data(section, base_dir, seed=split_seed, train_on=train_on)
    return networks.train(config, final.train_set, final.val_set, seed=member_seed,
                          model=model_name, device="cpu")


def threshold_of(log_odds: np.ndarray, label: np.ndarray) -> float | None:
    """The F1-best threshold, a probability, of validation log-odds.

    Args:
        log_odds: 1-D validation log-odds (e.g. a seed ensemble's).
        label: 1-D bool labels, aligned with ``log_odds``.

    Returns:
        The threshold, or ``None`` without landslide pixels.
    """
    from networks.metrics import best_f1_threshold

    return best_f1_threshold(log_odds, label)[1] if label.any() else None


def _validation_threshold(history: Any) -> float | None:
    """The decision threshold the training run chose on the validation split, if any."""
    value = getattr(history, "threshold", None)
    if value is None and history.epochs:
        value = history.epochs[-1].get("threshold")
    return float(value) if isinstance(value, int | float) and 0 < value < 1 else None


def split_log_odds(
    model: Any, data_set: Any, batch_size: int = 8
) -> tuple[np.ndarray, np.ndarray]:
    """Landslide log-odds and labels of every valid pixel of a split, in tile order.

    Log-odds (landslide logit minus background logit), not probabilities: a confident
    model's float32 probabilities are exactly 0 or 1 on many pixels, and their ties would
    hide its ranking from the AUC and the threshold search.

    Args:
        model: The trained model (eval mode, on its device).
        data_set: A data set of ``(x, y, valid)``.
        batch_size: Tiles per forward pass.

    Returns:
        ``(log_odds float32, label bool)``, 1-D and aligned: the same data set always
        gives its pixels in the same order, so several models of one split can be
        averaged pixel by pixel (:func:`mean_probability_log_odds`).
    """
    from torch.utils.data import DataLoader

    from hpo.study.predict import landslide_log_odds
    from networks import model_device

    device = model_device(model)
    scores, labels = [], []
    model.eval()
    for x, y, valid in DataLoader(data_set, batch_size=batch_size):
        keep = valid.bool()
        scores.append(landslide_log_odds(model, x.to(device)).cpu()[keep].numpy())
        labels.append(y[keep].numpy() > 0)
    return np.concatenate(scores), np.concatenate(labels)


def mean_probability_log_odds(log_odds: Sequence[np.ndarray]) -> np.ndarray:
    """Log-odds of the mean probability of several models, without rounding to 0 or 1.

    Args:
        log_odds: Each model's log-odds of the same pixels.

    Returns:
        ``log(mean p / mean (1 - p))``, float64, computed in log space.
    """
    stack = np.stack([np.asarray(s, np.float64) for s in log_odds])
    # log p = -log(1 + e^-s); the 1/n of the two means cancels.
    return (np.logaddexp.reduce(-np.logaddexp(0.0, -stack), axis=0)
            - np.logaddexp.reduce(-np.logaddexp(0.0, stack), axis=0))


def score_log_odds(
    log_odds: np.ndarray, label: np.ndarray, threshold: float | None
) -> dict[str, Any]:
    """Test metrics of log-odds: at probability 0.5 and at a validation-chosen threshold.

    Args:
        log_odds: 1-D landslide log-odds of valid pixels.
        label: 1-D bool labels, aligned with ``log_odds``.
        threshold: The validation-chosen threshold (a probability), or ``None``.

    Returns:
        ``{"pixels", "landslide_pixels", "at_0.5": {...}, "at_threshold": {...} | None,
        "roc": {"fpr", "tpr"}}``; each metrics dict has ``miou``, ``f1``, ``auc`` and the
        confusion counts.
    """
    from networks import SegmentationMeter
    from networks.metrics import confusion

    meter = SegmentationMeter(prob_dtype=np.float64)
    meter.update_log_odds(log_odds, label)
    scores = meter.compute()
    out: dict[str, Any] = {
        "pixels": int(log_odds.size),
        "landslide_pixels": int(label.sum()),
        "at_0.5": {
            "miou": scores["miou"],
            "f1": scores["f1"],
            "auc": scores["auc"],
            "confusion": confusion(log_odds, label, 0.5),
        },
        "at_threshold": None,
    }
    if threshold is not None:
        at = meter.at(threshold)
        out["at_threshold"] = {
            "threshold": threshold,
            "miou": at["miou"],
            "f1": at["f1"],
            "auc": scores["auc"],
            "confusion": confusion(log_odds, label, threshold),
        }
    out["roc"] = roc_points(log_odds, label)
    return out


def evaluate_split(
    model: Any, data_set: Any, threshold: float | None, batch_size: int = 8
) -> dict[str, Any]:
    """Test metrics of a trained model: at 0.5 and at a validation-chosen threshold.

    Args:
        model: The trained model (eval mode, on its device).
        data_set: A data set of ``(x, y, valid)`` (the test split).
        threshold: The validation-chosen threshold, or ``None``.
        batch_size: Tiles per forward pass.

    Returns:
        What :func:`score_log_odds` returns.
    """
    return score_log_odds(*split_log_odds(model, data_set, batch_size), threshold)


def roc_points(prob: np.ndarray, label: np.ndarray, n: int = _ROC_POINTS) -> dict | None:
    """At most ``n`` points of the ROC curve, one per distinct threshold before thinning.

    Args:
        prob: 1-D scores.
        label: 1-D bool labels.
        n: Points kept (evenly spaced along the curve, both ends included).

    Returns:
        ``{"fpr": [...], "tpr": [...]}`` from (0, 0) to (1, 1), or ``None`` when only one
        class is present.
    """
    n_pos = int(label.sum())
    n_neg = label.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    from networks.metrics import tie_ends

    order = np.argsort(-prob, kind="stable")
    ends = tie_ends(prob[order])
    tp = np.cumsum(label[order])[ends]
    fpr = np.concatenate(([0.0], (ends + 1 - tp) / n_neg))
    tpr = np.concatenate(([0.0], tp / n_pos))
    keep = np.unique(np.linspace(0, fpr.size - 1, min(fpr.size, n)).astype(int))
    return {"fpr": fpr[keep].tolist(), "tpr": tpr[keep].tolist()}


def plot_history(epochs: list[dict[str, Any]], path: str | Path) -> Path:
    """Training curves: losses (left) and validation metrics (right) per epoch.

    Args:
        epochs: ``History.epochs``.
        path: The PNG to write (atomically).

    Returns:
        The path.
    """
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6), dpi=120)
    x = [e["epoch"] for e in epochs]
    for key, label in (("train_loss", "train loss"), ("val_loss", "validation loss")):
        left.plot(x, [e.get(key) for e in epochs], marker="o", label=label)
    from matplotlib.ticker import MaxNLocator

    for ax in (left, right):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    left.set_xlabel("epoch")
    left.set_ylabel("loss (eq. 8)")
    left.legend()
    for key in ("f1", "miou", "auc", "f1_best"):
        values = [e.get(key) for e in epochs]
        if any(v is not None for v in values):
            right.plot(x, [np.nan if v is None else v for v in values], marker="o", label=key)
    right.set_xlabel("epoch")
    right.set_ylabel("validation metric")
    right.set_ylim(0, 1)
    right.legend()
    fig.tight_layout()
    return save_figure(fig, path)


def plot_roc(roc: Mapping[str, Any] | None, path: str | Path) -> Path | None:
    """The test ROC curve (nothing is written when the test split holds one class).

    Args:
        roc: ``{"fpr": [...], "tpr": [...]}`` or ``None``.
        path: The PNG to write (atomically).

    Returns:
        The path, or ``None``.
    """
    if not roc:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4, 4), dpi=120)
    ax.plot(roc["fpr"], roc["tpr"], label="model")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("ROC, test split")
    ax.legend(loc="lower right")
    fig.tight_layout()
    return save_figure(fig, path)


__all__ = [
    "CHECKPOINT_FILE",
    "METRICS_FILE",
    "RUN_FORMAT",
    "TrainRun",
    "default_run_dir",
    "evaluate_split",
    "mean_probability_log_odds",
    "score_log_odds",
    "split_log_odds",
    "threshold_of",
    "plot_history",
    "plot_roc",
    "roc_points",
    "train_export",
]
