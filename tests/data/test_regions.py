"""The boxes around strokes: found by reading labels band by band, exact on hand-made labels,
covering every stroke pixel with its margin, disjoint, and reused when they grow."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from napari_deepseg.data.pairs import ImageSlices
from napari_deepseg.data.regions import (
    CELL,
    TILE,
    Box,
    Region,
    SparseLabels,
    assemble,
    read_labels,
    scan_labels,
)

zarr = pytest.importorskip("zarr")


class Counting:
    """An array-like over a numpy array that records the shape of every read."""

    def __init__(self, data: np.ndarray) -> None:
        self._data, self.shape, self.dtype, self.ndim = data, data.shape, data.dtype, data.ndim
        self.reads: list[tuple[int, ...]] = []

    def __getitem__(self, key):
        out = np.array(self._data[key], copy=True)
        self.reads.append(out.shape)
        return out

    @property
    def pixels_read(self) -> int:
        return int(sum(np.prod(shape) for shape in self.reads))


def two_corner_labels() -> np.ndarray:
    labels = np.zeros((1000, 1200), np.uint8)
    labels[10:20, 10:30] = 1  # cell (0, 0)
    labels[900:950, 1100:1150] = 2  # cell (14, 17)
    return labels


def test_boxes_of_hand_made_strokes_are_whole_cells_grown_by_the_margin_and_clipped():
    scan = scan_labels(two_corner_labels())
    assert scan.top == 2 and scan.shape == (1, 1000, 1200)
    assert np.argwhere(scan.cells[0]).tolist() == [[0, 0], [14, 17]]
    # 64 pixels of margin: one cell each side, clipped at the top-left corner and at 1000 x 1200.
    assert scan.boxes(64) == [Box(0, 0, 0, 128, 128), Box(0, 832, 1024, 1000, 1200)]
    assert scan.boxes(65) == [Box(0, 0, 0, 192, 192), Box(0, 768, 960, 1000, 1200)]  # two cells
    assert scan.boxes(0) == [Box(0, 0, 0, 64, 64), Box(0, 896, 1088, 960, 1152)]
    # 700 pixels of margin: the grown cells meet, one box holds both strokes.
    assert scan.boxes(700) == [Box(0, 0, 0, 1000, 1200)]


def test_every_stroke_pixel_lies_in_one_box_with_its_margin_and_the_area_stays_near_the_strokes():
    rng = np.random.default_rng(3)
    labels = np.zeros((3, 2000, 1500), np.uint16)
    for _ in range(12):
        s, y, x = rng.integers(0, 3), rng.integers(0, 2000), rng.integers(0, 1500)
        labels[s, y : y + rng.integers(1, 40), x : x + rng.integers(1, 40)] = rng.integers(1, 5)
    margin = 96
    boxes = scan_labels(labels).boxes(margin)
    inside = np.zeros(labels.shape, np.int64)
    for b in boxes:
        inside[b.slice_index, b.top : b.bottom, b.left : b.right] += 1
        assert b.top % CELL == 0 and b.left % CELL == 0  # on the validation split's block grid
    assert inside.max() == 1  # disjoint
    for s, y, x in np.argwhere(labels):
        (box,) = [b for b in boxes if b.slice_index == s and b.top <= y < b.bottom and b.left <= x < b.right]
        assert box.top <= max(y - margin, 0) and box.bottom >= min(y + margin + 1, 2000)
        assert box.left <= max(x - margin, 0) and box.right >= min(x + margin + 1, 1500)
    # Each stroke needs at most (40 + 2 * 96 + 2 * 64)^2 pixels: 12 strokes hold far less than the stack.
    assert sum(b.area for b in boxes) <= 12 * 360**2 < labels.size / 5


def test_a_ring_around_a_dot_gives_one_box_not_two_overlapping():
    labels = np.zeros((1280, 1280), np.uint8)
    labels[64 * 2 : 64 * 12, 64 * 2 : 64 * 12] = 1  # a ring three cells thick: its box is mostly full
    labels[64 * 5 : 64 * 9, 64 * 5 : 64 * 9] = 0
    labels[64 * 7, 64 * 7] = 2
    assert scan_labels(labels).boxes(0) == [Box(0, 128, 128, 768, 768)]  # cells 2..11


def cover(regions, shape):
    """How many cores and how many boxes hold each pixel."""
    cores, boxes = np.zeros(shape, np.int64), np.zeros(shape, np.int64)
    for r in regions:
        cores[r.core.slice_index, r.core.top : r.core.bottom, r.core.left : r.core.right] += 1
        boxes[r.box.slice_index, r.box.top : r.box.bottom, r.box.left : r.box.right] += 1
    return cores, boxes


def test_a_thin_ring_is_cut_into_tiles_whose_cores_hold_each_stroke_pixel_once():
    labels = np.zeros((1, 1280, 1280), np.uint8)
    labels[0, 64 * 2, 64 * 2 : 64 * 18] = labels[0, 64 * 17, 64 * 2 : 64 * 18] = 1
    labels[0, 64 * 2 : 64 * 18, 64 * 2] = labels[0, 64 * 2 : 64 * 18, 64 * 17] = 1
    labels[0, 64 * 10, 64 * 10] = 2
    scan = scan_labels(labels)
    assert scan.boxes(0) == [  # the painted cells of each 512-pixel tile: disjoint
        Box(0, 128, 128, 512, 512),
        Box(0, 128, 512, 192, 1024),
        Box(0, 128, 1024, 512, 1152),
        Box(0, 512, 128, 1024, 192),
        Box(0, 512, 1088, 1024, 1152),
        Box(0, 640, 640, 704, 704),  # the dot
        Box(0, 1024, 128, 1152, 512),
        Box(0, 1024, 1024, 1152, 1152),
        Box(0, 1088, 512, 1152, 1024),
    ]
    # 38 % of the ring's bounding box (cells 2..17), which its single box held before.
    assert sum(b.area for b in scan.boxes(0)) == 397312 < 0.38 * 1024**2
    for margin in (0, 100):
        found = scan.regions(margin)
        cores, boxes = cover(found, labels.shape)
        assert cores.max() == 1 and (cores[labels > 0] == 1).all()
        for _, y, x in np.argwhere(labels):
            (r,) = [r for r in found if r.core.top <= y < r.core.bottom and r.core.left <= x < r.core.right]
            assert r.box.top <= max(y - margin, 0) and r.box.bottom >= min(y + margin + 1, 1280)
            assert r.box.left <= max(x - margin, 0) and r.box.right >= min(x + margin + 1, 1280)
            assert r.core.top % CELL == 0 and r.core.left % CELL == 0  # the split's block grid
            tile = r.core.bottom - r.core.top <= TILE and r.core.right - r.core.left <= TILE
            assert tile or r.core == r.box  # a tile, or a part kept whole
    # 100 pixels of margin: the grown ring fills the slice, cutting it would hold more.
    assert found == [Region(Box(0, 0, 0, 1280, 1280), Box(0, 0, 0, 1280, 1280))]
    tiles = scan.regions(0)
    crops = read_labels(labels, [r.box for r in tiles], [r.core for r in tiles])
    assert sum(int(np.count_nonzero(c)) for c in crops) == np.count_nonzero(labels)  # each pixel once


def test_empty_labels_give_no_box():
    scan = scan_labels(np.zeros((300, 200), np.int32))
    assert scan.cells == {} and scan.top == 0 and scan.boxes(128) == []
    assert not SparseLabels.of(np.zeros((300, 200), np.uint8)).any()


def test_labels_are_read_in_bands_never_whole_and_lazy_arrays_give_the_same_boxes():
    labels = np.zeros((2, 4000, 3000), np.uint8)
    labels[0, 3990:, 2990:] = 3
    labels[1, 1000:1010, 5:7] = 1
    counting = Counting(labels)
    scan = scan_labels(counting, read_bytes=300 * 3000)  # bands of 256 rows
    assert max(np.prod(shape) for shape in counting.reads) == 256 * 3000
    assert counting.pixels_read == labels.size  # each pixel read once
    expected = [Box(0, 3840, 2816, 4000, 3000), Box(1, 832, 0, 1152, 192)]  # 2 cells of margin
    assert scan.boxes(128) == expected
    stored = zarr.create_array(store={}, shape=labels.shape, chunks=(1, 512, 512), dtype=labels.dtype)
    stored[:] = labels
    for lazy in (da.from_array(labels, chunks=(1, 512, 512)), stored):
        assert scan_labels(lazy).boxes(128) == expected
    crops = read_labels(counting, expected)
    assert [c.dtype for c in crops] == [np.int64] * 2
    np.testing.assert_array_equal(crops[1], labels[1, 832:1152, 0:192])


@pytest.mark.parametrize(
    ("labels", "error", "match"),
    [
        (np.full((70, 70), -1, np.int16), ValueError, "must be >= 0"),
        (np.full((70, 70), 1001, np.int32), ValueError, "at most 1000 classes"),
        (np.ones((70, 70), np.float32), TypeError, "must be integers"),
        (np.ones((70, 70), bool), TypeError, "got bool"),
    ],
)
def test_bad_labels_are_refused_like_in_memory_ones(labels, error, match):
    with pytest.raises(error, match=match):
        scan_labels(labels)


def test_a_sparse_snapshot_reads_like_the_labels_and_never_changes():
    labels = np.zeros((2, 700, 900), np.uint8)
    labels[0, 5:9, 600:700] = 2
    labels[1, 650:700, 0:3] = 1
    snapshot = SparseLabels.of(labels)
    assert snapshot.shape == labels.shape and snapshot.dtype == np.uint8
    assert snapshot.any() and snapshot.max() == 2 and np.max(snapshot) == 2
    kept = sum(b.area for b in snapshot._boxes)
    assert kept == 64 * 128 + 60 * 64  # the painted cells (clipped at 700), not 2 x 700 x 900
    labels[0, 100, 100] = 1  # later paint does not reach the snapshot
    assert np.asarray(snapshot)[0, 100, 100] == 0
    labels[0, 100, 100] = 0
    np.testing.assert_array_equal(np.asarray(snapshot), labels)
    np.testing.assert_array_equal(snapshot[1, 600:700, 0:50], labels[1, 600:700, 0:50])
    assert scan_labels(snapshot).boxes(64) == scan_labels(labels).boxes(64)
    with pytest.raises(IndexError):
        snapshot[0, ::2, :]


def test_assemble_copies_what_is_held_and_reads_only_the_new_cells():
    image = np.arange(3 * 600 * 800, dtype=np.float32).reshape(600, 800, 3)
    counting = Counting(image)
    slices = ImageSlices(counting, 2)
    old = Box(0, 128, 128, 256, 320)
    held = {old: assemble(slices, old, {})}
    assert counting.pixels_read == 3 * old.area
    np.testing.assert_array_equal(held[old], np.moveaxis(image[128:256, 128:320], -1, 0))
    counting.reads.clear()
    grown = Box(0, 64, 128, 320, 600)  # holds the old box, clipped at the right border
    crop = assemble(slices, grown, held)
    np.testing.assert_array_equal(crop, np.moveaxis(image[64:320, 128:600], -1, 0))
    assert counting.pixels_read == 3 * (grown.area - old.area)
    assert len(counting.reads) == 3  # the band above, the cells beside the old box, the band below
