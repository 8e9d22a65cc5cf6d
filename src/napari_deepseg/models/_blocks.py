"""Small building blocks shared by the architectures, and the padding that lets them take any image size."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# (top, left, height, width) of the original image inside the padded one.
CropBox = tuple[int, int, int, int]


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
    return F.interpolate(x, size=reference.shape[-2:], mode="bilinear", align_corners=False)


def pad_to_multiple(x: torch.Tensor, multiple: int, min_size: int = 0) -> tuple[torch.Tensor, CropBox]:
    """Pad an (N, C, H, W) batch so that H and W are multiples of ``multiple`` and at least ``min_size``.

    The padding is split evenly between both sides so the image keeps symmetric context. Reflect
    padding is used where it fits (each side's pad smaller than the dimension); tiny images fall
    back to replicate padding.

    Parameters
    ----------
    x
        Batch of images.
    multiple
        The network's size divisor.
    min_size
        Smallest padded height and width.

    Returns
    -------
    padded, box
        The padded batch and the (top, left, height, width) box to crop the output back with.
    """
    height, width = x.shape[-2:]
    target_h = max(-(-height // multiple) * multiple, min_size)
    target_w = max(-(-width // multiple) * multiple, min_size)
    top, left = (target_h - height) // 2, (target_w - width) // 2
    bottom, right = target_h - height - top, target_w - width - left
    box = (top, left, height, width)
    if not (top or bottom or left or right):
        return x, box
    fits_reflect = max(top, bottom) < height and max(left, right) < width
    padded = F.pad(x, (left, right, top, bottom), mode="reflect" if fits_reflect else "replicate")
    return padded, box


def crop(x: torch.Tensor, box: CropBox) -> torch.Tensor:
    """Cut the region ``box`` (as returned by :func:`pad_to_multiple`) out of an (N, C, H, W) batch."""
    top, left, height, width = box
    if x.shape[-2:] == (height, width):
        return x
    return x[..., top:top + height, left:left + width]
