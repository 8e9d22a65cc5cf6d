"""DeepLabv3+ (Chen et al. 2018) on a dilated ResNet (output stride 16).

Atrous spatial pyramid pooling with an image-level branch gathers context at several scales;
a light decoder fuses it with 1/4 features, so only two up-sampling steps are needed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._base import SegmentationNetwork
from ._blocks import ConvBNReLU, upsample_like
from ._registry import register_architecture
from .encoders import Encoder

ASPP_RATES: tuple[int, int, int] = (6, 12, 18)
ASPP_CHANNELS = 256
LOW_LEVEL_CHANNELS = 48


class SeparableConvBNReLU(nn.Sequential):
    """Depthwise 3x3 (optionally atrous) then pointwise 1x1, BatchNorm, ReLU: the paper's choice
    for ASPP and decoder, ~8x cheaper than a full 3x3 convolution at 256 channels."""

    def __init__(self, in_channels: int, out_channels: int, dilation: int = 1) -> None:
        super().__init__(
            nn.Conv2d(
                in_channels,
                in_channels,
                3,
                padding=dilation,
                dilation=dilation,
                groups=in_channels,
                bias=False,
            ),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class ASPPPooling(nn.Sequential):
    # No BatchNorm here, unlike torchvision: on a 1x1 pooled map it fails in training with batch 1.
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(in_channels, out_channels, 1),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(super().forward(x), size=x.shape[-2:], mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    def __init__(
        self, in_channels: int, rates: tuple[int, ...] = ASPP_RATES, out_channels: int = ASPP_CHANNELS
    ) -> None:
        super().__init__()
        branches: list[nn.Module] = [ConvBNReLU(in_channels, out_channels, kernel_size=1)]
        branches += [SeparableConvBNReLU(in_channels, out_channels, rate) for rate in rates]
        branches.append(ASPPPooling(in_channels, out_channels))
        self.convs = nn.ModuleList(branches)
        self.project = nn.Sequential(
            ConvBNReLU(len(branches) * out_channels, out_channels, kernel_size=1),
            nn.Dropout(0.5),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        projected: torch.Tensor = self.project(torch.cat([branch(x) for branch in self.convs], dim=1))
        return projected


@register_architecture(
    "deeplabv3plus",
    display_name="DeepLabv3+",
    default_encoder="resnet50",
    encoders=("resnet50", "resnet34", "resnet101"),
    hint="Large, size-varying regions; more context, smoother boundaries, faster.",
)
class DeepLabV3Plus(SegmentationNetwork):
    """DeepLabv3+; the input and output contract is :class:`SegmentationNetwork`'s.

    The classifier runs at 1/4 of the input; the base class up-samples its scores.
    """

    dilated_encoder = True  # output stride 16: ASPP sees 1/16 features

    def __init__(self, encoder: Encoder, num_classes: int) -> None:
        super().__init__(encoder, num_classes)
        self.aspp = ASPP(encoder.out_channels[-1])
        # layer1 (1/4) provides the low-level detail.
        self.low_level_index = encoder.reductions.index(4)
        self.low_level_project = ConvBNReLU(
            encoder.out_channels[self.low_level_index], LOW_LEVEL_CHANNELS, kernel_size=1
        )
        self.decoder = nn.Sequential(
            SeparableConvBNReLU(ASPP_CHANNELS + LOW_LEVEL_CHANNELS, ASPP_CHANNELS),
            SeparableConvBNReLU(ASPP_CHANNELS, ASPP_CHANNELS),
        )
        self.classifier = nn.Conv2d(ASPP_CHANNELS, num_classes, kernel_size=1)

    def decode(self, features: list[torch.Tensor]) -> torch.Tensor:
        low_level = self.low_level_project(features[self.low_level_index])
        context = upsample_like(self.aspp(features[-1]), low_level)
        logits: torch.Tensor = self.classifier(self.decoder(torch.cat([context, low_level], dim=1)))
        return logits
