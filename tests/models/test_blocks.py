"""Padding to the size divisor, and the bilinear initialisation of FCN-8s's transposed convolutions."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from napari_deepseg.models._base import crop, pad_to_multiple
from napari_deepseg.models.fcn8s import BilinearUpsample


@pytest.mark.parametrize(
    ("size", "min_size", "padded"),
    [
        ((97, 131), 0, (128, 160)),
        ((20, 24), 0, (32, 32)),
        ((64, 96), 0, (64, 96)),
        ((3, 40), 0, (32, 64)),
        ((32, 32), 64, (64, 64)),
    ],
)
def test_pad_to_multiple_and_crop_back(size: tuple[int, int], min_size: int, padded: tuple[int, int]) -> None:
    x = torch.randn(2, 3, *size)
    y, box = pad_to_multiple(x, 32, min_size=min_size)
    assert y.shape == (2, 3, *padded)
    torch.testing.assert_close(crop(y, box), x, rtol=0, atol=0)


def test_padding_reflects_when_it_fits_and_replicates_otherwise() -> None:
    x = torch.randn(1, 1, 20, 30)
    y, (top, left, _, _) = pad_to_multiple(x, 32)
    assert (top, left) == (6, 1)
    torch.testing.assert_close(y[..., top - 1, left:-1], x[..., 1, :], rtol=0, atol=0)  # reflect
    tiny = torch.randn(1, 1, 3, 3)
    y, (top, left, _, _) = pad_to_multiple(tiny, 32)
    torch.testing.assert_close(y[..., 0, 0], tiny[..., 0, 0], rtol=0, atol=0)  # replicate
    torch.testing.assert_close(y[..., -1, -1], tiny[..., -1, -1], rtol=0, atol=0)


@pytest.mark.parametrize("scale", [2, 8])
def test_transposed_convolution_starts_as_bilinear_upsampling(scale: int) -> None:
    up = BilinearUpsample(channels=2, scale=scale)
    x = torch.randn(1, 2, 6, 7)
    with torch.no_grad():
        learned = up(x)
    reference = F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)
    assert learned.shape == reference.shape
    # Identical away from the border, where the transposed convolution sees zero padding.
    inner = (..., slice(scale, -scale), slice(scale, -scale))
    torch.testing.assert_close(learned[inner], reference[inner])
