"""Small building blocks shared by the architectures."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class ConvBNReLU(nn.Sequential):
    """Convolution without bias (the BatchNorm supplies it), BatchNorm, ReLU; keeps the spatial size."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, dilation: int = 1) -> None:
        padding = dilation * (kernel_size - 1) // 2
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, dilation=dilation, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


def upsample_like(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Bilinear resize of ``x`` to the spatial size of ``reference``."""
    return resize(x, reference.shape[-2:], "bilinear")


def resize(x: torch.Tensor, size: Sequence[int], mode: str) -> torch.Tensor:
    """``x`` resized to ``size`` (H, W), ``"nearest"`` or ``"bilinear"`` (half-pixel centres)."""
    if mode == "nearest":
        return F.interpolate(x, size=tuple(size), mode="nearest")
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)
