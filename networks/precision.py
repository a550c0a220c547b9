"""Mixed precision on CUDA, plain float32 elsewhere, behind one small interface."""

from __future__ import annotations

import contextlib

import torch


class Precision:
    """Autocast and gradient scaling for a device.

    On CUDA, autocast runs in bfloat16 where the GPU supports it (no loss scaling needed)
    and in float16 with a ``GradScaler`` otherwise; on other devices both are no-ops.

    Args:
        device: The device the model runs on.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.enabled = device.type == "cuda"
        bf16 = self.enabled and torch.cuda.is_bf16_supported()
        self.dtype = torch.bfloat16 if bf16 else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.enabled and not bf16)

    def autocast(self) -> contextlib.AbstractContextManager:
        """The autocast context for forward passes."""
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.enabled)

    def step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        """Back-propagate ``loss`` and step ``optimizer`` (scaling the loss when needed).

        Args:
            loss: The scalar loss.
            optimizer: The optimizer, its gradients already zeroed.
        """
        self.scaler.scale(loss).backward()
        self.scaler.step(optimizer)
        self.scaler.update()


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The device to train on: the given one, else CUDA when available, else CPU.

    Args:
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, a ``torch.device`` or ``None``.

    Returns:
        The device.
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
