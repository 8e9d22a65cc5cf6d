"""The compact result of a prediction and the minimum-probability threshold (numpy only).

Kept apart from inference so that the threshold slider only re-thresholds: one comparison per
pixel on the compact result, fast enough for 4096x4096. The compact result's two arrays may also be
on disk (zarr, memory-mapped ``.npy``): it is then thresholded band by band, or one window at a time
(:meth:`CompactProbabilities.window`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

# Pixels per band when float probabilities are reduced: the temporaries stay a few MB whatever
# the image size (a whole-image argmax held a classes-last copy and int64 indices: 1.3 GB at 8192²).
BAND_PIXELS = 1 << 20


@dataclass(frozen=True)
class CompactProbabilities:
    """What the threshold needs, one byte per pixel each: the most probable class (1..K) and
    its probability quantised to 0..255 (steps of 1/255).

    Thresholding this is a single comparison per pixel, fast enough for a slider on 4096x4096.
    The two arrays are numpy arrays, or any arrays with numpy slicing (zarr, ``np.memmap``) for
    results larger than memory: :func:`apply_threshold` then reads them band by band and
    :meth:`window` reads one part.
    """

    best_class: Any  # uint8 (or uint16 when K > 255), values 1..K
    best_probability: Any  # uint8, round(p * 255)
    num_classes: int

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.best_class.shape)

    @classmethod
    def empty(cls, shape: tuple[int, ...], num_classes: int) -> CompactProbabilities:
        return cls(np.zeros(shape, label_dtype(num_classes)), np.zeros(shape, np.uint8), num_classes)

    @classmethod
    def from_probabilities(cls, probabilities: np.ndarray) -> CompactProbabilities:
        probabilities = _check_probabilities(probabilities)
        out = cls.empty(probabilities.shape[1:], probabilities.shape[0])
        for index in _bands(probabilities.shape[1:]):
            labels, top = most_probable_class(probabilities[(slice(None),) + tuple(index)])
            out.best_class[index] = labels
            out.best_probability[index] = np.rint(np.clip(top, 0, 1) * 255)
        return out

    @property
    def in_memory(self) -> bool:
        """Whether both arrays are numpy arrays in memory (not memory maps, zarr, ...)."""
        return all(
            isinstance(a, np.ndarray) and not isinstance(a, np.memmap)
            for a in (self.best_class, self.best_probability)
        )

    def window(self, index: Any) -> CompactProbabilities:
        """The part at ``index`` (numpy slicing of the spatial arrays), read into memory."""
        return CompactProbabilities(
            np.asarray(self.best_class[index]), np.asarray(self.best_probability[index]), self.num_classes
        )

    def check_output(self, shape: tuple[int, ...], num_classes: int) -> None:
        """Refuse, with what to change, arrays that cannot take the result of ``shape`` and
        ``num_classes`` (``predict_compact(out=...)``)."""
        if self.num_classes != num_classes:
            raise ValueError(f"out is for {self.num_classes} classes but the model has {num_classes}")
        for name, array in (("best_class", self.best_class), ("best_probability", self.best_probability)):
            if not hasattr(array, "shape") or not hasattr(array, "dtype"):
                raise TypeError(
                    f"out.{name} must be an array (numpy, memmap, zarr), got {type(array).__name__}"
                )
            if tuple(array.shape) != shape:
                raise ValueError(
                    f"out.{name} has shape {tuple(array.shape)} but the labels have shape {shape}"
                )
            if isinstance(array, np.ndarray) and not array.flags.writeable:
                raise ValueError(f"out.{name} is read-only; pass a writable array")
        kind = np.dtype(self.best_class.dtype)
        if not np.issubdtype(kind, np.integer) or np.iinfo(kind).max < num_classes:
            raise TypeError(f"out.best_class must be an integer array that holds {num_classes}; got {kind}")
        if np.dtype(self.best_probability.dtype) != np.uint8:
            raise TypeError(
                f"out.best_probability must be uint8 (probability x 255); got {self.best_probability.dtype}"
            )

    def write(self, probabilities: np.ndarray, index: tuple) -> None:
        """Store float probabilities (..., K), classes last, at ``index`` of the spatial arrays."""
        labels, top = most_probable_class(np.moveaxis(probabilities, -1, 0))
        self.best_class[index] = labels
        self.best_probability[index] = np.rint(np.clip(top, 0, 1) * 255)


def label_dtype(num_classes: int) -> type[np.unsignedinteger]:
    """The smallest unsigned type for labels 0..num_classes."""
    return np.uint8 if num_classes < 256 else np.uint16


def check_min_probability(min_probability: float) -> None:
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
    A compact result on disk (zarr, memory maps) is read chunk by chunk (band by band) into the
    returned numpy array; only that array is of image size.
    """
    check_min_probability(min_probability)
    if isinstance(probabilities, CompactProbabilities):
        level = probability_level(min_probability)
        if probabilities.in_memory:
            return _threshold_compact(probabilities.best_class, probabilities.best_probability, level)
        out = np.empty(probabilities.shape, probabilities.best_class.dtype)
        chunks = getattr(probabilities.best_class, "chunks", None)  # zarr's: one size per axis
        if isinstance(chunks, tuple) and all(isinstance(c, (int, np.integer)) for c in chunks):
            indices = _chunk_grid(out.shape, chunks)
        else:  # memory maps (and dask's chunks, a tuple of sizes per axis)
            indices = _bands(out.shape)
        for index in indices:
            part = probabilities.window(index)
            out[index] = _threshold_compact(part.best_class, part.best_probability, level)
        return out
    probabilities = _check_probabilities(probabilities)
    labels = np.empty(probabilities.shape[1:], label_dtype(probabilities.shape[0]))
    for index in _bands(labels.shape):
        band, top = most_probable_class(probabilities[(slice(None),) + tuple(index)])
        if min_probability > 0:
            band *= top >= min_probability
        labels[index] = band
    return labels


def probability_level(min_probability: float) -> int:
    """The quantised probability (0..255) that a pixel of a compact result must reach."""
    check_min_probability(min_probability)
    return math.ceil(float(min_probability) * 255 - 1e-9)


def _threshold_compact(best_class: np.ndarray, best_probability: np.ndarray, level: int) -> np.ndarray:
    if level <= 0:
        return np.copy(best_class)
    # A multiply by the bool mask keeps the dtype and is ~3x faster than np.where here.
    labels: np.ndarray = best_class * (best_probability >= level)
    return labels


def _bands(spatial: tuple[int, ...]) -> Iterator[tuple]:
    """Indices of the spatial array in bands of about ``BAND_PIXELS``: whole rows of the last two
    axes, one leading index (plane, time point) at a time."""
    if len(spatial) == 1:
        for i0 in range(0, spatial[0], BAND_PIXELS):
            yield (slice(i0, i0 + BAND_PIXELS),)
        return
    rows = max(1, BAND_PIXELS // max(1, spatial[-1]))
    for lead in np.ndindex(*spatial[:-2]):
        for r0 in range(0, spatial[-2], rows):
            yield (*lead, slice(r0, r0 + rows))


def _chunk_grid(shape: tuple[int, ...], chunks: tuple[int, ...]) -> Iterator[tuple]:
    """Indices of every chunk of an array stored in ``chunks``: each is read (decompressed) once,
    where a band of a few rows would decompress whole rows of chunks for each band."""
    ranges = [range(0, n, c) for n, c in zip(shape, chunks, strict=True)]
    for starts in itertools.product(*ranges):
        yield tuple(slice(s, s + c) for s, c in zip(starts, chunks))


def most_probable_class(probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Most probable class 1..K (label dtype) and its probability (float) of a (K, ...) block.

    One pass per class over contiguous planes: 2.3x faster than an argmax over the class axis,
    which copies the block classes-last first. Ties go to the lower class (strict ``>``).
    """
    top = np.array(probabilities[0], dtype=np.result_type(probabilities.dtype, np.float32))
    labels = np.ones(top.shape, label_dtype(probabilities.shape[0]))
    for k in range(1, probabilities.shape[0]):
        plane = probabilities[k]
        labels[plane > top] = k + 1
        np.maximum(top, plane, out=top)
    return labels, top


def _check_probabilities(probabilities: np.ndarray) -> np.ndarray:
    probabilities = np.asarray(probabilities)
    if probabilities.ndim < 2 or probabilities.shape[0] < 1 or probabilities.size == 0:
        raise ValueError(
            f"probabilities must have shape (K, ...) with at least one class, got {probabilities.shape}"
        )
    if not np.issubdtype(probabilities.dtype, np.floating):
        raise TypeError(f"probabilities must be floating point, got {probabilities.dtype}")
    return probabilities
