"""One training run from a config: what every tuning trial and ``hpo train`` call."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sized
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from networks.config import HeadConfig, ModelConfig
from networks.errors import TrainingError
from networks.fusion import FusionNet
from networks.history import History
from networks.losses import FusionLoss
from networks.metrics import SegmentationMeter
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


def evaluate(
    model: nn.Module,
    data: Dataset | DataLoader,
    *,
    head: HeadConfig | None = None,
    batch_size: int = 8,
    device: str | torch.device | None = None,
) -> dict[str, Any]:
    """Loss and metrics of a model over a whole data set, without training.

    Args:
        model: A model of this package.
        data: A data set of ``(x, y, valid)`` or a loader of such batches.
        head: Weights of the eq. 8 loss (default: the defaults).
        batch_size: Batch size when ``data`` is a data set.
        device: Where to run (default: the model's device).

    Returns:
        ``{"loss", "miou", "f1", "auc"}`` (``auc`` is ``None`` for a single class).

    Raises:
        TrainingError: When ``data`` has no valid pixel.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
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
            meter.update(torch.softmax(logits.float(), dim=1)[:, 1], y, valid)
    model.train(was_training)
    if meter.n_pixels == 0:
        raise TrainingError("the evaluation set has no valid pixel", hint="check the valid masks")
    return {"loss": total / meter.n_pixels, **meter.compute()}


def _train_epoch(
    model: nn.Module,
    loader: DataLoader,
    loss_fn: FusionLoss,
    optimizer: torch.optim.Optimizer,
    precision: Precision,
    epoch: int,
) -> float:
    """One pass over the training set; returns the loss averaged over valid pixels."""
    device = precision.device
    model.train()
    total, count = 0.0, 0
    for batch in loader:
        x, y, valid = (t.to(device) for t in _unpack(batch))
        with precision.autocast():
            logits = model(x.float())
        loss = loss_fn(logits, y, valid)
        if not torch.isfinite(loss):
            raise TrainingError(
                f"the training loss became {loss.item()} in epoch {epoch}",
                hint="lower optim.lr, or check the inputs for NaN at valid pixels",
            )
        optimizer.zero_grad(set_to_none=True)
        precision.step(loss, optimizer)
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

    On CUDA the forward pass runs under autocast; on CPU, in float32. Model
    initialisation, dropout, shuffling and sampling all derive from ``seed`` (the global
    RNG state is restored afterwards), so two CPU runs with one seed give identical
    histories.

    Args:
        config: Hyperparameters (``None``: all defaults).
        train_set: Data set of ``(x (S, T, h, w) float32, y (h, w) in {0, 1}, valid (h, w)
            bool)``; all items share S and T.
        val_set: Data set of the same kind, for the per-epoch metrics.
        seed: Seed of everything random in the run.
        model: A name from :data:`networks.MODEL_NAMES`.
        device: Where to train (default: CUDA when available, else CPU).
        callbacks: Called after every epoch as ``callback(epochs_done, metrics)`` with
            metrics ``{"train_loss", "val_loss", "miou", "f1", "auc"}``; when any returns
            True, training stops after this epoch.
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
        return _fit(net, config, train_set, val_set, seed, callbacks, num_workers, device)


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
    loader = DataLoader(
        train_set, optim.batch_size, shuffle=True, generator=shuffle, num_workers=num_workers
    )
    val_loader = DataLoader(val_set, optim.batch_size, num_workers=num_workers)
    ordered = DataLoader(train_set, optim.batch_size, num_workers=num_workers)
    params = [p for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=optim.lr, weight_decay=optim.weight_decay)
    loss_fn = FusionLoss(config.head)
    precision = Precision(device)
    history = History(model=net)

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
        train_loss = _train_epoch(net, loader, loss_fn, optimizer, precision, epoch)
        val = evaluate(net, val_loader, head=config.head, device=device)
        metrics = {
            "train_loss": train_loss,
            "val_loss": val["loss"],
            "miou": val["miou"],
            "f1": val["f1"],
            "auc": val["auc"],
        }
        history.epochs.append({"epoch": epoch, **metrics})
        _log.info("epoch %d/%d %s", epoch, optim.epochs, metrics)
        # Every callback sees the epoch (e.g. to report it) even when an earlier one stops.
        stop = [bool(callback(epoch, dict(metrics))) for callback in callbacks]
        if any(stop):
            history.stopped_early = True
            break
    net.eval()
    return history
