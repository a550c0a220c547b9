"""One training run from a config: what every tuning trial and ``hpo train`` call."""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterable, Iterator, Sized
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

from networks.boosting import BoostingModel
from networks.config import HeadConfig, ModelConfig
from networks.errors import TrainingError
from networks.fusion import FusionNet
from networks.history import METRIC_NAMES, History
from networks.losses import FusionLoss
from networks.metrics import SegmentationMeter, f1_curve
from networks.precision import Precision, resolve_device
from networks.pretraining import pretrain_dbn
from networks.registry import build_model

Callback = Callable[[int, dict[str, Any]], bool | None]
"""Called after every epoch with (epochs done, metrics); returning True stops training."""

_log = logging.getLogger(__name__)


def _unpack(batch: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if not isinstance(batch, list | tuple) or len(batch) != 3:
        raise TrainingError(
            "a data set item must be (x, y, valid)",
            hint="x (S, T, h, w) float32, y (h, w) in {0, 1}, valid (h, w) bool",
        )
    return batch[0], batch[1], batch[2]


def _cube_shape(data_set: Dataset) -> tuple[int, int]:
    if not isinstance(data_set, Sized) or len(data_set) == 0:
        raise TrainingError("the training set is empty", hint="check the split and tiling")
    x, _, _ = _unpack(data_set[0])
    if len(x.shape) != 4:
        raise TrainingError(
            f"x must be (S, T, h, w), got shape {tuple(x.shape)}",
            hint="static sources are stored once as (S, 1, h, w) and broadcast over T",
        )
    return int(x.shape[0]), int(x.shape[1])


def model_device(model: nn.Module) -> torch.device:
    """The device a model lives on: that of its first parameter, else of its first buffer.

    Args:
        model: Any module (``hgb`` holds buffers only).

    Returns:
        The device (CPU for a module with neither).
    """
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def evaluate(
    model: nn.Module,
    data: Dataset | DataLoader,
    *,
    head: HeadConfig | None = None,
    batch_size: int = 8,
    device: str | torch.device | None = None,
    threshold: float | None = None,
    curve: bool = False,
) -> dict[str, Any]:
    """Loss and metrics of a model over a whole data set, without training.

    Args:
        model: A model of this package.
        data: A data set of ``(x, y, valid)`` or a loader of such batches.
        head: Weights of the eq. 8 loss (default: the defaults).
        batch_size: Batch size when ``data`` is a data set.
        device: Where to run (default: the model's device).
        threshold: A decision threshold chosen elsewhere (e.g. ``History.threshold``,
            chosen on the validation split); adds ``miou_at_threshold`` and
            ``f1_at_threshold``.
        curve: Add ``f1_curve``: F1 at every threshold of
            :data:`networks.metrics.THRESHOLD_GRID` (see
            :func:`networks.metrics.pooled_threshold`).

    Returns:
        ``{"loss", "miou", "f1", "auc", "f1_best", "miou_best", "threshold"}``: ``miou``
        and ``f1`` at 0.5, ``auc`` ``None`` for a single class, ``f1_best`` and
        ``miou_best`` at the threshold that maximizes F1 on this very data
        (``threshold``), plus the two keys above when ``threshold`` is given.

    Raises:
        TrainingError: When ``data`` has no valid pixel.
    """
    device = torch.device(device) if device is not None else model_device(model)
    loader = data if isinstance(data, DataLoader) else DataLoader(data, batch_size=batch_size)
    loss_fn = FusionLoss(head if head is not None else HeadConfig())
    precision = Precision(device)
    meter = SegmentationMeter()
    total = 0.0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for batch in loader:
            x, y, valid = (t.to(device) for t in _unpack(batch))
            with precision.autocast():
                logits = model(x.float())
            n_valid = int(valid.sum())
            total += float(loss_fn(logits, y, valid)) * n_valid
            logits = logits.float()
            meter.update_log_odds(logits[:, 1] - logits[:, 0], y, valid)
    model.train(was_training)
    if meter.n_pixels == 0:
        raise TrainingError("the evaluation set has no valid pixel", hint="check the valid masks")
    result = {"loss": total / meter.n_pixels, **meter.compute()}
    result["miou_best"] = meter.at(result["threshold"])["miou"]
    if threshold is not None:
        at = meter.at(threshold)
        result["miou_at_threshold"], result["f1_at_threshold"] = at["miou"], at["f1"]
    if curve:
        result["f1_curve"] = f1_curve(meter)
    return result


def _train_epoch(
    model: nn.Module,
    loader: DataLoader,
    loss_fn: FusionLoss,
    optimizer: torch.optim.Optimizer,
    precision: Precision,
    epoch: int,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    grad_clip: float = 0.0,
    augment: torch.Generator | None = None,
) -> float:
    """One pass over the training set; returns the loss averaged over valid pixels."""
    device = precision.device
    model.train()
    total, count = 0.0, 0
    for batch in loader:
        x, y, valid = (t.to(device) for t in _unpack(batch))
        if augment is not None:
            x, y, valid = _augment(x, y, valid, augment)
        with precision.autocast():
            logits = model(x.float())
        loss = loss_fn(logits, y, valid)
        if not torch.isfinite(loss):
            raise TrainingError(
                f"the training loss became {loss.item()} in epoch {epoch}",
                hint="lower optim.lr, or check the inputs for NaN at valid pixels",
            )
        optimizer.zero_grad(set_to_none=True)
        if grad_clip > 0:
            scaler = precision.scaler
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
            params = [p for group in optimizer.param_groups for p in group["params"]]
            nn.utils.clip_grad_norm_(params, grad_clip)
            scaler.step(optimizer)
            scaler.update()
        else:
            precision.step(loss, optimizer)
        if scheduler is not None:
            scheduler.step()
        n_valid = int(valid.sum())
        total += loss.item() * n_valid
        count += n_valid
    return total / count if count else math.nan


def train(
    config: ModelConfig | None,
    train_set: Dataset,
    val_set: Dataset,
    *,
    seed: int,
    model: str = "fusion",
    device: str | torch.device | None = None,
    callbacks: Iterable[Callback] = (),
    num_workers: int = 0,
) -> History:
    """Train a model from scratch with Adam on eq. 8, validating after every epoch.

    For the fusion network with ``dbn.enabled`` and ``dbn.pretrain``, the first
    ``dbn.warmup_epochs`` epochs (capped at ``optim.epochs - 1``; none without the
    temporal module) train without the DBN branch; then the DBN is pretrained greedily by
    CD-k on at most ``dbn.max_pixels`` sampled training pixels and fine-tuned with the rest
    for the remaining epochs. Warm-up epochs are reported like any other, so every
    configuration costs ``optim.epochs`` epochs.

    The per-pixel gradient-boosting floor (``model="hgb"``) is not trained by
    back-propagation: its trees are fitted once on sampled training pixels (see
    :class:`networks.BoostingModel`), reported as one epoch with the same metrics, and
    ``optim`` does not apply to it.

    On CUDA the forward pass runs under autocast; on CPU, in float32. Model
    initialisation, dropout, shuffling and sampling all derive from ``seed`` (the global
    RNG state is restored afterwards), so two CPU runs with one seed give identical
    histories. On CPU a network trains on one intra-op thread whatever
    ``torch.get_num_threads()`` says (restored afterwards): torch's parallel reductions
    split work by thread count, so the same seed gave validation F1 0.407 on one thread
    and 0.318 on two (quickstart defaults). Parallelism comes from running trials,
    replicates or ensemble members side by side instead. CUDA kernels are not bitwise
    deterministic; GPU runs of one seed agree only to within run-to-run noise.

    Args:
        config: Hyperparameters (``None``: all defaults).
        train_set: Data set of ``(x (S, T, h, w) float32, y (h, w) in {0, 1}, valid (h, w)
            bool)``; all items share S and T.
        val_set: Data set of the same kind, for the per-epoch metrics.
        seed: Seed of everything random in the run.
        model: A name from :data:`networks.MODEL_NAMES`.
        device: Where to train (default: CUDA when available, else CPU).
        callbacks: Called after every epoch as ``callback(epochs_done, metrics)`` with
            metrics :data:`networks.METRIC_NAMES`; when any returns True, training stops
            after this epoch.
        num_workers: DataLoader worker processes.

    Returns:
        The :class:`History`, holding the trained model in eval mode.

    Raises:
        TrainingError: On an empty or malformed data set, a validation set without valid
            pixels, or a loss that became NaN or infinite.
        ConfigError: On an unknown model name.
    """
    config = config if config is not None else ModelConfig()
    device = resolve_device(device)
    n_sources, n_times = _cube_shape(train_set)
    callbacks = list(callbacks)
    cuda_devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(seed)
        net = build_model(model, n_sources, n_times, config).to(device)
        if isinstance(net, BoostingModel):
            return _fit_boosting(net, config, train_set, val_set, seed, callbacks, num_workers)
        with one_thread(device):
            return _fit(net, config, train_set, val_set, seed, callbacks, num_workers, device)


@contextlib.contextmanager
def one_thread(device: torch.device) -> Iterator[None]:
    """On CPU, run the block on one intra-op thread (see :func:`train`); restore after."""
    if device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _end_epoch(
    history: History,
    epoch: int,
    n_epochs: int,
    train_loss: float,
    val: dict[str, Any],
    callbacks: list[Callback],
) -> bool:
    """Record one epoch's metrics and tell the callbacks; True when one asks to stop."""
    metrics = {"train_loss": train_loss, "val_loss": val["loss"]}
    metrics.update({name: val[name] for name in METRIC_NAMES if name in val})
    history.epochs.append({"epoch": epoch, **metrics})
    history.threshold = val["threshold"]
    _log.info("epoch %d/%d %s", epoch, n_epochs, metrics)
    # Every callback sees the epoch (e.g. to report it) even when an earlier one stops.
    stop = any([bool(callback(epoch, dict(metrics))) for callback in callbacks])
    history.stopped_early = history.stopped_early or stop
    return stop


def _fit_boosting(
    net: BoostingModel,
    config: ModelConfig,
    train_set: Dataset,
    val_set: Dataset,
    seed: int,
    callbacks: list[Callback],
    num_workers: int,
) -> History:
    """:func:`train` for ``hgb``: fit the trees, then validate once as epoch 1."""
    items = (_unpack(train_set[i]) for i in range(len(train_set)))  # type: ignore[arg-type]
    raw, labels = net.fit(items, seed=seed)
    # eq. 8 on the sampled training pixels, as (1, 2, n, 1) logits like a network's.
    score = torch.from_numpy(raw).float().view(1, 1, -1, 1)
    logits = torch.cat((torch.zeros_like(score), score), dim=1)
    target = torch.from_numpy(labels).view(1, -1, 1)
    train_loss = float(FusionLoss(config.head)(logits, target))
    val_loader = DataLoader(val_set, config.optim.batch_size, num_workers=num_workers)
    val = evaluate(net, val_loader, head=config.head)
    history = History(model=net)
    _end_epoch(history, 1, 1, train_loss, val, callbacks)
    net.eval()
    return history


def _fit(
    net: nn.Module,
    config: ModelConfig,
    train_set: Dataset,
    val_set: Dataset,
    seed: int,
    callbacks: list[Callback],
    num_workers: int,
    device: torch.device,
) -> History:
    """The epoch loop of :func:`train`, inside its seeded RNG scope."""
    optim = config.optim
    shuffle = torch.Generator().manual_seed(seed)
    sampler = _balanced_sampler(train_set, config.head.positive_tiles, shuffle)
    loader = DataLoader(
        train_set,
        optim.batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        generator=shuffle if sampler is None else None,
        num_workers=num_workers,
    )
    val_loader = DataLoader(val_set, optim.batch_size, num_workers=num_workers)
    ordered = DataLoader(train_set, optim.batch_size, num_workers=num_workers)
    _init_prior(net, train_set, config.head, shuffle)
    params = [p for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=optim.lr, weight_decay=optim.weight_decay)
    scheduler = _scheduler(optimizer, optim.schedule, optim.epochs * len(loader))
    loss_fn = FusionLoss(config.head)
    precision = Precision(device)
    history = History(model=net)
    augment = torch.Generator().manual_seed(seed + 2) if optim.augment else None

    pretrain = isinstance(net, FusionNet) and net.dbn is not None and config.dbn.pretrain
    warmup = 0
    if pretrain and net.temporal is not None:
        warmup = min(config.dbn.warmup_epochs, optim.epochs - 1)
    if warmup:
        net.dbn_active = False

    for epoch in range(1, optim.epochs + 1):
        if pretrain and epoch == warmup + 1:
            history.pretrain_errors = pretrain_dbn(
                net, ordered, config.dbn, seed=seed, precision=precision
            )
            net.dbn_active = True
        train_loss = _train_epoch(
            net, loader, loss_fn, optimizer, precision, epoch, scheduler, optim.grad_clip,
            augment,
        )
        val = evaluate(net, val_loader, head=config.head, device=device)
        if _end_epoch(history, epoch, optim.epochs, train_loss, val, callbacks):
            break
    net.eval()
    return history


def _scheduler(
    optimizer: torch.optim.Optimizer, schedule: str, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """The per-step learning-rate schedule of ``optim.schedule`` (None: constant)."""
    if schedule == "constant" or total_steps < 1:
        return None
    if schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    max_lr = [group["lr"] for group in optimizer.param_groups]
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=max_lr, total_steps=total_steps, pct_start=0.3, cycle_momentum=False
    )


_PRIOR_ITEMS = 64
"""Training items read to estimate the landslide share for the classifier's bias."""


def _positive_share(
    train_set: Dataset, generator: torch.Generator, limit: int | None = _PRIOR_ITEMS
) -> tuple[float, list[bool] | None]:
    """Landslide share of valid pixels, from at most ``limit`` random items.

    Returns:
        ``(share, flags)``: ``flags`` says per item whether it holds a valid landslide
        pixel, when every item was read (``limit`` None or not smaller than the set).
    """
    n = len(train_set)  # type: ignore[arg-type]
    every = limit is None or n <= limit
    picks = range(n) if every else torch.randperm(n, generator=generator)[:limit].tolist()
    positive = total = 0
    flags = []
    for i in picks:
        _, y, valid = _unpack(train_set[i])
        hits = int(((y > 0) & valid.bool()).sum())
        positive += hits
        total += int(valid.sum())
        flags.append(hits > 0)
    return (positive / total if total else 0.0), (flags if every else None)


def _output_layer(net: nn.Module) -> nn.Conv2d | None:
    """The model's final two-class convolution, when it has the usual layout."""
    layer = getattr(net, "classifier", None)
    head = getattr(net, "head", None)
    if layer is None and isinstance(head, nn.Sequential) and len(head):
        layer = head[-1]
    if isinstance(layer, nn.Conv2d) and layer.out_channels == 2 and layer.bias is not None:
        return layer
    return None


@torch.no_grad()
def _init_prior(
    net: nn.Module, train_set: Dataset, head: HeadConfig, generator: torch.Generator
) -> None:
    """Start the classifier at the class prior instead of 50 % landslide everywhere.

    The usual initialisation for rare classes (Lin et al. 2017, "focal loss"): the bias
    of the landslide logit is set so that the untrained network predicts the probability
    that minimises the weighted cross-entropy for the training set's landslide share
    ``pi``, ``w pi / (w pi + 1 - pi)`` with ``w = head.pos_weight``. Otherwise the first
    epochs of a short run are spent unlearning the 0.5 start, and F1 at 0.5 stays at 0.
    """
    layer = _output_layer(net)
    if layer is None:
        return
    share, _ = _positive_share(train_set, generator)
    weighted = head.pos_weight * share
    prior = weighted / (weighted + 1.0 - share) if share > 0 else 0.0
    prior = min(max(prior, 1e-3), 0.5)
    layer.bias.zero_()
    layer.bias[1] = math.log(prior / (1.0 - prior))


def _balanced_sampler(
    train_set: Dataset, share: float, generator: torch.Generator
) -> WeightedRandomSampler | None:
    """Sampler that draws tiles holding a landslide with probability ``share`` (0: None).

    Reads every training item once to find the tiles that hold a landslide; falls back to
    plain shuffling when all or none do.
    """
    if share <= 0:
        return None
    _, flags = _positive_share(train_set, generator, limit=None)
    assert flags is not None
    n_pos = sum(flags)
    n_neg = len(flags) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    weights = [share / n_pos if f else (1.0 - share) / n_neg for f in flags]
    return WeightedRandomSampler(weights, len(flags), replacement=True, generator=generator)


def _augment(
    x: torch.Tensor, y: torch.Tensor, valid: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One random flip / quarter turn of the whole batch (turns only for square tiles)."""
    flip = int(torch.randint(0, 2, (1,), generator=generator).item())
    turns = int(torch.randint(0, 4, (1,), generator=generator).item())
    if x.shape[-1] != x.shape[-2]:
        turns = 2 * (turns % 2)  # a half turn keeps a rectangle's shape
    out = []
    for t in (x, y, valid):
        if flip:
            t = t.flip(-1)
        if turns:
            t = t.rot90(turns, dims=(-2, -1))
        out.append(t.contiguous())
    return out[0], out[1], out[2]
