"""Building blocks shared by the fusion network and the baselines."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv_block(
    in_channels: int,
    out_channels: int,
    kernel_size: int = 3,
    *,
    stride: int = 1,
    dilation: int = 1,
    norm: bool = True,
    dims: int = 2,
) -> nn.Sequential:
    """Convolution, batch norm and ReLU, padded so that stride 1 keeps the map size.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        kernel_size: Odd kernel size (the same along every axis).
        stride: Stride along every axis.
        dilation: Dilation along every axis.
        norm: Add batch norm. Off for maps pooled to a few pixels, where batch statistics
            over a batch of one are undefined.
        dims: 2 for ``Conv2d`` on (H, W), 3 for ``Conv3d`` on (T, H, W).

    Returns:
        The block.
    """
    conv_type, norm_type = (nn.Conv2d, nn.BatchNorm2d) if dims == 2 else (nn.Conv3d, nn.BatchNorm3d)
    padding = dilation * (kernel_size - 1) // 2
    layers: list[nn.Module] = [
        conv_type(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            bias=not norm,  # batch norm's shift makes a conv bias redundant
        )
    ]
    if norm:
        layers.append(norm_type(out_channels))
    layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def fold_time(x: torch.Tensor) -> torch.Tensor:
    """Fold dates into channels: ``(B, S, T, H, W)`` -> ``(B, S*T, H, W)``.

    Args:
        x: The input cube batch.

    Returns:
        A view with sources and dates merged into channels (source-major).
    """
    return x.flatten(1, 2)


def resize_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinearly resize a ``(B, C, h, w)`` map to exactly ``size`` (no-op when equal).

    Args:
        x: The feature map.
        size: Target ``(H, W)``.

    Returns:
        The map at ``size``.
    """
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def pad_to_multiple(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Replicate-pad the last two axes on the bottom/right up to a multiple of ``factor``.

    Args:
        x: A tensor whose last two axes are (H, W).
        factor: The multiple.

    Returns:
        The padded tensor (``x`` itself when nothing needs padding).
    """
    h, w = x.shape[-2:]
    pad_h, pad_w = -h % factor, -w % factor
    if pad_h == 0 and pad_w == 0:
        return x
    # Replicate, not zeros: zero borders would look like a real edge to the next conv.
    flat = x.reshape(-1, *x.shape[-3:]) if x.dim() > 4 else x
    padded = F.pad(flat, (0, pad_w, 0, pad_h), mode="replicate")
    return padded.reshape(*x.shape[:-2], h + pad_h, w + pad_w)


def check_input(x: torch.Tensor, n_sources: int, n_times: int) -> None:
    """Check that ``x`` is a ``(B, S, T, H, W)`` batch with the model's S and T.

    Args:
        x: The input batch.
        n_sources: Sources the model was built for.
        n_times: Dates the model was built for.

    Raises:
        ValueError: When the shape does not match.
    """
    if x.dim() != 5 or x.shape[1] != n_sources or x.shape[2] != n_times:
        raise ValueError(
            f"expected input (B, {n_sources}, {n_times}, H, W), got {tuple(x.shape)}; "
            "the model was built for these sources and dates"
        )


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions with an identity (or 1x1 projection) shortcut, ResNet style.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        stride: Stride of the first convolution (and of the projection).
        dilation: Dilation of both convolutions, to grow the receptive field without
            shrinking the map.
    """

    def __init__(
        self, in_channels: int, out_channels: int, *, stride: int = 1, dilation: int = 1
    ) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv_block(in_channels, out_channels, 3, stride=stride, dilation=dilation),
            nn.Conv2d(
                out_channels, out_channels, 3, padding=dilation, dilation=dilation, bias=False
            ),
            nn.BatchNorm2d(out_channels),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block.

        Args:
            x: ``(B, in_channels, H, W)``.

        Returns:
            ``(B, out_channels, ceil(H / stride), ceil(W / stride))``.
        """
        return F.relu(self.body(x) + self.shortcut(x))
