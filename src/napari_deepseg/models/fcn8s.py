"""FCN-8s (Long, Shelhamer & Darrell 2015) on a VGG16 or ResNet encoder.

Class scores from the 1/32, 1/16 and 1/8 feature maps are fused by addition after learned x2
up-sampling, then up-sampled x8 to the input size. Simple and fast, with coarser boundaries.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._base import SegmentationNetwork
from ._registry import register_architecture
from .encoders import Encoder, VGGEncoder


def bilinear_kernel(channels: int, kernel_size: int) -> torch.Tensor:
    """ConvTranspose2d weight (C, C, k, k) that up-samples each channel bilinearly by k // 2 (even k)."""
    factor = (kernel_size + 1) // 2
    center = factor - 1 if kernel_size % 2 == 1 else factor - 0.5
    steps = 1 - (torch.arange(kernel_size, dtype=torch.float32) - center).abs() / factor
    weight = torch.zeros(channels, channels, kernel_size, kernel_size)
    weight[range(channels), range(channels)] = steps[:, None] * steps[None, :]
    return weight


class BilinearUpsample(nn.ConvTranspose2d):
    """Learned up-sampling by ``scale`` (exactly ``scale`` times the size), initialised to bilinear."""

    def __init__(self, channels: int, scale: int) -> None:
        super().__init__(
            channels, channels, kernel_size=2 * scale, stride=scale, padding=scale // 2, bias=False
        )
        with torch.no_grad():
            self.weight.copy_(bilinear_kernel(channels, 2 * scale))


class VGGTop(nn.Sequential):
    # A light stand-in for the 4096-wide fc6/fc7 layers of the original, run on pool5.
    def __init__(self, channels: int) -> None:
        super().__init__(
            nn.MaxPool2d(2),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Dropout2d(0.5),
        )


# VGG16 has no BatchNorm: from scratch, Adam at 1e-3 kills its ReLUs and it predicts one class.
@register_architecture(
    "fcn8s",
    display_name="FCN-8s",
    default_encoder="vgg16",
    default_learning_rate=3e-4,
    encoders=("vgg16", "resnet50", "resnet101"),
    hint="Simplest and fastest; coarser boundaries.",
)
class FCN8s(SegmentationNetwork):
    """FCN-8s; the input and output contract is :class:`SegmentationNetwork`'s."""

    def __init__(self, encoder: Encoder, num_classes: int) -> None:
        super().__init__(encoder, num_classes)
        # VGG gives its maps before pooling (1/4, 1/8, 1/16), so pool3/pool4 are pooled here and the
        # 1/32 map comes from pool5 + top; ResNet's layer2-4 already are at 1/8, 1/16, 1/32.
        self.pool_features = isinstance(encoder, VGGEncoder)
        c8, c16, c32 = encoder.out_channels[-3:]
        self.top: nn.Module = VGGTop(c32) if self.pool_features else nn.Identity()
        self.score32 = nn.Conv2d(c32, num_classes, 1)
        self.score16 = nn.Conv2d(c16, num_classes, 1)
        self.score8 = nn.Conv2d(c8, num_classes, 1)
        self.up32 = BilinearUpsample(num_classes, 2)
        self.up16 = BilinearUpsample(num_classes, 2)
        self.up8 = BilinearUpsample(num_classes, 8)

    def decode(self, features: list[torch.Tensor]) -> torch.Tensor:
        f8, f16, f32 = features[-3:]
        if self.pool_features:
            f8, f16 = F.max_pool2d(f8, 2), F.max_pool2d(f16, 2)
        y = self.up32(self.score32(self.top(f32))) + self.score16(f16)
        y = self.up16(y) + self.score8(f8)
        logits: torch.Tensor = self.up8(y)
        return logits
