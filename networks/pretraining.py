"""DBN pretraining inside a training run: sample pixel features, then greedy CD-k."""

from __future__ import annotations

import math

import torch
from torch.utils.data import DataLoader

from networks.config import DBNConfig
from networks.errors import TrainingError
from networks.fusion import FusionNet
from networks.precision import Precision


@torch.no_grad()
def sample_pixel_features(
    model: FusionNet,
    loader: DataLoader,
    max_pixels: int,
    *,
    generator: torch.Generator,
    precision: Precision,
) -> torch.Tensor:
    """Feature vectors of at most ``max_pixels`` valid pixels, drawn across the data set.

    Each batch contributes a random share of its valid pixels (so memory stays bounded
    by about ``max_pixels`` vectors), then the pool is cut to ``max_pixels`` at random.
    Features are computed in eval mode, as the DBN will see them at inference.

    Args:
        model: The fusion network whose :meth:`FusionNet.features` feed the DBN.
        loader: Batches of ``(x, y, valid)``.
        max_pixels: Upper bound on the vectors returned.
        generator: CPU random source of the sampling.
        precision: Autocast settings of the run.

    Returns:
        ``(N, F)`` float32 vectors on the model's device, ``N <= max_pixels``.
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    quota = math.ceil(max_pixels / max(1, len(loader)))
    chunks = []
    for x, _, valid in loader:
        with precision.autocast():
            features = model.features(x.to(device, torch.float32))
        vectors = features.float().permute(0, 2, 3, 1)[valid.to(device).bool()]
        chunks.append(_subsample(vectors, quota, generator))
    model.train(was_training)
    pixels = torch.cat(chunks) if chunks else torch.empty(0, device=device)
    return _subsample(pixels, max_pixels, generator)


def _subsample(rows: torch.Tensor, limit: int, generator: torch.Generator) -> torch.Tensor:
    if rows.shape[0] <= limit:
        return rows
    keep = torch.randperm(rows.shape[0], generator=generator)[:limit]
    return rows[keep.to(rows.device)]


def pretrain_dbn(
    model: FusionNet,
    loader: DataLoader,
    config: DBNConfig,
    *,
    seed: int,
    precision: Precision,
) -> list[list[float]]:
    """Greedy layer-wise CD-k pretraining of ``model.dbn`` on sampled pixel features.

    Args:
        model: A fusion network with a DBN branch.
        loader: Training batches of ``(x, y, valid)`` (order does not matter).
        config: Pretraining hyperparameters.
        seed: Seed of the pixel sampling and the Gibbs chains.
        precision: Autocast settings of the run.

    Returns:
        Per RBM, the reconstruction error after every CD epoch (empty when the
        training set has no valid pixel).

    Raises:
        TrainingError: When the sampled features are not finite.
    """
    if model.dbn is None:
        raise ValueError("the model has no DBN branch to pretrain")
    sampler = torch.Generator().manual_seed(seed)
    pixels = sample_pixel_features(
        model, loader, config.max_pixels, generator=sampler, precision=precision
    )
    if pixels.shape[0] == 0:
        return []
    if not torch.isfinite(pixels).all():
        raise TrainingError(
            "DBN pretraining got NaN or infinite features at valid pixels",
            hint="check the inputs for NaN at valid pixels, or lower optim.lr",
        )
    chain = torch.Generator(device=pixels.device).manual_seed(seed + 1)
    return model.dbn.pretrain(
        pixels,
        epochs=config.pretrain_epochs,
        lr=config.pretrain_lr,
        k=config.cd_k,
        batch_size=config.pretrain_batch_size,
        generator=chain,
    )
