"""Contract tests run for every registered architecture and each of its encoders.

A new architecture is covered by registering it. Inputs are tiny and models start from scratch
(``pretrained=False``), so nothing is read from or written to the torch hub cache.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from napari_deepseg.models import architecture_spec, available_architectures, build_model

CASES = [pytest.param(a, e, id=f"{a}-{e}")
         for a in available_architectures() for e in architecture_spec(a).encoders]
DEFAULTS = [pytest.param(a, architecture_spec(a).default_encoder, id=a) for a in available_architectures()]
NUM_CLASSES = 3


def _build(architecture: str, encoder: str, in_channels: int = 3, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(architecture, num_classes=NUM_CLASSES, in_channels=in_channels, encoder=encoder)


def _first_conv(model: nn.Module) -> nn.Conv2d:
    return model.encoder.first_conv  # type: ignore[union-attr,return-value]


@pytest.mark.parametrize(("architecture", "encoder"), CASES)
@pytest.mark.parametrize("in_channels", [1, 3, 4])
def test_logits_have_input_size_for_odd_and_tiny_images(architecture: str, encoder: str,
                                                        in_channels: int) -> None:
    model = _build(architecture, encoder, in_channels).eval()
    assert _first_conv(model).in_channels == in_channels
    torch.manual_seed(1)
    with torch.no_grad():
        for size in [(97, 131), (20, 24)]:
            logits = model(torch.randn(1, in_channels, *size))
            assert logits.shape == (1, NUM_CLASSES, *size)
            assert torch.isfinite(logits).all()
    if in_channels == 1:
        # Training on one patch of the smallest allowed size (32): no BatchNorm may see a single
        # value per channel. Done here to reuse the model; the channel count does not matter.
        logits = model.train()(torch.randn(1, 1, 32, 32))
        assert logits.shape == (1, NUM_CLASSES, 32, 32)


@pytest.mark.parametrize(("architecture", "encoder"), DEFAULTS)
def test_training_step_reaches_the_first_convolution(architecture: str, encoder: str) -> None:
    model = _build(architecture, encoder).train()
    torch.manual_seed(1)
    images = torch.randn(2, 3, 45, 61)
    target = torch.randint(0, NUM_CLASSES, (2, 45, 61))
    logits = model(images)
    assert logits.shape == (2, NUM_CLASSES, 45, 61)
    F.cross_entropy(logits, target).backward()
    assert _first_conv(model).weight.grad is not None
    assert _first_conv(model).weight.grad.abs().sum() > 0
    unused = [name for name, p in model.named_parameters() if p.grad is None]
    assert not unused


@pytest.mark.parametrize(("architecture", "encoder"), DEFAULTS)
def test_channels_last_and_bf16_autocast(architecture: str, encoder: str) -> None:
    model = _build(architecture, encoder).eval()
    torch.manual_seed(1)
    images = torch.randn(1, 3, 37, 52)
    with torch.no_grad():
        expected = model(images)
        model = model.to(memory_format=torch.channels_last)
        channels_last = model(images.contiguous(memory_format=torch.channels_last))
        with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
            mixed = model(images.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(channels_last, expected, rtol=1e-3, atol=1e-3)
    assert mixed.shape == expected.shape
    assert torch.isfinite(mixed.float()).all()


@pytest.mark.parametrize(("architecture", "encoder"), DEFAULTS)
def test_same_seed_same_model(architecture: str, encoder: str) -> None:
    images = torch.randn(1, 1, 33, 40)
    with torch.no_grad():
        first = _build(architecture, encoder, in_channels=1).eval()(images)
        second = _build(architecture, encoder, in_channels=1).eval()(images)
    torch.testing.assert_close(first, second, rtol=0, atol=0)


@pytest.mark.parametrize(("architecture", "encoder"), DEFAULTS)
def test_size_divisor(architecture: str, encoder: str) -> None:
    model = _build(architecture, encoder)
    assert model.size_divisor == 32


def test_registry_lists_the_builtin_architectures_default_first() -> None:
    names = available_architectures()
    assert names[0] == "unet"
    assert {"unet", "deeplabv3plus", "fcn8s"} <= set(names)
    # Chosen by accuracy per CPU-minute (docs/benchmarks.md).
    assert architecture_spec("unet").default_encoder == "resnet34"
    assert architecture_spec("deeplabv3plus").display_name == "DeepLabv3+"
    for name in names:
        spec = architecture_spec(name)
        assert spec.default_encoder in spec.encoders
        assert spec.hint and spec.display_name


def test_unknown_architecture_lists_the_choices() -> None:
    with pytest.raises(ValueError, match=r"unknown architecture 'segnet'.*unet.*deeplabv3plus.*fcn8s"):
        build_model("segnet", num_classes=2, in_channels=1)


def test_unknown_encoder_lists_the_choices() -> None:
    with pytest.raises(ValueError, match=r"'vgg16'.*deeplabv3plus.*resnet50, resnet34, resnet101"):
        build_model("deeplabv3plus", num_classes=2, in_channels=1, encoder="vgg16")
