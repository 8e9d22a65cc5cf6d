"""The contract every architecture shares: pad to the size divisor, encode, decode, crop back.

Every network maps images (N, C, H, W) of any H and W to logits (N, K, H, W) at input size.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ._blocks import upsample_like
from .encoders import Encoder, build_encoder

# (top, left, height, width) of the original image inside the padded one.
CropBox = tuple[int, int, int, int]


class SegmentationNetwork(nn.Module):
    """Encoder + decoder + head: logits (N, K, H, W) at input size for images (N, C, H, W) of any size.

    :meth:`forward` pads the input to a multiple of :attr:`size_divisor` (and to at least
    twice that), runs the encoder, hands its feature maps to :meth:`decode` and brings the
    class scores back to the input size: bilinear up-sampling when the decoder stops at a
    coarser stride, then cropping the padding away. An architecture is a subclass that builds
    its decoder and head in ``__init__`` and implements :meth:`decode`; it never pads or crops.
    Each subclass names its own decoder modules, because those names are the state-dict keys
    of the model files already saved.

    Parameters
    ----------
    encoder
        Feature maps per stage, shallow to deep (:class:`~napari_deepseg.models.encoders.Encoder`).
    num_classes
        K, the number of output channels.
    """

    # The deepest feature map of every encoder is at 1/32 of the padded input (1/16 when dilated).
    size_divisor: ClassVar[int] = 32
    # Whether :meth:`build` asks for an encoder whose last stage is dilated (output stride 16).
    dilated_encoder: ClassVar[bool] = False
    # The :attr:`options` of a model file written before the architecture had any.
    legacy_options: ClassVar[dict[str, Any]] = {}

    def __init__(self, encoder: Encoder, num_classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.num_classes = num_classes

    @classmethod
    def build(
        cls,
        *,
        num_classes: int,
        in_channels: int,
        encoder: str,
        pretrained: bool = False,
        weights_path: str | Path | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> SegmentationNetwork:
        """The network on a new ``encoder``; see :func:`~napari_deepseg.models.build_model`.
        ``options`` are the architecture's own keyword arguments (:attr:`options`)."""
        backbone = build_encoder(
            encoder,
            in_channels=in_channels,
            pretrained=pretrained,
            weights_path=weights_path,
            dilate_last_stage=cls.dilated_encoder,
        )
        return cls(backbone, num_classes, **(options or {}))

    @property
    def options(self) -> dict[str, Any]:
        """The architecture's own constructor arguments (JSON values): model files record them,
        so a network is rebuilt exactly as it was trained."""
        return {}

    def decode(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Class scores (N, K, h, w) from the encoder's feature maps, at the padded size or a
        fraction of it (then up-sampled bilinearly by :meth:`forward`)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # At least 2 divisors per side so the 1/32 BatchNorms see > 1 value even for one tiny patch.
        padded, box = pad_to_multiple(x, self.size_divisor, min_size=2 * self.size_divisor)
        logits = self.decode(self.encoder(padded))
        if logits.shape[-2:] != padded.shape[-2:]:
            logits = upsample_like(logits, padded)
        return crop(logits, box)


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
    return x[..., top : top + height, left : left + width]
