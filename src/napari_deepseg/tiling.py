"""Where the tiles of a large image go and how their predictions are blended (no torch here).

The tile grid is a product of two 1D layouts, so the blending weight of a pixel is the product
of two 1D weights and their sums: no 2D weight map is ever kept.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TilingOptions:
    """``tile_size`` pixels per side (images smaller than a tile are predicted whole),
    ``overlap`` pixels shared by neighbouring tiles, ``batch_size`` tiles per forward pass."""

    # Measured on a 2-core AMX CPU (benchmarks/prediction.py): network throughput per pixel is
    # flat from 256 to 1024-pixel tiles and batching does not raise it, while bigger tiles
    # recompute less overlap (4096x4096: 1.28x the pixels at 1024, 1.89x at 512).
    tile_size: int = 1024
    overlap: int = 128
    batch_size: int = 1

    def __post_init__(self) -> None:
        for name in ("tile_size", "overlap", "batch_size"):  # bool is an int, but not a size
            value = getattr(self, name)
            if not isinstance(value, numbers.Integral) or isinstance(value, bool):
                raise TypeError(f"{name} must be an integer, got {value!r}")
        if self.tile_size < 32:
            raise ValueError(f"tile_size must be at least 32, got {self.tile_size}")
        if not 0 <= self.overlap < self.tile_size:
            raise ValueError(
                f"overlap must be in [0, tile_size), got {self.overlap} for tile {self.tile_size}"
            )
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


def tile_layout(length: int, tile: int, overlap: int) -> tuple[int, list[int]]:
    """Tile length and start offsets covering ``length`` with at least ``overlap`` shared pixels.

    Uses the fewest tiles of at most ``tile`` pixels, then shrinks them (to a multiple of 32) and
    spreads them evenly, so no pixel is computed more often than the overlap requires.
    """
    if length <= tile:
        return length, [0]
    count = math.ceil((length - overlap) / (tile - overlap))
    size = min(tile, -(-math.ceil((length + (count - 1) * overlap) / count) // 32) * 32)
    step = (length - size) / (count - 1)
    return size, [math.floor(i * step) for i in range(count - 1)] + [length - size]


def blend_weights(tile: int, overlap: int, at_start: bool, at_end: bool) -> np.ndarray:
    """1D blending weight of a tile: 1 in its core, a raised-cosine ramp across the overlap.

    The outer quarter of the overlap at an inner edge gets weight 0, so pixels whose view was
    cut by the tile border never count when a neighbour saw them whole; at the image border
    the weight stays 1 because no other tile exists there.
    """
    w = np.ones(tile, dtype=np.float64)
    if overlap > 0:
        margin = overlap // 4
        ramp_len = max(overlap - 2 * margin, 1)
        ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(ramp_len) + 0.5) / ramp_len)
        edge = np.concatenate([np.zeros(margin), ramp])[:tile]
        if not at_start:
            w[: edge.size] = np.minimum(w[: edge.size], edge)
        if not at_end:
            w[tile - edge.size :] = np.minimum(w[tile - edge.size :], edge[::-1])
    return w


@dataclass(frozen=True)
class AxisTiles:
    """The tiles along one axis: their common length, start offsets, 1D blending weights, and
    the sum of those weights at every position of the axis."""

    size: int
    starts: list[int]
    weights: list[np.ndarray]
    total: np.ndarray

    @classmethod
    def along(cls, length: int, tiling: TilingOptions) -> AxisTiles:
        size, starts = tile_layout(length, tiling.tile_size, tiling.overlap)
        weights = [
            blend_weights(size, tiling.overlap, i == 0, i == len(starts) - 1).astype(np.float32)
            for i in range(len(starts))
        ]
        total = np.zeros(length, np.float32)
        for start, w in zip(starts, weights, strict=True):
            total[start : start + size] += w
        return cls(size, starts, weights, total)


def tiling_used(tiling: TilingOptions, height: int, width: int) -> int:
    """The side of the largest tile ``tiling`` cuts from a ``height`` x ``width`` image."""
    return max(tile_layout(n, tiling.tile_size, tiling.overlap)[0] for n in (height, width))


def smaller_tiling(tiling: TilingOptions, height: int, width: int) -> TilingOptions | None:
    """What a prediction that ran out of memory retries with: one tile per forward pass, of half
    the side used (a multiple of 32, at least 32), the overlap kept up to a quarter of the new
    side; ``None`` when neither can get smaller."""
    used = tiling_used(tiling, height, width)
    side = max(32, used // 64 * 32)
    if side >= used:
        return None if tiling.batch_size == 1 else TilingOptions(tiling.tile_size, tiling.overlap, 1)
    return TilingOptions(side, min(tiling.overlap, side // 4), 1)
