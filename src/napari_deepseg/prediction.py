"""Tiled prediction with smooth blending, and the minimum-probability threshold.

Tiles are processed one row of tiles at a time and each finished band of image rows is
handed to a sink, so memory is bounded by the tile batch, one band and the sink's output.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ._device import autocast, eval_mode, use_channels_last
from .data.layout import SliceView
from .data.normalisation import Normalisation

# Called with (slice index, first row, probabilities (rows, W, K)) for each chunk of finished rows;
# the chunk is a view into a buffer that is reused afterwards.
BandSink = Callable[[int, int, np.ndarray], None]
ProgressCallback = Callable[[int, int], None]  # (tiles done, tiles total)


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
        if self.tile_size < 32:
            raise ValueError(f"tile_size must be at least 32, got {self.tile_size}")
        if not 0 <= self.overlap < self.tile_size:
            raise ValueError(
                f"overlap must be in [0, tile_size), got {self.overlap} for tile {self.tile_size}")
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
            w[tile - edge.size:] = np.minimum(w[tile - edge.size:], edge[::-1])
    return w


def _axis_weights(length: int, tile: int, overlap: int
                  ) -> tuple[int, list[int], list[np.ndarray], np.ndarray]:
    """Tile length, starts, each tile's 1D weights and their sum over the axis."""
    size, starts = tile_layout(length, tile, overlap)
    weights = [blend_weights(size, overlap, i == 0, i == len(starts) - 1).astype(np.float32)
               for i in range(len(starts))]
    total = np.zeros(length, np.float32)
    for start, w in zip(starts, weights):
        total[start:start + size] += w
    return size, starts, weights, total


# Rows per chunk handed to the sink: keeps its temporaries small for very wide images.
SINK_ROWS = 256


def predict_bands(
    module: torch.nn.Module,
    view: SliceView,
    normalisation: Normalisation,
    num_classes: int,
    sink: BandSink,
    *,
    tiling: TilingOptions = TilingOptions(),
    device: torch.device = torch.device("cpu"),
    dtype: torch.dtype = torch.float32,
    progress: ProgressCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> None:
    """Run the network over every slice of ``view`` tile by tile and feed finished rows to ``sink``.

    Probabilities are accumulated classes-last (rows, W, K) so the per-pixel class reductions
    run over contiguous memory. In ``per_image`` mode the image's bounds are measured once over
    the whole image, so every tile is scaled alike. The tile grid is a product of two 1D layouts,
    so the sum of the blending weights at a pixel is the product of two 1D sums: no 2D weight map
    is kept.
    """
    data = view.data
    num_slices, _, height, width = data.shape
    normalisation = normalisation.for_image(data)  # per-image bounds over the whole image, not per tile
    th, ys, wys, sum_y = _axis_weights(height, tiling.tile_size, tiling.overlap)
    tw, xs, wxs, sum_x = _axis_weights(width, tiling.tile_size, tiling.overlap)
    total = num_slices * len(ys) * len(xs)
    done = 0
    channels_last = use_channels_last(device, dtype)
    with eval_mode(module), torch.inference_mode():
        for s in range(num_slices):
            band = np.zeros((th, width, num_classes), np.float32)
            for row, y0 in enumerate(ys):
                tiles = [(i, np.asarray(data[s, :, y0:y0 + th, x0:x0 + tw])) for i, x0 in enumerate(xs)]
                for i, probs in _forward_tiles(module, tiles, normalisation, tiling.batch_size,
                                               device, dtype, channels_last):
                    probs *= wys[row][:, None, None]
                    probs *= wxs[i][None, :, None]
                    band[:, xs[i]:xs[i] + tw] += probs
                    done += 1
                    if progress is not None:
                        progress(done, total)
                    if should_stop is not None and should_stop():
                        raise InterruptedError("prediction was cancelled")
                # Rows above the next tile row are final: emit them and slide the band up.
                next_y = ys[row + 1] if row + 1 < len(ys) else y0 + th
                finished = next_y - y0
                for r0 in range(0, finished, SINK_ROWS):
                    r1 = min(r0 + SINK_ROWS, finished)
                    chunk = band[r0:r1]
                    chunk /= sum_y[y0 + r0:y0 + r1, None, None]
                    chunk /= sum_x[None, :, None]
                    sink(s, y0 + r0, chunk)
                rest = th - finished
                band[:rest] = band[finished:]  # no overlap between the two when stride >= overlap
                band[rest:] = 0


def _forward_tiles(module, tiles, normalisation, batch_size, device, dtype,
                   channels_last) -> Iterator[tuple[int, np.ndarray]]:
    """Softmax probabilities of each tile, classes last: (h, w, K) float32, writable."""
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    for start in range(0, len(tiles), batch_size):
        chunk = tiles[start:start + batch_size]
        batch = torch.from_numpy(np.stack([normalisation.apply(t) for _, t in chunk]))
        batch = batch.to(device, memory_format=memory_format)
        with autocast(device, dtype):
            logits = module(batch)
        # channels_last logits are already (N, H, W, K) in memory: the permute is free.
        probs = logits.float().softmax(dim=1).permute(0, 2, 3, 1).contiguous().cpu().numpy()
        for (index, _), p in zip(chunk, probs):
            yield index, p


def predict_probabilities(module, view: SliceView, normalisation: Normalisation, num_classes: int,
                          **kwargs) -> np.ndarray:
    """Float32 probabilities (K, *leading_shape, H, W) for a whole image."""
    num_slices, _, height, width = view.data.shape
    out = np.empty((num_classes, num_slices, height, width), np.float32)

    def write(s: int, y0: int, chunk: np.ndarray) -> None:
        out[:, s, y0:y0 + chunk.shape[0]] = np.moveaxis(chunk, -1, 0)

    predict_bands(module, view, normalisation, num_classes, write, **kwargs)
    return out.reshape(num_classes, *view.leading_shape, height, width)


def _best_class(probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index and value of the largest entry along the last (contiguous) axis; ties: lowest index."""
    best = probabilities.argmax(axis=-1)
    top = np.take_along_axis(probabilities, best[..., None], axis=-1)[..., 0]
    return best, top


@dataclass(frozen=True)
class CompactProbabilities:
    """What the threshold needs, one byte per pixel each: the most probable class (1..K) and
    its probability quantised to 0..255 (steps of 1/255).

    Thresholding this is a single comparison per pixel, fast enough for a slider on 4096x4096.
    """

    best_class: np.ndarray  # uint8 (or uint16 when K > 255), values 1..K
    best_probability: np.ndarray  # uint8, round(p * 255)
    num_classes: int

    @property
    def shape(self) -> tuple[int, ...]:
        return self.best_class.shape

    @classmethod
    def empty(cls, shape: tuple[int, ...], num_classes: int) -> CompactProbabilities:
        return cls(np.zeros(shape, label_dtype(num_classes)), np.zeros(shape, np.uint8), num_classes)

    @classmethod
    def from_probabilities(cls, probabilities: np.ndarray) -> CompactProbabilities:
        probabilities = _check_probabilities(probabilities)
        out = cls.empty(probabilities.shape[1:], probabilities.shape[0])
        out.write(np.moveaxis(probabilities, 0, -1), ())
        return out

    def write(self, probabilities: np.ndarray, index: tuple) -> None:
        """Store float probabilities (..., K), classes last, at ``index`` of the spatial arrays."""
        best, top = _best_class(probabilities)
        self.best_class[index] = best + 1
        self.best_probability[index] = np.rint(np.clip(top, 0, 1) * 255)


def predict_compact(module, view: SliceView, normalisation: Normalisation, num_classes: int,
                    **kwargs) -> CompactProbabilities:
    """Like :func:`predict_probabilities` but keeps only the compact result (2 bytes per pixel)."""
    num_slices, _, height, width = view.data.shape
    out = CompactProbabilities.empty((num_slices, height, width), num_classes)

    def write(s: int, y0: int, chunk: np.ndarray) -> None:
        out.write(chunk, (s, slice(y0, y0 + chunk.shape[0])))

    predict_bands(module, view, normalisation, num_classes, write, **kwargs)
    shape = view.labels_shape
    return CompactProbabilities(out.best_class.reshape(shape), out.best_probability.reshape(shape),
                                num_classes)


def predict_labels(module, view: SliceView, normalisation: Normalisation, num_classes: int,
                   out: Any, min_probability: float = 0.0, **kwargs) -> Any:
    """Thresholded labels written band by band into ``out`` (any array with numpy slicing of the
    image's spatial shape: numpy, ``np.memmap``, a memory-mapped TIFF, zarr). Nothing else of
    image size is held in memory, so the result can be larger than RAM."""
    spatial = view.labels_shape
    if tuple(out.shape) != spatial:
        raise ValueError(f"out has shape {tuple(out.shape)} but the labels have shape {spatial}")
    if not np.issubdtype(out.dtype, np.integer) or np.iinfo(out.dtype).max < num_classes:
        raise TypeError(f"out must be an integer array that holds {num_classes}; got {out.dtype}")
    _check_min_probability(min_probability)
    leading = [np.unravel_index(s, view.leading_shape) for s in range(view.num_slices)]

    def write(s: int, y0: int, chunk: np.ndarray) -> None:
        best, top = _best_class(chunk)
        labels = (best + 1).astype(out.dtype)
        if min_probability > 0:
            labels *= top >= min_probability
        out[(*leading[s], slice(y0, y0 + chunk.shape[0]))] = labels

    predict_bands(module, view, normalisation, num_classes, write, **kwargs)
    return out


def label_dtype(num_classes: int) -> type[np.unsignedinteger]:
    """The smallest unsigned type for labels 0..num_classes."""
    return np.uint8 if num_classes < 256 else np.uint16


def _check_min_probability(min_probability: float) -> None:
    if isinstance(min_probability, bool) or not isinstance(min_probability, (int, float, np.number)):
        raise TypeError(f"min_probability must be a number in [0, 1], got {type(min_probability).__name__}")
    if not 0.0 <= float(min_probability) <= 1.0:
        raise ValueError(f"min_probability must be in [0, 1], got {min_probability!r}")


def apply_threshold(probabilities: np.ndarray | CompactProbabilities, min_probability: float) -> np.ndarray:
    """Labels from probabilities: each pixel gets its most probable class 1..K if that probability
    is at least ``min_probability``, else 0 (unclassified).

    ``probabilities`` is float (K, ...) as returned by ``predict_proba``, or a
    :class:`CompactProbabilities` (then compared at its 1/255 resolution). ``min_probability=0``
    classifies every pixel. Ties go to the lower class number. Returns uint8 (uint16 for K > 255).
    """
    _check_min_probability(min_probability)
    if isinstance(probabilities, CompactProbabilities):
        level = math.ceil(float(min_probability) * 255 - 1e-9)
        if level <= 0:
            return probabilities.best_class.copy()
        # A multiply by the bool mask keeps the dtype and is ~3x faster than np.where here.
        return probabilities.best_class * (probabilities.best_probability >= level)
    probabilities = _check_probabilities(probabilities)
    best, top = _best_class(np.moveaxis(probabilities, 0, -1))
    labels = (best + 1).astype(label_dtype(probabilities.shape[0]))
    if min_probability > 0:
        labels[top < min_probability] = 0
    return labels


def _check_probabilities(probabilities: np.ndarray) -> np.ndarray:
    probabilities = np.asarray(probabilities)
    if probabilities.ndim < 2 or probabilities.shape[0] < 1 or probabilities.size == 0:
        raise ValueError(
            f"probabilities must have shape (K, ...) with at least one class, got {probabilities.shape}")
    if not np.issubdtype(probabilities.dtype, np.floating):
        raise TypeError(f"probabilities must be floating point, got {probabilities.dtype}")
    return probabilities
