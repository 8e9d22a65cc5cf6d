"""Contract tests run for every registered architecture and each of its encoders.

A new architecture is covered by registering it. Inputs are tiny and models start from scratch
(``pretrained=False``), so nothing is read from or written to the torch hub cache.
"""

from __future__ import annotations

import hashlib

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from napari_deepseg.models import SegmentationNetwork, architecture_spec, available_architectures, build_model

CASES = [
    pytest.param(a, e, id=f"{a}-{e}")
    for a in available_architectures()
    for e in architecture_spec(a).encoders
]
DEFAULTS = [pytest.param(a, architecture_spec(a).default_encoder, id=a) for a in available_architectures()]
NUM_CLASSES = 3


def _build(architecture: str, encoder: str, in_channels: int = 3, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(architecture, num_classes=NUM_CLASSES, in_channels=in_channels, encoder=encoder)


def _first_conv(model: nn.Module) -> nn.Conv2d:
    return model.encoder.first_conv  # type: ignore[union-attr,return-value]


@pytest.mark.parametrize(("architecture", "encoder"), CASES)
@pytest.mark.parametrize("in_channels", [1, 3, 4])
def test_logits_have_input_size_for_odd_and_tiny_images(
    architecture: str, encoder: str, in_channels: int
) -> None:
    model = _build(architecture, encoder, in_channels).eval()
    assert _first_conv(model).in_channels == in_channels
    torch.manual_seed(1)
    with torch.no_grad():
        for size in [(97, 131), (20, 24)]:
            logits = model(torch.randn(1, in_channels, *size))
            assert logits.shape == (1, NUM_CLASSES, *size)
            assert logits.dtype == torch.float32
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
def test_the_base_class_pads_to_the_size_divisor_and_crops_back(architecture: str, encoder: str) -> None:
    model = _build(architecture, encoder).eval()
    assert isinstance(model, SegmentationNetwork)
    assert type(model).forward is SegmentationNetwork.forward  # architectures only decode
    seen: list[tuple[int, ...]] = []
    model.encoder.register_forward_hook(lambda _m, inputs, _out: seen.append(tuple(inputs[0].shape[-2:])))
    d = model.size_divisor
    with torch.no_grad():
        for size, padded in [
            ((2 * d, 3 * d), (2 * d, 3 * d)),
            ((2 * d + 1, 3 * d - 5), (3 * d, 3 * d)),
            ((7, 9), (2 * d, 2 * d)),
        ]:
            assert model(torch.randn(1, 3, *size)).shape[-2:] == size
            assert seen.pop() == padded
    # Every feature map of a divisible input has an integer size: the divisor covers the deepest.
    features = model.encoder(torch.randn(1, 3, 2 * d, 2 * d))
    assert all(f.shape[-1] * r == 2 * d for f, r in zip(features, model.encoder.reductions, strict=True))


# sha256 (first 16 hex digits) of the sorted "key:shape" lines of the state dict for
# in_channels=2, num_classes=3, as written by commit 1f0d1e7 (before the base class): files saved
# since then load with strict=True only while these stay the same. A new architecture adds its own.
STATE_DICT_DIGESTS = {
    "unet-vgg16_bn": ("d13aa4b139679d74", 153),
    "unet-resnet18": ("837cc04b19db1f57", 182),
    "unet-resnet34": ("6f2bfbf9df556b96", 278),
    "unet-resnet50": ("1c29c172b54dbb17", 380),
    "deeplabv3plus-resnet50": ("9439f2580ecd123a", 375),
    "deeplabv3plus-resnet34": ("c8ad41bb17b852aa", 273),
    "deeplabv3plus-resnet101": ("ea5384aaf1012c8f", 681),
    "fcn8s-vgg16": ("147306143202d95d", 37),
    "fcn8s-resnet50": ("0339995139f37f4b", 327),
    "fcn8s-resnet101": ("6c4ab9219a6c0c35", 633),
}


@pytest.mark.parametrize(("architecture", "encoder"), CASES)
def test_state_dict_keys_are_those_of_saved_model_files(architecture: str, encoder: str) -> None:
    state = build_model(architecture, num_classes=NUM_CLASSES, in_channels=2, encoder=encoder).state_dict()
    lines = "\n".join(f"{k}:{tuple(v.shape)}" for k, v in sorted(state.items()))
    digest = (hashlib.sha256(lines.encode()).hexdigest()[:16], len(state))
    assert digest == STATE_DICT_DIGESTS.get(f"{architecture}-{encoder}"), (
        "the state-dict keys or shapes changed, so saved model files no longer load (or this is a "
        f"new architecture: record {digest} above)"
    )


def test_registry_lists_the_builtin_architectures_default_first() -> None:
    names = available_architectures()
    assert names[0] == "unet"
    assert {"unet", "deeplabv3plus", "fcn8s"} <= set(names)
    # Chosen by accuracy per CPU-minute (docs/benchmarks.md).
    assert architecture_spec("unet").default_encoder == "resnet18"
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
