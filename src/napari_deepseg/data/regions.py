"""Where the strokes are: the rectangles of a labels array, however large and lazy (numpy, memmap,
dask, zarr), that hold labelled pixels, and a read-only snapshot that keeps only those rectangles.

Labels are read in bands of rows, never whole, into a grid of ``CELL``-pixel cells that says which
cells hold a labelled pixel. Grown by a margin and split into connected parts, the painted cells
give a few disjoint boxes aligned to the cell grid (the validation split's block grid), which are
all a run on a slide needs to read. A part whose box would be mostly empty (a long diagonal or
L-shaped stroke, dots scattered over a slide) is cut instead on a fixed grid of ``TILE``-pixel
tiles: each tile holding painted cells gives a region whose *core* (the tile) owns the labels
and whose box adds the margin of image context around the tile's painted cells.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._cells import CELL, cell_area, cell_boxes, cell_max, grow_cells, tile_regions, to_pixels
from ._cells import TILE as TILE  # the grid a sparse part is cut on (named in the docstring)
from .pairs import check_label_dtype, check_label_range

READ_BYTES = 16 * 2**20  # one band of rows read at a time
# Images trained from the regions around their strokes rather than copied whole (pixels without
# channels): numpy arrays above REGION_PIXELS, memory-mapped and lazy arrays above LAZY_PIXELS.
REGION_PIXELS = 64 * 2**20
LAZY_PIXELS = 4 * 2**20


def is_lazy(array: Any) -> bool:
    """Whether ``array`` is read on demand (dask, zarr, memmap, any array-like) rather than in memory."""
    return not isinstance(array, np.ndarray) or isinstance(array, np.memmap)


def trains_from_regions(array: Any, pixels: int) -> bool:
    """Whether an image of ``pixels`` pixels (channels left out) is trained from its painted regions."""
    return pixels > (LAZY_PIXELS if is_lazy(array) else REGION_PIXELS)


@dataclass(frozen=True, order=True)
class Box:
    """Rows ``top:bottom`` and columns ``left:right`` of slice ``slice_index`` of an ``(S, H, W)`` array."""

    slice_index: int
    top: int
    left: int
    bottom: int
    right: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.bottom - self.top, self.right - self.left

    @property
    def area(self) -> int:
        return (self.bottom - self.top) * (self.right - self.left)

    def intersection(self, other: Box) -> Box | None:
        top, left = max(self.top, other.top), max(self.left, other.left)
        bottom, right = min(self.bottom, other.bottom), min(self.right, other.right)
        if self.slice_index != other.slice_index or top >= bottom or left >= right:
            return None
        return Box(self.slice_index, top, left, bottom, right)

    def within(self, other: Box) -> tuple[slice, slice]:
        """This box's rows and columns in ``other``'s crop (``other`` must hold it)."""
        return slice(self.top - other.top, self.bottom - other.top), slice(
            self.left - other.left, self.right - other.left
        )


def read(
    array: Any, leading: tuple[int, ...], s: int, rows: slice, cols: slice, *, copy: bool = True
) -> np.ndarray:
    """``array[s, rows, cols]`` of the ``(S, H, W)`` view of an array of shape ``(*leading, H, W)``,
    read by basic indexing (so a lazy array reads only that part); a new array unless ``copy`` is
    False (a view of a numpy array then)."""
    index = tuple(int(i) for i in np.unravel_index(s, leading)) if leading else ()
    key = (*index, rows, cols)
    return np.array(array[key], copy=True) if copy else np.asarray(array[key])


@dataclass(frozen=True, order=True)
class Region:
    """Where a run reads around strokes: the image of ``box``, with the labels of ``core`` alone.

    The cores of a scan's regions are disjoint and hold every labelled pixel once; a box holds
    the margin of context around its core's labelled pixels and may overlap other boxes.
    """

    box: Box
    core: Box


@dataclass
class LabelScan:
    """What one blockwise read of a labels array found.

    Attributes
    ----------
    shape
        ``(S, H, W)``: the labels as slices.
    cells
        Per slice with a labelled pixel, which ``CELL`` x ``CELL`` cells hold one (bool grid).
    top, low
        The largest and smallest label (0 for an empty array).
    """

    shape: tuple[int, int, int]
    cells: dict[int, np.ndarray]
    top: int
    low: int

    def regions(self, margin: int) -> list[Region]:
        """Regions whose disjoint cores hold every labelled pixel, and whose boxes hold each with
        at least ``margin`` pixels of context on each side (clipped at the borders), sorted by
        slice, then position.

        Each connected part of the painted cells grown by the margin gives its bounding box (its
        own core), or, when that holds more pixels, the regions of :func:`tile_regions`.
        """
        grow = math.ceil(margin / CELL)
        found: list[Region] = []
        for s, cells in sorted(self.cells.items()):
            for part in cell_boxes(grow_cells(cells, grow)):
                tiles = tile_regions(cells, part, grow)
                if sum(cell_area(b) for b, _ in tiles) < cell_area(part):
                    found += [Region(self._box(s, b), self._box(s, c)) for b, c in tiles]
                else:
                    found.append(Region(self._box(s, part), self._box(s, part)))
        return sorted(found)

    def boxes(self, margin: int) -> list[Box]:
        """The boxes of :meth:`regions` (disjoint for ``margin`` 0)."""
        return [r.box for r in self.regions(margin)]

    def _box(self, s: int, cells: tuple[int, int, int, int]) -> Box:
        return Box(s, *to_pixels(cells, self.shape[1:]))


def scan_labels(labels: Any, *, read_bytes: int = READ_BYTES) -> LabelScan:
    """Read ``labels`` (``(..., H, W)``, numpy or any array-like with basic slicing) band by band.

    Raises
    ------
    TypeError
        For labels that are not integers.
    ValueError
        For negative labels or classes above ``MAX_CLASSES``.
    """
    if isinstance(labels, SparseLabels):
        return labels.scan()
    shape = tuple(int(n) for n in labels.shape)
    check_label_dtype(labels)
    dtype = np.dtype(labels.dtype)
    leading, (height, width) = shape[:-2], shape[-2:]
    count = int(np.prod(leading)) if leading else 1
    rows = max(CELL, read_bytes // max(1, width * dtype.itemsize) // CELL * CELL)
    cells: dict[int, np.ndarray] = {}
    top = low = 0
    for s in range(count):
        bands = []
        for r0 in range(0, height, rows):
            block = read(labels, leading, s, slice(r0, min(r0 + rows, height)), slice(0, width), copy=False)
            if dtype.kind == "i":
                low = min(low, int(block.min()))
            bands.append(cell_max(block))
        grid = np.concatenate(bands)
        top = max(top, int(grid.max()))
        if grid.any():
            cells[s] = grid > 0  # negative labels are refused below
    check_label_range(low, top)
    return LabelScan((count, height, width), cells, top, low)


def read_labels(labels: Any, boxes: list[Box], cores: list[Box] | None = None) -> list[np.ndarray]:
    """int64 copies of the boxes of ``labels`` (``(..., H, W)``); with ``cores``, each box holds
    only the labels of its core (0 elsewhere), and only those are read."""
    if cores is None:
        cores = boxes
    sparse = isinstance(labels, SparseLabels)
    out = []
    for box, core in zip(boxes, cores):
        inner = box.intersection(core)
        crop = np.zeros(box.shape, np.int64)
        if inner is not None:
            crop[inner.within(box)] = labels.crop(inner) if sparse else _read_boxes(labels, [inner])[0]
        out.append(crop)
    return out


_ORIGIN = Box(0, 0, 0, 0, 0)  # a box's rows and columns within it are its own


def _read_boxes(labels: Any, boxes: list[Box]) -> list[np.ndarray]:
    leading = tuple(int(n) for n in labels.shape[:-2])
    return [read(labels, leading, b.slice_index, *b.within(_ORIGIN)) for b in boxes]


class SparseLabels:
    """A read-only snapshot of a labels array that keeps only the boxes holding labelled pixels.

    It has the array's ``shape`` and ``dtype`` and reads like it (basic indexing, ``np.asarray``),
    with zeros outside the boxes; :class:`napari_deepseg.Trainer` and ``update_labels`` take it
    in place of the full array and read only its boxes. Made by :meth:`of`.
    """

    def __init__(
        self, shape: tuple[int, ...], dtype: Any, scan: LabelScan, boxes: list[Box], crops: list[np.ndarray]
    ) -> None:
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)
        self.ndim = len(self.shape)
        self._scan, self._boxes, self._crops = scan, boxes, crops

    @classmethod
    def of(cls, labels: Any, *, read_bytes: int = READ_BYTES) -> SparseLabels:
        """Scan ``labels`` and copy its painted boxes (no margin); the result never changes."""
        scan = scan_labels(labels, read_bytes=read_bytes)
        boxes = scan.boxes(0)
        return cls(tuple(labels.shape), labels.dtype, scan, boxes, _read_boxes(labels, boxes))

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def scan(self) -> LabelScan:
        return self._scan

    def any(self, axis: None = None, out: None = None) -> bool:
        """Whether any pixel is labelled (``np.any`` calls this: nothing is built whole)."""
        return bool(self._scan.cells)

    def max(self, axis: None = None, out: None = None) -> int:
        """The largest label (``np.max`` calls this)."""
        return self._scan.top

    def crop(self, box: Box) -> np.ndarray:
        """The pixels of ``box`` (a new array)."""
        out = np.zeros(box.shape, self.dtype)
        for held, crop in zip(self._boxes, self._crops):
            common = box.intersection(held)
            if common is not None:
                out[common.within(box)] = crop[common.within(held)]
        return out

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        leading = self.shape[:-2]
        if len(key) != self.ndim or not all(isinstance(k, (int, np.integer)) for k in key[:-2]):
            raise IndexError(f"index SparseLabels with {len(leading)} integers and two slices; got {key!r}")
        rows, cols = (range(n)[k] for k, n in zip(key[-2:], self.shape[-2:]))
        if not isinstance(rows, range) or not isinstance(cols, range) or rows.step != 1 or cols.step != 1:
            raise IndexError(f"SparseLabels reads rectangles (slices with step 1); got {key!r}")
        s = int(np.ravel_multi_index(tuple(int(k) for k in key[:-2]), leading)) if leading else 0
        return self.crop(Box(s, rows.start, cols.start, rows.stop, cols.stop))

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = np.zeros(self.shape, self.dtype).reshape(-1, *self.shape[-2:])
        for box, crop in zip(self._boxes, self._crops):
            out[box.slice_index, box.top : box.bottom, box.left : box.right] = crop
        out = out.reshape(self.shape)
        return out if dtype is None else out.astype(dtype)


def assemble(image: Any, box: Box, held: dict[Box, np.ndarray]) -> np.ndarray:
    """The ``(C, h, w)`` image crop of ``box``: what the crops in ``held`` (boxes of the same cell
    grid) already hold is copied from them, only the rest is read from ``image``
    (an :class:`~napari_deepseg.data.pairs.ImageSlices`), in as few rectangles as the cells allow."""
    height, width = box.shape
    out = np.empty((image.shape[1], height, width), image.dtype)
    filled = np.zeros((-(-height // CELL), -(-width // CELL)), bool)
    for old, crop in held.items():
        common = box.intersection(old)
        if common is None:
            continue
        rows, cols = common.within(box)
        old_rows, old_cols = common.within(old)
        out[:, rows, cols] = crop[:, old_rows, old_cols]
        filled[rows.start // CELL : -(-rows.stop // CELL), cols.start // CELL : -(-cols.stop // CELL)] = True
    bands: list[list[Any]] = []  # [first cell row, last + 1, column runs]: rows alike read at once
    for r in range(len(filled)):
        runs = _runs(~filled[r])
        if bands and bands[-1][1] == r and bands[-1][2] == runs:
            bands[-1][1] = r + 1
        elif runs:
            bands.append([r, r + 1, runs])
    for r0, r1, runs in bands:
        rows = slice(r0 * CELL, min(r1 * CELL, height))
        for c0, c1 in runs:
            cols = slice(c0 * CELL, min(c1 * CELL, width))
            out[:, rows, cols] = image.read(
                box.slice_index,
                slice(None),
                slice(box.top + rows.start, box.top + rows.stop),
                slice(box.left + cols.start, box.left + cols.stop),
            )
    if out.dtype.kind == "f" and not np.isfinite(out).all():
        y, x = (int(i) for i in np.argwhere(~np.isfinite(out).all(axis=0))[0])
        where = f"slice {box.slice_index}, " if image.shape[0] > 1 else ""
        raise ValueError(
            f"the image contains NaN or infinite values near the strokes ({where}first at row "
            f"{box.top + y}, column {box.left + x}, in rows {box.top}:{box.bottom}, columns "
            f"{box.left}:{box.right}); clean or fill them first"
        )
    return out


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """``(start, stop)`` of each run of True in a 1D bool array."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2])]
