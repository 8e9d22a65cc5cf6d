"""Encoders: torchvision VGG16 / VGG16-BN / ResNet backbones returning a feature map per stage.

ImageNet weights come from :mod:`._pretrained` (files on disk only); an encoder whose weights
are missing starts from scratch.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision.models import resnet18, resnet34, resnet50, resnet101
from torchvision.models.resnet import BasicBlock, ResNet
from torchvision.models.vgg import cfgs, make_layers

from ._pretrained import IMAGENET_WEIGHTS, check_encoder, pretrained_state_dict

ENCODERS: tuple[str, ...] = tuple(IMAGENET_WEIGHTS)  # every encoder has ImageNet weights

_RESNETS = {"resnet18": resnet18, "resnet34": resnet34, "resnet50": resnet50, "resnet101": resnet101}
_BASIC_BLOCK_RESNETS = ("resnet18", "resnet34")


class Encoder(nn.Module):
    """Runs ``stages`` in sequence and returns every stage's output, shallow to deep.

    Attributes
    ----------
    out_channels
        Channels of each returned feature map.
    reductions
        Down-sampling factor of each returned feature map relative to the input.
    """

    def __init__(
        self, stages: list[nn.Module], out_channels: tuple[int, ...], reductions: tuple[int, ...]
    ) -> None:
        super().__init__()
        self.stages = nn.ModuleList(stages)
        self.out_channels = out_channels
        self.reductions = reductions

    @property
    def first_conv(self) -> nn.Conv2d:
        return next(m for m in self.modules() if isinstance(m, nn.Conv2d))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


class VGGEncoder(Encoder):
    """VGG16 conv blocks; outputs before each max-pool: 64@1/1, 128@1/2, 256@1/4, 512@1/8, 512@1/16."""

    def __init__(self, features: nn.Sequential) -> None:
        stages: list[nn.Module] = []
        current: list[nn.Module] = []
        for layer in features:
            if isinstance(layer, nn.MaxPool2d) and current:
                stages.append(nn.Sequential(*current))
                current = []
            current.append(layer)
        # `current` now holds only pool5, which is dropped: FCN-8s pools by itself and U-Net stops at 1/16.
        super().__init__(stages, (64, 128, 256, 512, 512), (1, 2, 4, 8, 16))


class ResNetEncoder(Encoder):
    """ResNet stem (1/2), layer1 (1/4), layer2 (1/8), layer3 (1/16), layer4 (1/32, or 1/16 dilated)."""

    def __init__(self, resnet: ResNet, dilated_last_stage: bool) -> None:
        expansion = resnet.layer1[0].expansion
        stages = [
            nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu),
            nn.Sequential(resnet.maxpool, resnet.layer1),
            resnet.layer2,
            resnet.layer3,
            resnet.layer4,
        ]
        widths = (64, 64 * expansion, 128 * expansion, 256 * expansion, 512 * expansion)
        super().__init__(stages, widths, (2, 4, 8, 16, 16 if dilated_last_stage else 32))


def build_encoder(
    name: str,
    *,
    in_channels: int,
    pretrained: bool = False,
    weights_path: str | Path | None = None,
    dilate_last_stage: bool = False,
) -> Encoder:
    """Build an encoder, optionally with ImageNet weights, for images with ``in_channels`` channels.

    Parameters
    ----------
    name
        One of :data:`ENCODERS`.
    in_channels
        Image channels; the RGB first convolution is adapted (see :func:`adapt_rgb_weight`).
    pretrained
        Load ImageNet weights from ``weights_path`` or else the torch hub cache. When neither
        exists, warn once per encoder and start from scratch. ``weights_path`` is ignored otherwise.
    weights_path
        A torchvision state dict file for this encoder's full torchvision model.
    dilate_last_stage
        ResNet only: output stride 16, with the last stage at stride 1 and dilation 2 (DeepLab).

    Raises
    ------
    ValueError
        For an unknown encoder, or a weights file that is corrupt or belongs to another model.
    FileNotFoundError
        When ``weights_path`` is given but does not exist.
    """
    check_encoder(name)
    loaded = pretrained_state_dict(name, weights_path) if pretrained else None
    if name.startswith("vgg"):
        if dilate_last_stage:
            raise ValueError("dilate_last_stage is only supported for ResNet encoders")
        # Only the convolutional part is built: the full VGG's 120M-parameter classifier would cost
        # about 0.5 GB and a second of initialisation per model, only to be thrown away.
        features = make_layers(cfgs["D"], batch_norm=name == "vgg16_bn")
        if loaded is None:
            _init_like_torchvision_vgg(features)
        else:
            state, path = loaded
            prefix = "features."
            _load(features, {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}, path)
        features[0] = adapt_first_conv(features[0], in_channels, pretrained=loaded is not None)
        return VGGEncoder(features)

    # BasicBlock (resnet18/34) refuses dilation in torchvision, so those are dilated by hand below.
    bottleneck_dilation = dilate_last_stage and name not in _BASIC_BLOCK_RESNETS
    resnet = _RESNETS[name](weights=None, replace_stride_with_dilation=[False, False, bottleneck_dilation])
    if loaded is not None:
        _load(resnet, *loaded)
    if dilate_last_stage and name in _BASIC_BLOCK_RESNETS:
        _dilate_basic_layer(resnet.layer4, dilation=2)
    resnet.conv1 = adapt_first_conv(resnet.conv1, in_channels, pretrained=loaded is not None)
    return ResNetEncoder(resnet, dilated_last_stage=dilate_last_stage)


def adapt_rgb_weight(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Turn an RGB convolution weight (O, 3, kH, kW) into one for ``in_channels`` inputs.

    One channel gets the sum over RGB, so a grey image that was replicated to RGB gives the same
    response. Other counts repeat the RGB weights cyclically, scaled by 3 / C to keep the output
    scale (the timm convention).
    """
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    index = torch.arange(in_channels) % weight.shape[1]
    return weight[:, index] * (weight.shape[1] / in_channels)


def adapt_first_conv(conv: nn.Conv2d, in_channels: int, *, pretrained: bool) -> nn.Conv2d:
    """Return ``conv`` for ``in_channels`` inputs: adapted weights if pretrained, else freshly initialised."""
    if conv.in_channels == in_channels:
        return conv
    new = nn.Conv2d(
        in_channels,
        conv.out_channels,
        conv.kernel_size,  # type: ignore[arg-type]  # torch types these as tuple[int, ...]
        stride=conv.stride,  # type: ignore[arg-type]
        padding=conv.padding,  # type: ignore[arg-type]
        dilation=conv.dilation,  # type: ignore[arg-type]
        bias=conv.bias is not None,
    )
    with torch.no_grad():
        if pretrained:
            new.weight.copy_(adapt_rgb_weight(conv.weight, in_channels))
        else:
            # Same initialisation torchvision gives its VGG and ResNet convolutions.
            nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
        if new.bias is not None:
            new.bias.copy_(conv.bias if pretrained else torch.zeros_like(new.bias))  # type: ignore[arg-type]
    return new


def _load(module: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    try:
        module.load_state_dict(state)
    except RuntimeError as error:
        raise ValueError(f"weights file {path} does not match the encoder: {error}") from error


def _init_like_torchvision_vgg(features: nn.Sequential) -> None:
    for m in features.modules():
        if isinstance(m, nn.Conv2d) and m.bias is not None:  # VGG's convolutions all have one
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _dilate_basic_layer(layer: nn.Sequential, dilation: int) -> None:
    # Stride 1 everywhere keeps the stage at the previous resolution; dilation keeps its receptive field.
    for block in layer:
        assert isinstance(block, BasicBlock)
        for conv in (block.conv1, block.conv2):
            conv.stride = (1, 1)
            conv.dilation = (dilation, dilation)
            conv.padding = (dilation, dilation)
        if block.downsample is not None:
            downsample = block.downsample[0]
            assert isinstance(downsample, nn.Conv2d)
            downsample.stride = (1, 1)
