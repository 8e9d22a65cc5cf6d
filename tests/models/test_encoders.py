"""Encoders: feature shapes, first-convolution adaptation and offline ImageNet weights.

The torch hub directory is redirected to a temporary folder, so a real cache on the machine
cannot change the outcome. Weight files are written from seeded ``resnet34`` / VGG16 feature
models, the smallest that exercise each loading path.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.models import resnet34
from torchvision.models.vgg import cfgs, make_layers

from napari_deepseg.models import (
    _pretrained,
    build_model,
    pretrained_weights_available,
    pretrained_weights_status,
)
from napari_deepseg.models._pretrained import weights_cache_paths
from napari_deepseg.models.encoders import ENCODERS, adapt_rgb_weight, build_encoder

RESNETS = [e for e in ENCODERS if e.startswith("resnet")]


@pytest.fixture(autouse=True)
def hub_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    monkeypatch.setattr(_pretrained, "_warned_encoders", set())
    return hub


@pytest.fixture(scope="module")
def resnet34_state(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    torch.manual_seed(123)
    state = resnet34(weights=None).state_dict()
    path = tmp_path_factory.mktemp("weights") / "resnet34.pth"
    torch.save(state, path)
    return path, state


def _put_in_cache(source: Path, encoder: str) -> Path:
    target = weights_cache_paths(encoder)[0]
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(source)
    return target


@pytest.mark.parametrize("in_channels", [1, 2, 3, 4, 5])
def test_adapt_rgb_weight(in_channels: int) -> None:
    rgb = torch.randn(8, 3, 3, 3)
    adapted = adapt_rgb_weight(rgb, in_channels)
    assert adapted.shape == (8, in_channels, 3, 3)
    if in_channels == 1:
        torch.testing.assert_close(adapted[:, 0], rgb.sum(dim=1))
    else:
        for c in range(in_channels):
            torch.testing.assert_close(adapted[:, c], rgb[:, c % 3] * 3 / in_channels)
    # A grey image replicated to RGB gives the same response as the 1-channel weight on it.
    if in_channels == 1:
        grey = torch.randn(1, 1, 5, 5)
        torch.testing.assert_close(
            nn.functional.conv2d(grey, adapted), nn.functional.conv2d(grey.expand(1, 3, 5, 5), rgb)
        )


@pytest.mark.parametrize("dilated", [False, True])
@pytest.mark.parametrize("name", ENCODERS)
def test_feature_maps_match_declared_channels_and_reductions(name: str, dilated: bool) -> None:
    if dilated and name.startswith("vgg"):
        with pytest.raises(ValueError, match=r"ResNet"):
            build_encoder(name, in_channels=2, dilate_last_stage=True)
        return
    torch.manual_seed(0)
    encoder = build_encoder(name, in_channels=2, dilate_last_stage=dilated).eval()
    with torch.no_grad():
        features = encoder(torch.randn(1, 2, 64, 96))
    shapes = [tuple(f.shape[1:]) for f in features]
    declared = zip(encoder.out_channels, encoder.reductions, strict=True)
    assert shapes == [(c, 64 // r, 96 // r) for c, r in declared]
    assert encoder.reductions[-1] == (16 if dilated else 32 if name.startswith("resnet") else 16)


def test_pretrained_weights_from_hub_cache(resnet34_state: tuple[Path, dict[str, torch.Tensor]]) -> None:
    path, state = resnet34_state
    assert not pretrained_weights_available("resnet34")
    _put_in_cache(path, "resnet34")
    assert pretrained_weights_available("resnet34")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        unet = build_model("unet", num_classes=2, in_channels=1, encoder="resnet34", pretrained=True)
        deeplab = build_model(
            "deeplabv3plus", num_classes=2, in_channels=3, encoder="resnet34", pretrained=True
        )
    stages = unet.encoder.stages
    torch.testing.assert_close(stages[4][1].conv2.weight, state["layer4.1.conv2.weight"], rtol=0, atol=0)
    torch.testing.assert_close(stages[0][1].running_mean, state["bn1.running_mean"], rtol=0, atol=0)
    torch.testing.assert_close(unet.encoder.first_conv.weight, state["conv1.weight"].sum(1, keepdim=True))
    # Dilation changes strides only; the weights stay those of the file.
    torch.testing.assert_close(deeplab.encoder.first_conv.weight, state["conv1.weight"], rtol=0, atol=0)
    torch.testing.assert_close(
        deeplab.encoder.stages[4][0].conv1.weight, state["layer4.0.conv1.weight"], rtol=0, atol=0
    )
    assert deeplab.encoder.stages[4][0].conv1.dilation == (2, 2)


def test_pretrained_vgg_loads_the_features_and_adapts_four_channels(tmp_path: Path) -> None:
    torch.manual_seed(7)
    features = make_layers(cfgs["D"], batch_norm=False)
    # The classifier of a real file is left out here only to keep the test small; it is ignored anyway.
    state = {f"features.{k}": v for k, v in features.state_dict().items()}
    torch.save(state, tmp_path / "vgg16.pth")
    _put_in_cache(tmp_path / "vgg16.pth", "vgg16")
    model = build_model("fcn8s", num_classes=2, in_channels=4, pretrained=True)
    last_conv = model.encoder.stages[4][-2]
    torch.testing.assert_close(last_conv.weight, state["features.28.weight"], rtol=0, atol=0)
    rgb = state["features.0.weight"]
    expected = torch.cat([rgb, rgb[:, :1]], dim=1) * 3 / 4
    torch.testing.assert_close(model.encoder.first_conv.weight, expected)


def test_weights_status_says_where_the_file_goes(hub_dir: Path) -> None:
    status = pretrained_weights_status("resnet34")
    expected = hub_dir / "checkpoints" / "resnet34-b627a593.pth"
    assert (status.encoder, status.expected_path, status.found, status.available) == (
        "resnet34",
        expected,
        None,
        False,
    )
    assert status.url == "https://download.pytorch.org/models/resnet34-b627a593.pth"
    assert status.instructions == f"download {status.url} and save it as {expected}"
    expected.parent.mkdir(parents=True)
    expected.touch()
    assert pretrained_weights_status("resnet34").found == expected


def test_resnet50_uses_whichever_imagenet_file_exists(hub_dir: Path) -> None:
    newest, oldest = weights_cache_paths("resnet50")
    assert newest.name != oldest.name
    assert not pretrained_weights_available("resnet50")
    oldest.parent.mkdir(parents=True)
    oldest.touch()
    assert pretrained_weights_available("resnet50")
    assert pretrained_weights_status("resnet50").found == oldest
    assert pretrained_weights_status("resnet50").expected_path == newest
    assert oldest.parent == hub_dir / "checkpoints"


def test_missing_weights_warn_once_and_start_from_scratch(hub_dir: Path) -> None:
    expected_file = hub_dir / "checkpoints" / "resnet34-b627a593.pth"
    with pytest.warns(UserWarning, match=r"resnet34.*not available offline") as record:
        model = build_model("unet", num_classes=2, in_channels=3, encoder="resnet34", pretrained=True)
    assert len(record) == 1
    assert pretrained_weights_status("resnet34").instructions in str(record[0].message)
    assert str(expected_file) in str(record[0].message)
    assert "from scratch" in str(record[0].message)
    assert record[0].filename == __file__  # attributed to the caller of build_model
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 2, 32, 32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_model("deeplabv3plus", num_classes=2, in_channels=3, encoder="resnet34", pretrained=True)


def test_explicit_weights_path(resnet34_state: tuple[Path, dict[str, torch.Tensor]]) -> None:
    path, state = resnet34_state
    model = build_model(
        "unet", num_classes=2, in_channels=3, encoder="resnet34", pretrained=True, weights_path=path
    )
    torch.testing.assert_close(model.encoder.first_conv.weight, state["conv1.weight"], rtol=0, atol=0)
    with pytest.raises(FileNotFoundError, match=r"missing.pth"):
        build_encoder("resnet34", in_channels=3, pretrained=True, weights_path=path.parent / "missing.pth")


def test_corrupt_or_foreign_weights_file_names_the_file(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"this is not a checkpoint")
    with pytest.raises(ValueError, match=r"corrupt.pth"):
        build_encoder("resnet34", in_channels=3, pretrained=True, weights_path=corrupt)
    foreign = tmp_path / "foreign.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, foreign)
    with pytest.raises(ValueError, match=r"foreign.pth"):
        build_encoder("resnet34", in_channels=3, pretrained=True, weights_path=foreign)
    with pytest.raises(ValueError, match=r"foreign.pth"):
        build_encoder("vgg16", in_channels=3, pretrained=True, weights_path=foreign)


def test_unknown_encoder_lists_the_choices() -> None:
    with pytest.raises(ValueError, match=r"unknown encoder 'resnet152'.*vgg16_bn.*resnet101"):
        pretrained_weights_available("resnet152")
    with pytest.raises(ValueError, match=r"unknown encoder 'resnet152'"):
        pretrained_weights_status("resnet152")
    with pytest.raises(ValueError, match=r"resnet152"):
        build_encoder("resnet152", in_channels=3)
