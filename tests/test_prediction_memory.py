"""Every public prediction path holds memory that does not grow with the image (beyond what it
returns), and the banded float threshold gives exactly the whole-array answer."""

import tracemalloc

import numpy as np
import pytest
import torch

from napari_deepseg import CompactProbabilities, apply_threshold, threshold
from napari_deepseg.data.normalisation import DATASET, Normalisation, image_bounds
from napari_deepseg.segmentation_model import SegmentationModel


def _reference_labels(p: np.ndarray, min_probability: float) -> np.ndarray:
    labels = p.argmax(0) + 1
    labels[p.max(0) < min_probability] = 0
    return labels


@pytest.mark.parametrize("shape", [(3, 70, 50), (4, 3, 33, 20), (2, 200), (5, 2, 2, 9, 7)])
def test_banded_threshold_equals_the_whole_array_answer(monkeypatch, shape):
    monkeypatch.setattr(threshold, "BAND_PIXELS", 64)  # many bands, partial last ones
    rng = np.random.default_rng(1)
    logits = rng.normal(size=shape)
    p = (np.exp(logits) / np.exp(logits).sum(0)).astype(np.float32)
    for level in (0.0, 0.4, 0.7):
        np.testing.assert_array_equal(apply_threshold(p, level), _reference_labels(p, level))
    compact = CompactProbabilities.from_probabilities(p)
    np.testing.assert_array_equal(compact.best_class, p.argmax(0) + 1)
    np.testing.assert_array_equal(compact.best_probability, np.rint(p.max(0) * 255))


def test_banded_threshold_reads_strided_float64_input_without_copying_it_whole(monkeypatch):
    monkeypatch.setattr(threshold, "BAND_PIXELS", 100)
    rng = np.random.default_rng(2)
    p = rng.random((3, 80, 60))
    strided = np.moveaxis(np.moveaxis(p, 0, -1).copy(), -1, 0)[:, ::2, 1::2]  # classes-last memory
    assert not strided.flags.c_contiguous
    np.testing.assert_array_equal(apply_threshold(strided, 0.5), _reference_labels(strided, 0.5))


def test_float_threshold_temporaries_are_a_band_not_the_image():
    p = np.full((3, 2048, 2048), 1 / 3, np.float32)
    tracemalloc.start()
    labels = apply_threshold(p, 0.2)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    # The whole-array argmax held ~28 bytes per pixel (a classes-last copy, int64 indices, ...).
    assert peak - labels.nbytes < 2 * threshold.BAND_PIXELS * 4 * 3, peak / 2**20


def _linear_model() -> SegmentationModel:
    torch.manual_seed(0)
    return SegmentationModel(
        torch.nn.Conv2d(3, 3, 1).eval(),
        architecture="unet",
        encoder="resnet34",
        num_classes=3,
        # Fixed bounds: the per-image bounds' sample grows up to its cap (tested below), which
        # would blur what this measures.
        normalisation=Normalisation((0.0,) * 3, (255.0,) * 3, mode=DATASET),
    )


def _extra_bytes(run) -> tuple[int, int]:
    """numpy memory a call held at its peak beyond what it returned, and what it returned."""
    tracemalloc.start()
    returned = run()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    nbytes = sum(a.nbytes for a in returned)
    return peak - nbytes, nbytes


@pytest.mark.parametrize("path", ["proba+threshold", "compact", "predict", "compact on disk"])
def test_every_public_path_is_flat_in_the_number_of_rows(monkeypatch, tmp_path, path):
    """Four times the rows at the same width: what is held beyond the returned arrays stays the
    same (the band of tile rows depends on the width only)."""
    monkeypatch.setattr(threshold, "BAND_PIXELS", 1 << 16)  # both images span several bands
    model = _linear_model()

    def run(image):
        if path == "compact on disk":  # memory maps: the result itself is not numpy memory
            files = [tmp_path / f"{image.shape[0]}-{name}.npy" for name in ("class", "probability")]
            out = CompactProbabilities(
                *(np.lib.format.open_memmap(f, "w+", np.uint8, image.shape[:2]) for f in files), 3
            )
            model.predict_compact(image, out=out, tile_size=256, overlap=32, precision="fp32")
            del out
            return ()
        if path == "proba+threshold":
            p = model.predict_proba(image, tile_size=256, overlap=32, precision="fp32")
            return p, apply_threshold(p, 0.4)
        if path == "compact":
            c = model.predict_compact(image, tile_size=256, overlap=32, precision="fp32")
            return c.best_class, c.best_probability, apply_threshold(c, 0.4)
        return (model.predict(image, tile_size=256, overlap=32, precision="fp32", min_probability=0.4),)

    rng = np.random.default_rng(0)
    small, tall = (rng.integers(0, 256, (rows, 512, 3), dtype=np.uint8) for rows in (512, 2048))
    extra_small, returned_small = _extra_bytes(lambda: run(small))
    extra_tall, returned_tall = _extra_bytes(lambda: run(tall))
    # The tiles are spread evenly, so the two images get slightly different tile heights and the
    # band of one tile row may differ by up to its own size; nothing else may grow.
    one_band = 256 * 512 * 3 * 4
    growth = extra_tall - extra_small
    assert growth < 0.05 * (returned_tall - returned_small) + one_band, (path, extra_small, extra_tall)


def test_per_image_bounds_hold_one_channel_of_the_sample_in_float64():
    image = np.random.default_rng(0).integers(0, 256, (1, 3, 2048, 2048), dtype=np.uint8)
    tracemalloc.start()
    bounds = image_bounds(image)  # 4.2 M pixels: a grid of 1 M per channel
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    # One channel of the grid in float64 (8 MB) and np.percentile's partition of it: 16 MB; all
    # channels in float64 and a copy of them held 49 MB.
    assert peak < 20 * 2**20, peak / 2**20
    reference = np.percentile(image[0, :, ::3, ::3].reshape(3, -1).astype(np.float64), [1, 99.8], axis=1)
    np.testing.assert_allclose(np.transpose(bounds), reference.T)
