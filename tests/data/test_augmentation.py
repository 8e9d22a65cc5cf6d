from __future__ import annotations

import pytest
import torch
from torchvision.transforms.v2 import functional as tvf

from napari_deepseg.config import AugmentationConfig
from napari_deepseg.data import Augmenter
from napari_deepseg.data.augmentation import colour_matrix

OFF = {
    "flips": False,
    "rot90": False,
    "rotation_degrees": 0,
    "scale": 0,
    "brightness": 0,
    "contrast": 0,
    "hue": 0,
    "saturation": 0,
    "noise_std": 0,
}


def only(**changes) -> AugmentationConfig:
    return AugmentationConfig(**{**OFF, **changes})


def _batch(channels: int = 3, size: int = 48, batch: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(123)
    images = torch.randn(batch, channels, size, size, generator=generator)
    # Blocky labels with values {0, 2, 5}: interpolation would invent 1, 3 or 4.
    blocks = torch.randint(0, 3, (batch, size // 8, size // 8), generator=generator)
    labels = torch.tensor([0, 2, 5])[blocks].repeat_interleave(8, 1).repeat_interleave(8, 2)
    return images, labels


def test_disabled_is_identity() -> None:
    images, labels = _batch()
    out_x, out_y = Augmenter(AugmentationConfig.disabled(), rgb=True)(images, labels)
    assert torch.equal(out_x, images) and torch.equal(out_y, labels)
    assert out_x.data_ptr() != images.data_ptr()


def test_default_keeps_shapes_dtypes_values_and_inputs() -> None:
    images, labels = _batch()
    copies = images.clone(), labels.clone()
    for rgb in (True, False):
        out_x, out_y = Augmenter(AugmentationConfig(), rgb=rgb)(images, labels)
        assert out_x.shape == images.shape and out_x.dtype == torch.float32
        assert out_y.shape == labels.shape and out_y.dtype == torch.int64
        assert set(out_y.unique().tolist()) <= {0, 2, 5}
        assert not torch.equal(out_x, images)
    assert torch.equal(images, copies[0]) and torch.equal(labels, copies[1])


def test_strong_affine_mask_is_nearest_and_aligned() -> None:
    images, labels = _batch(channels=1, size=64)
    images = labels[:, None].float()  # the image encodes the label
    torch.manual_seed(0)
    out_x, out_y = Augmenter(only(rotation_degrees=40, scale=0.3), rgb=False)(images, labels)
    assert set(out_y.unique().tolist()) <= {0, 2, 5}
    assert (out_y != labels).float().mean() > 0.2  # it did move
    # Bilinear image and nearest mask agree wherever the image is not on a label edge.
    values = torch.tensor([0.0, 2.0, 5.0])
    interior = (out_x[:, 0, ..., None] - values).abs().min(dim=-1).values < 1e-3
    assert interior.float().mean() > 0.6
    agree = (out_x[:, 0].round() == out_y)[interior].float().mean()
    assert agree > 0.995


def test_flips_and_rot90_apply_identically() -> None:
    images, labels = _batch(channels=2, size=32, batch=16)
    images = torch.stack([labels.float(), -labels.float()], dim=1)
    torch.manual_seed(0)
    out_x, out_y = Augmenter(only(flips=True, rot90=True), rgb=False)(images, labels)
    assert torch.equal(out_x[:, 0], out_y.float())
    assert torch.equal(out_x[:, 1], -out_y.float())
    changed = (out_y != labels).flatten(1).any(dim=1)
    assert 10 <= int(changed.sum()) <= 16  # 7 of 8 dihedral draws change a random label map


def test_rot90_on_non_square_batch_keeps_shape() -> None:
    images = torch.arange(2 * 1 * 4 * 6, dtype=torch.float32).reshape(2, 1, 4, 6)
    labels = images[:, 0].long()
    for seed in range(5):
        torch.manual_seed(seed)
        out_x, out_y = Augmenter(only(rot90=True), rgb=False)(images, labels)
        assert out_x.shape == images.shape
        assert torch.equal(out_x[:, 0].long(), out_y)


def test_deterministic_under_manual_seed() -> None:
    images, labels = _batch()
    augmenter = Augmenter(AugmentationConfig(), rgb=True)
    runs = []
    for seed in (7, 7, 8):
        torch.manual_seed(seed)
        runs.append(augmenter(images, labels))
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
    assert not torch.equal(runs[0][0], runs[2][0])


def test_samples_get_their_own_draws() -> None:
    images = torch.zeros(8, 1, 16, 16)
    labels = torch.zeros(8, 16, 16, dtype=torch.int64)
    out_x, _ = Augmenter(only(brightness=0.2), rgb=False)(images, labels)
    shifts = out_x[:, 0, 0, 0]
    assert len(set(shifts.tolist())) == 8
    assert torch.equal(out_x, shifts.view(8, 1, 1, 1).expand_as(out_x))  # constant per sample
    assert shifts.abs().max() <= 0.2 / 0.25 + 1e-6  # in [0, 1] intensity units, converted


def test_contrast_keeps_mean_and_noise_has_its_std() -> None:
    images, labels = _batch(channels=1, size=64, batch=4)
    out_x, _ = Augmenter(only(contrast=0.5), rgb=False)(images, labels)
    torch.testing.assert_close(out_x.mean(dim=(1, 2, 3)), images.mean(dim=(1, 2, 3)), atol=1e-5, rtol=0)
    ratio = out_x.std(dim=(1, 2, 3)) / images.std(dim=(1, 2, 3))
    assert ((ratio >= 0.5 - 1e-4) & (ratio <= 1.5 + 1e-4)).all() and not torch.allclose(ratio, torch.ones(4))
    out_x, _ = Augmenter(only(noise_std=0.05), rgb=False)(images, labels)
    assert (out_x - images).std().item() == pytest.approx(0.05 / 0.25, rel=0.03)


def test_colour_matrix_matches_torchvision_saturation_and_keeps_grey() -> None:
    rgb = torch.rand(3, 16, 16) * 0.5 + 0.25  # stays inside [0, 1] after a mild change
    matrix = colour_matrix(torch.zeros(1, dtype=torch.float64), torch.tensor([0.7], dtype=torch.float64))
    ours = torch.einsum("ij,jhw->ihw", matrix[0].float(), rgb)
    torch.testing.assert_close(ours, tvf.adjust_saturation(rgb, 0.7), atol=2e-4, rtol=0)
    angles = torch.tensor([0.0, 0.3, -2.0], dtype=torch.float64)
    matrices = colour_matrix(angles, torch.tensor([1.0, 1.3, 0.8], dtype=torch.float64))
    grey = torch.ones(3, dtype=torch.float64)
    torch.testing.assert_close(matrices @ grey, grey.expand(3, 3))  # grey is left alone
    torch.testing.assert_close(matrices[0], torch.eye(3, dtype=torch.float64))
    # A hue shift moves a colour along the hue circle: red gets some green or blue.
    red = matrices[1] @ torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    assert red[0] > 0.5 and (red[1] > 0.05 or red[2] > 0.05)


def test_hue_and_saturation_only_for_colour() -> None:
    grey = torch.randn(4, 1, 16, 16).expand(4, 3, 16, 16).contiguous()
    labels = torch.zeros(4, 16, 16, dtype=torch.int64)
    out_x, _ = Augmenter(only(hue=0.3, saturation=0.5), rgb=True)(grey, labels)
    torch.testing.assert_close(out_x, grey, atol=1e-5, rtol=0)  # grey pixels have no hue
    colour = torch.randn(4, 3, 16, 16)
    out_x, _ = Augmenter(only(hue=0.3, saturation=0.5), rgb=True)(colour, labels)
    assert (out_x - colour).abs().mean() > 0.05
    out_x, _ = Augmenter(only(hue=0.3, saturation=0.5), rgb=False)(colour, labels)
    assert torch.equal(out_x, colour)
    rgba = torch.randn(4, 4, 16, 16)
    out_x, _ = Augmenter(only(hue=0.3), rgb=True)(rgba, labels)
    assert torch.equal(out_x[:, 3], rgba[:, 3]) and not torch.equal(out_x[:, :3], rgba[:, :3])
    with pytest.raises(ValueError, match="RGB"):
        Augmenter(only(hue=0.1), rgb=True)(torch.zeros(1, 1, 8, 8), torch.zeros(1, 8, 8, dtype=torch.int64))
