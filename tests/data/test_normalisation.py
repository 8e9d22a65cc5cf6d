from __future__ import annotations

import json

import numpy as np
import pytest

from napari_deepseg.data import Normalisation, compute_normalisation


def test_percentiles_map_to_network_range() -> None:
    # Channel 0: 0..9999 (1st percentile ~ 99.99, 99.8th ~ 9979.002); channel 1 constant.
    ramp = np.arange(10_000, dtype=np.float32).reshape(1, 100, 100)
    image = np.concatenate([ramp, np.full_like(ramp, 7.0)])
    norm = compute_normalisation([image[:, :50], image[:, 50:]])
    assert norm.in_channels == 2
    assert norm.low[0] == pytest.approx(99.99, abs=1e-3)
    assert norm.high[0] == pytest.approx(9979.002, abs=1e-3)
    assert norm.low[1] == 7.0 and norm.high[1] == 8.0  # degenerate: high = low + 1
    out = norm.apply(image)
    assert out.dtype == np.float32 and out.shape == image.shape
    # low -> (0 - 0.5) / 0.25 = -2, high -> 2, the mid-point -> 0.
    probe = np.array([[[norm.low[0]]], [[7.0]]], np.float32)
    np.testing.assert_allclose(norm.apply(probe).ravel(), [-2.0, -2.0], atol=1e-5)
    probe = np.array([[[norm.high[0]]], [[8.0]]], np.float32)
    np.testing.assert_allclose(norm.apply(probe).ravel(), [2.0, 2.0], atol=1e-4)
    mid = (norm.low[0] + norm.high[0]) / 2
    batch = np.array([[[[mid]], [[7.5]]]] * 3, np.float32)  # (N, C, 1, 1)
    np.testing.assert_allclose(norm.apply(batch), 0.0, atol=1e-4)


def test_apply_does_not_modify_input_and_checks_channels() -> None:
    norm = Normalisation(low=(1.0,), high=(3.0,))
    x = np.full((1, 4, 4), 2.0, np.float32)
    out = norm.apply(x)
    np.testing.assert_array_equal(x, 2.0)
    np.testing.assert_allclose(out, 0.0)
    with pytest.raises(ValueError, match="C = 1"):
        norm.apply(np.zeros((3, 4, 4)))


def test_dict_roundtrip_through_json() -> None:
    norm = Normalisation(low=(0.5, -2.0, 10), high=(9.25, 4.0, 300))
    again = Normalisation.from_dict(json.loads(json.dumps(norm.to_dict())))
    assert again == norm
    assert again.low == (0.5, -2.0, 10.0)
    assert norm.to_dict() == {
        "low": [0.5, -2.0, 10.0],
        "high": [9.25, 4.0, 300.0],
        "mode": "dataset",
        "percentiles": [1.0, 99.8],
    }
    per_image = Normalisation(low=(1.0,), high=(2.0,), mode="per_image", percentiles=(2, 98))
    assert Normalisation.from_dict(json.loads(json.dumps(per_image.to_dict()))) == per_image


def test_files_without_a_mode_load_as_dataset_bounds() -> None:
    old = Normalisation.from_dict({"low": [3.0], "high": [7.0]})  # written before the modes existed
    assert old.mode == "dataset" and old.percentiles == (1.0, 99.8)
    image = np.arange(100, dtype=np.float32).reshape(1, 1, 10, 10)
    assert old.for_image(image) is old


def test_per_image_bounds_follow_each_image() -> None:
    rng = np.random.default_rng(0)
    image = rng.gamma(2.0, 20.0, size=(1, 3, 120, 100)).astype(np.float32)  # (S, C, H, W)
    norm = Normalisation(low=(0.0,) * 3, high=(1.0,) * 3, mode="per_image")
    base = norm.for_image(image).apply(image[0])
    for scale, offset in ((0.5, 0.0), (2.0, 0.0), (1.0, 40.0), (3.0, -7.0)):
        shifted = image * np.float32(scale) + np.float32(offset)
        fixed = norm.for_image(shifted)
        assert fixed.mode == "dataset"
        np.testing.assert_allclose(fixed.apply(shifted[0]), base, atol=1e-4)
    np.testing.assert_allclose(fixed.low, np.percentile(shifted, 1.0, axis=(0, 2, 3)), rtol=1e-6)
    with pytest.raises(ValueError, match="mode"):
        Normalisation(low=(0.0,), high=(1.0,), mode="per_tile")


def test_per_image_bounds_of_a_big_image_use_a_strided_sample() -> None:
    from napari_deepseg.data.normalisation import image_bounds

    big = np.random.default_rng(1).normal(100, 10, size=(1, 1, 2000, 1500)).astype(np.float32)
    low, high = image_bounds(big, max_samples=50_000)
    full_low, full_high = np.percentile(big, [1.0, 99.8])
    assert low[0] == pytest.approx(full_low, abs=1.0) and high[0] == pytest.approx(full_high, abs=2.0)
    assert image_bounds(big, max_samples=50_000) == (low, high)  # deterministic


def test_subsampling_is_deterministic_and_close() -> None:
    rng = np.random.default_rng(3)
    slices = [rng.normal(100, 10, size=(1, 200, 150)).astype(np.float32) for _ in range(3)]
    full = compute_normalisation(slices)
    a = compute_normalisation(slices, max_samples=20_000, rng=7)
    b = compute_normalisation(slices, max_samples=20_000, rng=np.random.default_rng(7))
    assert a == b
    assert a != full  # the subsampled path was taken
    assert a.low[0] == pytest.approx(full.low[0], abs=1.5)  # 1st percentile ~ 76.7
    assert a.high[0] == pytest.approx(full.high[0], abs=3.0)  # 99.8th ~ 128.8


def test_subsampling_draws_from_every_slice() -> None:
    slices = [np.full((1, 100, 100), float(i), np.float32) for i in range(3)]
    norm = compute_normalisation(slices, low_percentile=30, high_percentile=70, max_samples=3000)
    assert norm.low == (0.0,) and norm.high == (2.0,)
    norm = compute_normalisation(slices, low_percentile=40, high_percentile=60, max_samples=3000)
    assert norm.low == (1.0,) and norm.high == (2.0,)  # degenerate 1..1 -> high = low + 1


def test_channel_mismatch() -> None:
    with pytest.raises(ValueError, match="all images must have the same number of channels: 3 and 1"):
        compute_normalisation([np.zeros((3, 4, 4)), np.zeros((1, 4, 4))])
    with pytest.raises(ValueError, match="one value per channel"):
        Normalisation(low=(0.0, 1.0), high=(1.0,))
