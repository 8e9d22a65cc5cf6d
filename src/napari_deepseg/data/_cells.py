"""The coarse cell grid that the regions around strokes are found on (numpy and scipy only):
painted cells, their growth by a margin, connected parts as rectangles, and sparse parts cut on a
tile grid."""

from __future__ import annotations

import numpy as np

from .split import BLOCK_SIZE

CELL = BLOCK_SIZE  # boxes start on the split's blocks, so a crop's blocks are the slice's blocks
TILE = 8 * CELL  # the grid a sparse part is cut on (a multiple of CELL: tiles are whole blocks)


def cell_boxes(grid: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Disjoint ``(top, left, bottom, right)`` cell rectangles covering the True cells of ``grid``:
    the bounding box of each connected part, overlapping boxes merged."""
    from scipy import ndimage  # a napari dependency

    parts, _ = ndimage.label(grid)
    boxes = [(s[0].start, s[1].start, s[0].stop, s[1].stop) for s in ndimage.find_objects(parts) if s]
    merged = True
    while merged:  # the boxes of two parts (a ring around a dot) may overlap: one box then
        merged = False
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                a, b = boxes[i], boxes[j]
                if a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]:
                    boxes[i] = (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))
                    del boxes[j]
                    merged = True
                    break
            if merged:
                break
    return sorted(boxes)


def tile_regions(
    cells: np.ndarray, part: tuple[int, int, int, int], grow: int
) -> list[tuple[tuple[int, int, int, int], tuple[int, int, int, int]]]:
    """``(box, core)`` cell rectangles cutting the part box ``part`` of the painted ``cells`` on
    the ``TILE`` grid: per tile holding painted cells, the core is the tile within the part and
    the box the bounding box of those cells grown by ``grow`` cells (within the part, which
    holds every grown cell of its painted cells)."""
    top, left, bottom, right = part
    k = TILE // CELL
    out = []
    for r0 in range(top // k * k, bottom, k):
        rows = (max(r0, top), min(r0 + k, bottom))
        band = cells[rows[0] : rows[1], left:right]
        painted_cols = np.flatnonzero(band.any(axis=0)) + left
        for c0 in sorted({int(c) // k * k for c in painted_cols}):
            cols = (max(c0, left), min(c0 + k, right))
            ys, xs = np.nonzero(cells[rows[0] : rows[1], cols[0] : cols[1]])
            box = (
                max(int(ys.min()) + rows[0] - grow, top),
                max(int(xs.min()) + cols[0] - grow, left),
                min(int(ys.max()) + rows[0] + 1 + grow, bottom),
                min(int(xs.max()) + cols[0] + 1 + grow, right),
            )
            out.append((box, (rows[0], cols[0], rows[1], cols[1])))
    return out


def cell_area(box: tuple[int, int, int, int]) -> int:
    return (box[2] - box[0]) * (box[3] - box[1])


def grow_cells(grid: np.ndarray, cells: int) -> np.ndarray:
    """``grid`` dilated by a square of ``2 * cells + 1`` cells (running sums along each axis)."""
    for axis in (0, 1):
        if cells <= 0:
            break
        n = grid.shape[axis]
        sums = np.cumsum(np.moveaxis(grid, axis, 0), axis=0, dtype=np.int64)
        sums = np.concatenate([np.zeros((1, *sums.shape[1:]), np.int64), sums])
        idx = np.arange(n)
        upper, lower = np.minimum(idx + cells + 1, n), np.maximum(idx - cells, 0)
        grid = np.moveaxis(sums[upper] - sums[lower] > 0, 0, axis)
    return grid


def to_pixels(box: tuple[int, int, int, int], shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    top, left, bottom, right = box
    return top * CELL, left * CELL, min(bottom * CELL, shape[0]), min(right * CELL, shape[1])


def cell_max(block: np.ndarray) -> np.ndarray:
    """The largest label of each ``CELL`` x ``CELL`` cell of a ``(h, W)`` band (``h`` a multiple of
    ``CELL`` but at the bottom): reductions over whole rows run at memory speed."""
    h, w = block.shape
    full_rows, full_cols = h // CELL * CELL, w // CELL * CELL
    rows = [block[:full_rows].reshape(-1, CELL, w).max(axis=1)] if full_rows else []
    if full_rows < h:
        rows.append(block[full_rows:].max(axis=0, keepdims=True))
    by_row = np.concatenate(rows)
    cols = [by_row[:, :full_cols].reshape(len(by_row), -1, CELL).max(axis=2)] if full_cols else []
    if full_cols < w:
        cols.append(by_row[:, full_cols:].max(axis=1, keepdims=True))
    return np.concatenate(cols, axis=1)
