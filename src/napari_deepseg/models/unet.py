"""U-Net (Ronneberger et al. 2015) on a VGG16-BN or ResNet encoder.

Every decoder stage up-samples x2, concatenates the encoder feature map of the same size and
refines with two 3x3 conv + BN + ReLU; the skips carry the detail that makes it good at small
structures such as nuclei.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import nn

from ._base import SegmentationNetwork
from ._blocks import ConvBNReLU, resize
from ._registry import register_architecture
from .encoders import Encoder

# Modest widths, deepest first, to keep CPU training fast.
DECODER_CHANNELS: tuple[int, ...] = (256, 128, 64, 32, 16)


# How the decoder doubles its resolution. Nearest neighbour (as segmentation-models-pytorch does)
# costs ~5 % less per training step than bilinear on a CPU; files written before the choice
# existed were trained bilinear and load so (model_file).
UPSAMPLING_MODES = ("nearest", "bilinear")
DEFAULT_UPSAMPLING = "nearest"


class DecoderBlock(nn.Module):
    def __init__(self, in_channels: int, skip_channels: int, out_channels: int, upsampling: str) -> None:
        super().__init__()
        self.upsampling = upsampling
        self.convs = nn.Sequential(
            ConvBNReLU(in_channels + skip_channels, out_channels),
            ConvBNReLU(out_channels, out_channels),
        )

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        if skip is None:
            x = resize(x, (2 * x.shape[-2], 2 * x.shape[-1]), self.upsampling)
        else:
            x = torch.cat([resize(x, skip.shape[-2:], self.upsampling), skip], dim=1)
        refined: torch.Tensor = self.convs(x)
        return refined


@register_architecture(
    "unet",
    display_name="U-Net",
    # Chosen by held-out accuracy at equal CPU time (docs/benchmarks.md, section 0, 2026-12-02).
    default_encoder="resnet18",
    encoders=("vgg16_bn", "resnet18", "resnet34", "resnet50"),
    hint="Fine structures such as nuclei; detailed, the default.",
)
class UNet(SegmentationNetwork):
    """U-Net; the input and output contract is :class:`SegmentationNetwork`'s."""

    legacy_options: ClassVar[dict[str, Any]] = {"upsampling": "bilinear"}

    def __init__(self, encoder: Encoder, num_classes: int, upsampling: str | None = None) -> None:
        super().__init__(encoder, num_classes)
        upsampling = upsampling or DEFAULT_UPSAMPLING  # read here: benchmarks A/B it
        if upsampling not in UPSAMPLING_MODES:
            raise ValueError(f"upsampling must be one of {UPSAMPLING_MODES}, got {upsampling!r}")
        self.upsampling = upsampling
        # The decoder starts at 1/32 whatever the encoder: VGG's last block is at 1/16, so its
        # output is pooled once more (as the reference implementations do) and becomes a skip.
        # Starting at 1/16 would run the 256-wide block at 1/8: ~30 % more FLOPs in total.
        self.center_pool = encoder.reductions[-1] < 32
        channels = tuple(encoder.out_channels)
        if self.center_pool:
            channels += (channels[-1],)
        # One block per skip (deepest feature excluded), then skip-less blocks up to full resolution.
        skips = list(channels[:-1])[::-1]
        skips += [0] * int(math.log2(encoder.reductions[0]))
        widths = DECODER_CHANNELS[: len(skips)]
        in_widths = (channels[-1], *widths[:-1])
        self.decoder = nn.ModuleList(
            DecoderBlock(cin, cskip, cout, upsampling)
            for cin, cskip, cout in zip(in_widths, skips, widths, strict=True)
        )
        self.head = nn.Conv2d(widths[-1], num_classes, kernel_size=1)

    @property
    def options(self) -> dict[str, Any]:
        return {"upsampling": self.upsampling}

    def decode(self, features: list[torch.Tensor]) -> torch.Tensor:
        features = list(features)
        if self.center_pool:
            features.append(nn.functional.max_pool2d(features[-1], 2))
        skips: list[torch.Tensor | None] = [*reversed(features[:-1])]
        y = features[-1]
        for i, block in enumerate(self.decoder):
            y = block(y, skips[i] if i < len(skips) else None)
        logits: torch.Tensor = self.head(y)
        return logits
