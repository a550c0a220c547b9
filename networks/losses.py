"""Eq. 8 of the paper: mean-squared error plus cross-entropy, on valid pixels only."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from networks.config import HeadConfig


def fusion_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor | None = None,
    *,
    mse_weight: float = 1.0,
    pos_weight: float = 1.0,
    dice_weight: float = 0.0,
    focal_gamma: float = 0.0,
) -> torch.Tensor:
    """The paper's eq. 8 with a loss weight and a positive-class weight.

    With ``p_i`` the softmax probability of "landslide" at pixel ``i``, ``y_i`` in
    {0, 1} its label, ``w_i = pos_weight`` where ``y_i = 1`` and ``1`` elsewhere, and
    ``V`` the set of valid pixels::

        L = 1/|V| * sum_{i in V} [ mse_weight * (p_i - y_i)^2
                                   - w_i * (y_i log p_i + (1 - y_i) log(1 - p_i)) ]

    With ``focal_gamma > 0`` the cross-entropy becomes the focal loss (Lin et al. 2017):
    each pixel's term is scaled by ``(1 - p_t)^focal_gamma``, ``p_t`` the probability of
    its true class (``p_i`` or ``1 - p_i``), so that confidently right background pixels
    stop dominating the sum.

    With ``dice_weight > 0`` a soft Dice term on the landslide class over the batch's
    valid pixels is added beside eq. 8::

        L += dice_weight * (1 - (2 * sum p_i y_i + 1) / (sum p_i + sum y_i + 1))

    The logarithms come from ``log_softmax`` of the logits (stable for confident
    predictions). Invalid pixels contribute nothing, not even NaN; with no valid pixel
    the loss is a differentiable zero.

    Args:
        logits: ``(B, 2, H, W)`` logits over {background, landslide}.
        target: ``(B, H, W)`` labels in {0, 1}.
        valid: ``(B, H, W)`` bool mask; ``None`` means every pixel is valid.
        mse_weight: Weight of the squared-error term.
        pos_weight: Weight of the cross-entropy on landslide pixels.
        dice_weight: Weight of the soft Dice term (0: eq. 8 alone).
        focal_gamma: Focusing exponent of the cross-entropy (0: plain cross-entropy).

    Returns:
        The scalar loss (float32).
    """
    log_p = F.log_softmax(logits.float(), dim=1)
    positive = target > 0.5
    y = positive.to(log_p.dtype)
    prob = log_p[:, 1].exp()
    cross_entropy = -torch.where(positive, log_p[:, 1], log_p[:, 0])
    if focal_gamma > 0:
        # 1 - p_t is the other class's probability; exp(gamma * log q) keeps the gradient
        # finite where q underflows to 0, which (1 - p_t) ** gamma does not for gamma < 1.
        log_other = torch.where(positive, log_p[:, 0], log_p[:, 1])
        cross_entropy = torch.exp(focal_gamma * log_other) * cross_entropy
    weight = torch.where(positive, torch.full_like(y, pos_weight), torch.ones_like(y))
    per_pixel = mse_weight * (prob - y) ** 2 + weight * cross_entropy
    if valid is None:
        valid = torch.ones_like(positive)
    valid = valid.bool()
    # where(), not a product: 0 * NaN from a nodata pixel would still be NaN.
    total = torch.where(valid, per_pixel, torch.zeros_like(per_pixel)).sum()
    loss = total / valid.sum().clamp_min(1)
    if dice_weight > 0:
        p_valid = torch.where(valid, prob, torch.zeros_like(prob))
        y_valid = torch.where(valid, y, torch.zeros_like(y))
        overlap = (p_valid * y_valid).sum()
        dice = (2 * overlap + 1) / (p_valid.sum() + y_valid.sum() + 1)
        loss = loss + dice_weight * (1 - dice)
    return loss


class FusionLoss(nn.Module):
    """:func:`fusion_loss` with its weights taken from a :class:`HeadConfig`.

    Args:
        config: Supplies ``mse_weight``, ``pos_weight``, ``dice_weight`` and
            ``focal_gamma``.
    """

    def __init__(self, config: HeadConfig) -> None:
        super().__init__()
        self.mse_weight = config.mse_weight
        self.pos_weight = config.pos_weight
        self.dice_weight = config.dice_weight
        self.focal_gamma = config.focal_gamma

    def forward(
        self, logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Compute the loss.

        Args:
            logits: ``(B, 2, H, W)``.
            target: ``(B, H, W)`` labels in {0, 1}.
            valid: ``(B, H, W)`` bool mask or ``None``.

        Returns:
            The scalar loss.
        """
        return fusion_loss(
            logits,
            target,
            valid,
            mse_weight=self.mse_weight,
            pos_weight=self.pos_weight,
            dice_weight=self.dice_weight,
            focal_gamma=self.focal_gamma,
        )
