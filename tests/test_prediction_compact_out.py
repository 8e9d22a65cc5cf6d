"""The compact result streamed into arrays on disk (``predict_compact(out=...)``) equals the one
in memory byte for byte, and thresholds, whole or one window at a time, like it."""

import numpy as np
import pytest
import torch

from napari_deepseg import CompactProbabilities, apply_threshold, threshold
from napari_deepseg.data.normalisation import DATASET, Normalisation
from napari_deepseg.segmentation_model import SegmentationModel
from napari_deepseg.threshold import label_dtype

zarr = pytest.importorskip("zarr")

OPTIONS = dict(tile_size=64, overlap=16, batch_size=3, precision="fp32")


@pytest.fixture(scope="module")
def model() -> SegmentationModel:
    torch.manual_seed(0)
    network = torch.nn.Sequential(  # small and fast; its 5-pixel receptive field crosses the tiles
        torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 3, 3, padding=1)
    )
    return SegmentationModel(
        network.eval(),
        architecture="unet",
        encoder="vgg16_bn",
        num_classes=3,
        normalisation=Normalisation(low=(-2.0,), high=(2.0,), mode=DATASET),
    )


@pytest.fixture(scope="module")
def stack() -> np.ndarray:
    return np.random.default_rng(3).normal(size=(2, 150, 170)).astype(np.float32)


def _zarr_out(shape: tuple[int, ...], num_classes: int = 3) -> CompactProbabilities:
    chunks = (1,) * (len(shape) - 2) + (64, 48)  # tiles, bands and chunks cut the image differently
    return CompactProbabilities(
        zarr.create_array(store={}, shape=shape, chunks=chunks, dtype=label_dtype(num_classes)),
        zarr.create_array(store={}, shape=shape, chunks=chunks, dtype=np.uint8),
        num_classes,
    )


def test_compact_streamed_into_zarr_equals_the_in_memory_one(model, stack):
    in_memory = model.predict_compact(stack, **OPTIONS)
    out = _zarr_out(stack.shape)
    assert model.predict_compact(stack, out=out, **OPTIONS) is out
    np.testing.assert_array_equal(out.best_class[:], in_memory.best_class)
    np.testing.assert_array_equal(out.best_probability[:], in_memory.best_probability)
    assert in_memory.best_class.min() >= 1 and in_memory.best_class.max() == 3


def test_compact_on_disk_thresholds_like_the_in_memory_one(model, stack, monkeypatch, tmp_path):
    monkeypatch.setattr(threshold, "BAND_PIXELS", 1000)  # many bands, a partial last one
    in_memory = model.predict_compact(stack, **OPTIONS)
    level = float(np.median(in_memory.best_probability)) / 255  # an untrained net: about half below
    stored = model.predict_compact(stack, out=_zarr_out(stack.shape), **OPTIONS)
    mapped = CompactProbabilities(
        *(
            np.lib.format.open_memmap(tmp_path / f"{name}.npy", "w+", np.uint8, stack.shape)
            for name in ("class", "probability")
        ),
        3,
    )
    model.predict_compact(stack, out=mapped, **OPTIONS)
    for t in (0.0, level, 0.9):
        expected = apply_threshold(in_memory, t)
        for compact in (stored, mapped):
            labels = apply_threshold(compact, t)
            assert type(labels) is np.ndarray and labels.dtype == np.uint8
            np.testing.assert_array_equal(labels, expected)
        window = (1, slice(40, 107), slice(90, 170))
        np.testing.assert_array_equal(apply_threshold(stored.window(window), t), expected[window])
    assert 0.3 < (apply_threshold(stored, level) == 0).mean() < 0.7  # the threshold matters here


def test_compact_out_that_does_not_fit_is_refused(model, stack):
    image = stack[0]
    with pytest.raises(ValueError, match=r"out.best_class has shape \(150, 171\)"):
        model.predict_compact(image, out=_zarr_out((150, 171)), **OPTIONS)
    with pytest.raises(ValueError, match="out is for 4 classes but the model has 3"):
        model.predict_compact(image, out=_zarr_out(image.shape, 4), **OPTIONS)
    with pytest.raises(TypeError, match="out must be a CompactProbabilities"):
        model.predict_compact(image, out=np.zeros(image.shape, np.uint8), **OPTIONS)
    wide = CompactProbabilities(np.zeros(image.shape, np.uint8), np.zeros(image.shape, np.uint16), 3)
    with pytest.raises(TypeError, match="out.best_probability must be uint8"):
        model.predict_compact(image, out=wide, **OPTIONS)
    floats = CompactProbabilities(np.zeros(image.shape, np.float32), np.zeros(image.shape, np.uint8), 3)
    with pytest.raises(TypeError, match="out.best_class must be an integer array that holds 3"):
        model.predict_compact(image, out=floats, **OPTIONS)
    read_only = np.zeros(image.shape, np.uint8)
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match="out.best_class is read-only"):
        model.predict_compact(image, out=CompactProbabilities(read_only, read_only, 3), **OPTIONS)
    with pytest.raises(ValueError, match="out and region cannot be combined"):
        model.predict_compact(image, out=_zarr_out(image.shape), region=(0, 10, 0, 10), **OPTIONS)
