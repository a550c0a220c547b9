"""The empirical receptive field of a model: which input pixels reach one output pixel."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ReceptiveField:
    """Where the gradient of one output pixel lands in the input.

    Attributes:
        height: Rows of the bounding box of input pixels with a non-zero gradient.
        width: Columns of that bounding box.
        pixels: Input pixels with a non-zero gradient (any source, any date).
        size: The input side it was measured on; a field equal to it is cut by the input.
    """

    height: int
    width: int
    pixels: int
    size: int

    @property
    def side(self) -> int:
        """The larger side of the bounding box, in pixels (the figure reports quote)."""
        return max(self.height, self.width)


def receptive_field(
    model: nn.Module, n_sources: int, n_times: int, *, size: int = 192, seed: int = 0
) -> ReceptiveField:
    """Measure the empirical receptive field of the centre output pixel.

    The landslide logit of the centre pixel of a random ``size x size`` input is
    back-propagated to the input; the input pixels whose gradient is non-zero (over any
    source and date) are the ones it sees. The model runs in eval mode, since batch norm
    in training mode couples every pixel through the batch statistics. The model's mode
    is restored afterwards.

    Args:
        model: A model mapping ``(B, S, T, H, W)`` to ``(B, 2, H, W)`` logits.
        n_sources: Input sources ``S``.
        n_times: Input dates ``T``.
        size: Side of the square input.
        seed: Seed of the random input.

    Returns:
        The bounding box and pixel count of the non-zero gradient.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, n_sources, n_times, size, size, generator=g).to(device)
    x.requires_grad_(True)
    try:
        logits = model(x)
        centre = size // 2
        # The difference of the two logits is what the landslide probability depends on.
        (logits[0, 1, centre, centre] - logits[0, 0, centre, centre]).backward()
    finally:
        model.train(was_training)
    assert x.grad is not None
    reached = x.grad.abs().sum(dim=(0, 1, 2)) > 0
    rows = torch.nonzero(reached.any(dim=1)).flatten()
    cols = torch.nonzero(reached.any(dim=0)).flatten()
    if rows.numel() == 0:
        return ReceptiveField(0, 0, 0, size)
    return ReceptiveField(
        height=int(rows[-1] - rows[0]) + 1,
        width=int(cols[-1] - cols[0]) + 1,
        pixels=int(reached.sum()),
        size=size,
    )
