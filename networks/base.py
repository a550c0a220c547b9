"""The common base of every model: it knows the sources and dates it was built for."""

from __future__ import annotations

import torch
from torch import nn

from networks.blocks import check_input


class CubeModel(nn.Module):
    """A segmentation model on ``(B, S, T, H, W)`` cubes that returns ``(B, 2, H, W)`` logits.

    Args:
        n_sources: Sources ``S`` the model takes.
        n_times: Dates ``T`` the model takes.
    """

    def __init__(self, n_sources: int, n_times: int) -> None:
        super().__init__()
        self.n_sources = n_sources
        self.n_times = n_times

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits over {background, landslide} for every pixel.

        Args:
            x: ``(B, S, T, H, W)`` float input.

        Returns:
            ``(B, 2, H, W)`` logits.

        Raises:
            ValueError: When ``x`` does not have the model's S and T.
        """
        check_input(x, self.n_sources, self.n_times)
        return self.segment(x)

    def segment(self, x: torch.Tensor) -> torch.Tensor:
        """The model proper, on an already checked input (implemented by subclasses).

        Args:
            x: ``(B, S, T, H, W)`` float input.

        Returns:
            ``(B, 2, H, W)`` logits.
        """
        raise NotImplementedError
