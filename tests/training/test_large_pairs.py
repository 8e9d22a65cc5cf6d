"""Large and lazy images train from the regions around their strokes: only those are read, patches
come from them alone, live strokes far away add a region, and small numpy pairs train as before."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from napari_deepseg import Trainer
from napari_deepseg.data import regions
from napari_deepseg.data.normalisation import CENTRE, SPREAD
from napari_deepseg.data.regions import Box, SparseLabels
from napari_deepseg.data.split import validation_masks
from napari_deepseg.data.training_set import TrainingSet, _RegionPair

from ..conftest import fast_config

SIDE = 6000


class Slide:
    """A lazy ``(SIDE, SIDE, 2)`` image whose channels hold each pixel's row and column, made on
    demand; it counts the pixels read."""

    shape, dtype, ndim = (SIDE, SIDE, 2), np.dtype(np.float32), 3

    def __init__(self) -> None:
        self.pixels_read = 0

    def __getitem__(self, key):
        rows, cols = (range(n)[k] for k, n in zip(key[:2], self.shape))
        out = np.empty((len(rows), len(cols), 2), np.float32)
        out[..., 0], out[..., 1] = np.asarray(rows)[:, None], np.asarray(cols)[None, :]
        self.pixels_read += len(rows) * len(cols)
        return out[..., key[2]]


def corner_strokes() -> np.ndarray:
    labels = np.zeros((SIDE, SIDE), np.uint8)
    labels[100:110, 100:400] = 1  # top left
    labels[5850:5900, 5700:5710] = 2  # bottom right
    return labels


def positions(trainer_data: TrainingSet, patches: np.ndarray) -> np.ndarray:
    """The (row, column) each network-input pixel came from, undoing the normalisation."""
    bounds = trainer_data._pairs[0].normalisation
    low, high = (np.asarray(b)[None, :, None, None] for b in (bounds.low, bounds.high))
    return np.rint((patches * SPREAD + CENTRE) * (high - low) + low).astype(np.int64)


@pytest.fixture(scope="module")
def slide_run():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # two threads on a busy 2-core machine are several times slower
    image, labels = Slide(), corner_strokes()
    tracemalloc.start()  # around what reads the slide; tracing the iterations would be slow
    trainer = Trainer(image, labels, fast_config(iterations=3, validation_fraction=0.2))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    records = list(trainer.run())
    torch.set_num_threads(threads)
    return trainer, image, labels, records, peak


def test_a_lazy_slide_trains_reading_only_its_stroke_regions(slide_run):
    trainer, image, _, records, peak = slide_run
    assert [r.iteration for r in records] == [1, 2, 3] and np.isfinite(records[-1].loss)
    boxes = trainer.data._pairs[0].regions.boxes
    assert boxes == [Box(0, 0, 0, 192, 512), Box(0, 5760, 5632, 6000, 5824)]
    # The normalisation's strided sample (every 5th row and column: 1200 x 1200) and the two boxes,
    # instead of 36 M pixels.
    assert image.pixels_read == 1200 * 1200 + sum(b.area for b in boxes)
    # numpy's allocations: the normalisation's samples (2 M pixels per channel, whatever the slide's
    # size) and the crops, where a float32 copy of the slide alone is 288 MB.
    assert peak < 80 * 2**20
    assert trainer.painted_pixels == (3000, 500)


def test_patches_come_from_the_regions_alone(slide_run):
    trainer, *_ = slide_run
    boxes = trainer.data._pairs[0].regions.boxes
    x, _ = trainer.data.sampler.sample(64)
    where = positions(trainer.data, x)  # (B, 2, P, P): row, column
    for patch in where:
        rows, cols = patch[0], patch[1]
        assert any(
            b.top <= rows.min() and rows.max() < b.bottom and b.left <= cols.min() and cols.max() < b.right
            for b in boxes
        )
    for crop, _ in trainer.data.validation:  # validation crops too
        rows, cols = positions(trainer.data, crop[None])[0]
        assert any(b.top <= rows.min() and rows.max() < b.bottom for b in boxes)


def test_a_far_stroke_adds_a_region_and_only_its_pixels_are_read():
    image, labels = Slide(), corner_strokes()
    data = TrainingSet(image, SparseLabels.of(labels), fast_config())
    pair = data._pairs[0]
    assert isinstance(pair, _RegionPair)
    before = dict(pair.raw)
    read = image.pixels_read
    labels[3000:3004, 3000:3050] = 2
    data.update_labels(SparseLabels.of(labels))
    assert pair.regions.boxes == list(before)  # queued, not applied yet
    assert data.apply_updates()
    new = Box(0, 2880, 2880, 3072, 3136)
    assert pair.regions.boxes == [Box(0, 0, 0, 192, 512), new, Box(0, 5760, 5632, 6000, 5824)]
    assert image.pixels_read - read == new.area  # the corner crops were kept, not read again
    assert all(pair.raw[b] is crop for b, crop in before.items())
    assert data.painted_pixels == (3000, 700)
    # A stroke next to the corner grows its box: the old crop is copied, the new cells read.
    read = image.pixels_read
    labels[120:124, 400:700] = 1
    data.update_labels(labels)  # the full numpy array works too
    data.apply_updates()
    grown = pair.regions.boxes[0]
    assert grown == Box(0, 0, 0, 192, 768)
    assert image.pixels_read - read == grown.area - 192 * 512
    with pytest.raises(ValueError, match="must keep the shape"):
        data.update_labels(labels[:100])
    labels[10, 10] = 3
    with pytest.raises(ValueError, match="class 3 was not painted when training started"):
        data.update_labels(SparseLabels.of(labels))
    labels[:] = 0
    with pytest.raises(ValueError, match="no painted pixel"):
        data.update_labels(SparseLabels.of(labels))


def test_the_split_of_a_large_pair_is_the_split_of_the_whole_slice(monkeypatch):
    rng = np.random.default_rng(0)
    labels = np.zeros((1500, 1400), np.uint8)
    for k in range(12):  # strokes of two classes over the whole slice: 8 boxes
        y, x = rng.integers(0, 1480), rng.integers(0, 1380)
        labels[y : y + 8, x : x + 20] = 1 + k % 2
    image = rng.random(labels.shape).astype(np.float32)
    monkeypatch.setattr(regions, "REGION_PIXELS", 1000)
    data = TrainingSet(image, labels, fast_config(validation_fraction=0.3, seed=4))
    parts = data._pairs[0].parts(0)
    assert len(parts) == 8 and sum(p.labels.size for p in parts) < labels.size / 3
    held = np.zeros(labels.shape, bool)
    for part, mask in zip(parts, data._validation_masks(parts)):
        (top, left), (h, w) = part.origin, part.labels.shape
        held[top : top + h, left : left + w] |= mask
    (whole,) = validation_masks([labels], [(0, 0)], fraction=0.3, seed=4)
    assert 0 < whole.sum() < np.count_nonzero(labels)
    np.testing.assert_array_equal(held, whole)


def test_a_region_pair_whose_box_is_the_whole_image_samples_like_the_copy(fluo_crop, monkeypatch):
    image, labels = fluo_crop  # labels all over the 64 x 64 crop: one box, the whole image
    config = fast_config(patch_size=32, seed=2)
    copied = TrainingSet(image, labels, config)
    monkeypatch.setattr(regions, "REGION_PIXELS", 100)
    boxed = TrainingSet(image, labels, config)
    assert isinstance(boxed._pairs[0], _RegionPair)
    assert boxed._pairs[0].regions.boxes == [Box(0, 0, 0, 64, 64)]
    assert boxed.normalisation == copied.normalisation
    for a, b in zip(copied.sampler.sample(8), boxed.sampler.sample(8)):
        np.testing.assert_array_equal(a, b)


def test_small_numpy_pairs_sample_the_patches_they_sampled_before():
    """Numbers of the code before regions existed (the same seed gives the same patches)."""
    rng = np.random.default_rng(5)
    image = rng.random((2, 300, 260, 3)).astype(np.float32)
    labels = np.zeros((2, 300, 260), np.uint8)
    labels[0, 20:60, 30:200] = 1
    labels[0, 200:240, 50:90] = 2
    labels[1, 100:180, 100:110] = 3
    config = fast_config(patch_size=64, seed=3, validation_fraction=0.3)
    data = TrainingSet([image, image[0]], [labels, labels[0]], config)
    x, y = data.sampler.sample(6)
    assert (data.training_pixels, data.validation_pixels, len(data.validation)) == (8360, 11840, 7)
    assert float(x.sum()) == pytest.approx(-1543.892333984375, abs=1e-3) and int(y.sum()) == 11248
    labels[1, 250:290, 200:250] = 1
    data.update_labels(labels, 0)
    data.apply_updates()
    x, y = data.sampler.sample(6)
    assert (data.training_pixels, data.validation_pixels, len(data.validation)) == (10360, 11840, 7)
    assert float(x.sum()) == pytest.approx(-1814.02294921875, abs=1e-3) and int(y.sum()) == 13072
    assert data.painted_pixels == (15600, 3200, 800)


def test_numpy_dask_zarr_and_memmap_images_give_the_same_regions_and_patches(tmp_path, monkeypatch):
    import dask.array as da

    zarr = pytest.importorskip("zarr")
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (2100, 2100, 3), dtype=np.uint8)  # 4.4 M pixels: lazy ones use regions
    labels = np.zeros((2100, 2100), np.uint8)
    labels[50:60, 50:90], labels[2000:2040, 1500:1510] = 1, 2
    stored = zarr.create_array(store={}, shape=image.shape, chunks=(512, 512, 3), dtype=np.uint8)
    stored[:] = image
    mapped = np.lib.format.open_memmap(tmp_path / "image.npy", mode="w+", dtype=np.uint8, shape=image.shape)
    mapped[:] = image
    config = fast_config(seed=5)
    lazy = [da.from_array(image, chunks=(512, 512, 3)), stored, mapped]
    runs = [TrainingSet(kind, labels, config) for kind in lazy]
    monkeypatch.setattr(regions, "REGION_PIXELS", 0)  # numpy too
    runs.append(TrainingSet(image, labels, config))
    expected = runs[0].sampler.sample(4)
    assert runs[0]._pairs[0].regions.boxes == [Box(0, 0, 0, 128, 192), Box(0, 1920, 1408, 2100, 1600)]
    for run in runs[1:]:
        assert run._pairs[0].regions.boxes == runs[0]._pairs[0].regions.boxes
        assert run.normalisation == runs[0].normalisation
        for a, b in zip(run.sampler.sample(4), expected):
            np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(stored[:], image)  # read, never written


class LongSlide(Slide):
    shape = (12000, 12000, 2)


def test_a_diagonal_stroke_across_a_lazy_slide_holds_its_tiles_not_its_bounding_box():
    import dask.array as da

    side = LongSlide.shape[0]
    # Two one-pixel diagonals from corner to corner, lazy: one connected part, whose bounding box
    # is the whole slide.
    labels = da.eye(side, chunks=3000, dtype=np.uint8) + 2 * da.eye(side, k=5, chunks=3000, dtype=np.uint8)
    image = LongSlide()
    data = TrainingSet(image, labels, fast_config(validation_fraction=0.2, patch_size=64))
    pair = data._pairs[0]
    held = sum(b.area for b in pair.regions.boxes)
    # A tile of 512 pixels per 512 rows, with one cell of margin (640 x 640): 7 % of the slide, where
    # the part's bounding box held all of it.
    assert 0.06 * side**2 < held < 0.075 * side**2
    assert image.pixels_read < 0.1 * side**2  # the normalisation's sample and the boxes alone
    # Each painted pixel is in one core only: trained or held out once.
    parts = pair.parts(0)
    assert sum(int(np.count_nonzero(p.labels)) for p in parts) == 2 * side - 5
    held_out = sum(int(m.sum()) for m in data._validation_masks(parts))
    assert held_out > 0 and data.training_pixels + held_out == 2 * side - 5
    # Patches around the strokes lie inside a box, where the slide's pixels are; their labels are
    # the slide's (those of a neighbouring tile's core left out).
    x, y = data.sampler.sample(64)
    where = positions(data, x)
    rows, cols = where[:, 0], where[:, 1]
    truth = np.where(rows == cols, 1, 0) + np.where(cols == rows + 5, 2, 0)
    assert ((y == truth) | (y == 0)).all() and (y > 0).sum() > 0.8 * (truth > 0).sum()
    for patch in where:
        assert any(
            b.top <= patch[0].min() and patch[0].max() < b.bottom and b.left <= patch[1].min()
            for b in pair.regions.boxes
        )


@pytest.fixture
def one_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # two threads on a busy 2-core machine are several times slower
    yield
    torch.set_num_threads(threads)


def test_a_nan_near_a_stroke_painted_during_the_run_drops_that_update_alone(one_thread):
    import dask.array as da

    rng = np.random.default_rng(0)
    base = rng.random((2100, 2100)).astype(np.float32)
    base[1402, 1403] = np.nan  # off the normalisation's strided sample
    small = rng.random((200, 200)).astype(np.float32)
    labels, other = np.zeros(base.shape, np.uint8), np.zeros(small.shape, np.uint8)
    labels[100:110, 100:200], labels[300:310, 100:200] = 1, 2
    other[10:20, 10:20] = 1
    trainer = Trainer([da.from_array(base, chunks=700), small], [labels, other], fast_config(iterations=3))
    run = trainer.run()
    next(run)
    pair = trainer.data._pairs[0]
    boxes, crops = list(pair.regions.boxes), dict(pair.raw)
    new, more = labels.copy(), other.copy()
    new[1390:1400, 1390:1400] = 2
    more[100:110, 100:110] = 2
    trainer.update_labels(new, 0)
    trainer.update_labels(more, 1)
    assert trainer.painted_pixels == (1100, 1200)  # queued
    with pytest.warns(RuntimeWarning, match=r"pair 0: .*first at row 1402, column 1403, in rows 1280:"):
        record = next(run)  # the run goes on
    assert record.iteration == 2 and np.isfinite(record.loss)
    assert pair.regions.boxes == boxes and all(pair.raw[b] is c for b, c in crops.items())
    assert trainer.painted_pixels == record.painted_pixels == (1100, 1100)  # pair 1's stroke came in
    np.testing.assert_array_equal(trainer.data._pairs[1].labels[0], more)
    assert len(trainer.rejected_updates) == 1 and "Training goes on" in trainer.rejected_updates[0]
    assert trainer.data.version == 1
    assert [r.iteration for r in run] == [3]  # warned once
