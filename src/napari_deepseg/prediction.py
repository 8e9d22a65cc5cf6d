"""Tiled prediction with smooth blending, and the minimum-probability threshold.

Tiles are processed one row of tiles at a time and each finished band of image rows is
handed to a sink, so memory is bounded by the tile batch, one band and the sink's output.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch

from ._device import autocast, eval_mode, resolve_device, resolve_precision, use_channels_last
from .config import Precision
from .data.layout import SliceView
from .data.normalisation import Normalisation
from .tiling import AxisTiles
from .tiling import TilingOptions as TilingOptions  # re-exported: part of PredictionOptions
from .tiling import tile_layout as tile_layout  # re-exported for benchmarks/prediction.py

# Called with (slice index, first row, probabilities (rows, W, K)) for each chunk of finished rows;
# the chunk is a view into a buffer that is reused afterwards.
BandSink = Callable[[int, int, np.ndarray], None]
ProgressCallback = Callable[[int, int], None]  # (tiles done, tiles total)
TILING_FIELDS = ("tile_size", "overlap", "batch_size")


@dataclass(frozen=True)
class PredictionOptions:
    """How the network is run over an image: tiling, device, precision and the run's callbacks.

    Attributes
    ----------
    tiling
        Tile size, overlap and tiles per forward pass (:class:`TilingOptions`).
    device
        Where to run (``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``); ``None``: where
        the network is. :class:`SegmentationModel` moves its network there first
        (``model.to(device)``); the functions here require the network to be there already.
    precision
        ``"auto"`` (bf16 autocast on CPUs with native bf16 units and on CUDA, else fp32),
        ``"bf16"`` or ``"fp32"``.
    progress
        Called with (tiles done, tiles total) after every tile.
    should_stop
        Asked after every tile; returning true aborts with ``InterruptedError``.
    """

    tiling: TilingOptions = TilingOptions()
    device: str | torch.device | None = None
    precision: Precision | str = Precision.AUTO
    progress: ProgressCallback | None = None
    should_stop: Callable[[], bool] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "precision", Precision(self.precision))  # also accepts "bf16"

    def replace(self, **changes: Any) -> PredictionOptions:
        """A copy with some fields changed; ``tile_size``, ``overlap`` and ``batch_size`` change
        the tiling, so ``options.replace(tile_size=512, precision="fp32")`` works."""
        unknown = set(changes) - {f.name for f in fields(self)} - set(TILING_FIELDS)
        if unknown:
            known = ", ".join([*TILING_FIELDS, *(f.name for f in fields(self))])
            raise TypeError(f"unknown prediction option(s) {', '.join(sorted(unknown))}; known: {known}")
        tiling = {k: changes.pop(k) for k in TILING_FIELDS if k in changes}
        if tiling:
            changes["tiling"] = dataclasses.replace(changes.get("tiling", self.tiling), **tiling)
        return dataclasses.replace(self, **changes)

    def device_for(self, module: torch.nn.Module) -> torch.device:
        """The network's device, after checking that it is the one asked for."""
        device = next(module.parameters()).device
        if self.device is not None:
            wanted = resolve_device(self.device)
            if wanted.type != device.type or wanted.index not in (None, device.index):
                raise ValueError(
                    f"the network is on {device}, not {wanted}: move it first (SegmentationModel.to)"
                )
        return device


# Rows per chunk handed to the sink: keeps its temporaries small for very wide images.
SINK_ROWS = 256


def predict_bands(
    module: torch.nn.Module,
    view: SliceView,
    normalisation: Normalisation,
    num_classes: int,
    sink: BandSink,
    options: PredictionOptions = PredictionOptions(),
) -> None:
    """Run the network over every slice of ``view`` tile by tile and feed finished rows to ``sink``.

    Probabilities are accumulated classes-last (rows, W, K) so the per-pixel class reductions
    run over contiguous memory. In ``per_image`` mode the image's bounds are measured once over
    the whole image, so every tile is scaled alike.
    """
    data = view.data
    num_slices, _, height, width = data.shape
    normalisation = normalisation.for_image(data)  # per-image bounds over the whole image, not per tile
    rows, cols = AxisTiles.along(height, options.tiling), AxisTiles.along(width, options.tiling)
    th, ys, tw, xs = rows.size, rows.starts, cols.size, cols.starts
    total = num_slices * len(ys) * len(xs)
    done = 0
    device = options.device_for(module)
    dtype = resolve_precision(options.precision, device)
    channels_last = use_channels_last(device, dtype)
    progress, should_stop = options.progress, options.should_stop
    with eval_mode(module), torch.inference_mode():
        for s in range(num_slices):
            band = np.zeros((th, width, num_classes), np.float32)
            for row, y0 in enumerate(ys):
                tiles = [(i, np.asarray(data[s, :, y0 : y0 + th, x0 : x0 + tw])) for i, x0 in enumerate(xs)]
                for i, probs in _forward_tiles(
                    module, tiles, normalisation, options.tiling.batch_size, device, dtype, channels_last
                ):
                    probs *= rows.weights[row][:, None, None]
                    probs *= cols.weights[i][None, :, None]
                    band[:, xs[i] : xs[i] + tw] += probs
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
                    chunk /= rows.total[y0 + r0 : y0 + r1, None, None]
                    chunk /= cols.total[None, :, None]
                    sink(s, y0 + r0, chunk)
                rest = th - finished
                band[:rest] = band[finished:]  # no overlap between the two when stride >= overlap
                band[rest:] = 0


def _forward_tiles(
    module: torch.nn.Module,
    tiles: list[tuple[int, np.ndarray]],
    normalisation: Normalisation,
    batch_size: int,
    device: torch.device,
    dtype: torch.dtype,
    channels_last: bool,
) -> Iterator[tuple[int, np.ndarray]]:
    """Softmax probabilities of each tile, classes last: (h, w, K) float32, writable."""
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    for start in range(0, len(tiles), batch_size):
        chunk = tiles[start : start + batch_size]
        batch = torch.from_numpy(np.stack([normalisation.apply(t) for _, t in chunk]))
        batch = batch.to(device, memory_format=memory_format)
        with autocast(device, dtype):
            logits = module(batch)
        # channels_last logits are already (N, H, W, K) in memory: the permute is free.
        probs = logits.float().softmax(dim=1).permute(0, 2, 3, 1).contiguous().cpu().numpy()
        for (index, _), p in zip(chunk, probs):
            yield index, p


def predict_probabilities(
    module: torch.nn.Module,
    view: SliceView,
    normalisation: Normalisation,
    num_classes: int,
    options: PredictionOptions = PredictionOptions(),
) -> np.ndarray:
    """Float32 probabilities (K, *leading_shape, H, W) for a whole image."""
    num_slices, _, height, width = view.data.shape
    out = np.empty((num_classes, num_slices, height, width), np.float32)

    def write(s: int, y0: int, chunk: np.ndarray) -> None:
        out[:, s, y0 : y0 + chunk.shape[0]] = np.moveaxis(chunk, -1, 0)

    predict_bands(module, view, normalisation, num_classes, write, options)
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


def predict_compact(
    module: torch.nn.Module,
    view: SliceView,
    normalisation: Normalisation,
    num_classes: int,
    options: PredictionOptions = PredictionOptions(),
) -> CompactProbabilities:
    """Like :func:`predict_probabilities` but keeps only the compact result (2 bytes per pixel)."""
    num_slices, _, height, width = view.data.shape
    out = CompactProbabilities.empty((num_slices, height, width), num_classes)

    def write(s: int, y0: int, chunk: np.ndarray) -> None:
        out.write(chunk, (s, slice(y0, y0 + chunk.shape[0])))

    predict_bands(module, view, normalisation, num_classes, write, options)
    shape = view.labels_shape
    return CompactProbabilities(
        out.best_class.reshape(shape), out.best_probability.reshape(shape), num_classes
    )


def predict_labels(
    module: torch.nn.Module,
    view: SliceView,
    normalisation: Normalisation,
    num_classes: int,
    out: Any,
    min_probability: float = 0.0,
    options: PredictionOptions = PredictionOptions(),
) -> Any:
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
        index = (*leading[s], slice(y0, y0 + chunk.shape[0]))
        out[index] = labels

    predict_bands(module, view, normalisation, num_classes, write, options)
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
            return np.copy(probabilities.best_class)
        # A multiply by the bool mask keeps the dtype and is ~3x faster than np.where here.
        labels: np.ndarray = probabilities.best_class * (probabilities.best_probability >= level)
        return labels
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
            f"probabilities must have shape (K, ...) with at least one class, got {probabilities.shape}"
        )
    if not np.issubdtype(probabilities.dtype, np.floating):
        raise TypeError(f"probabilities must be floating point, got {probabilities.dtype}")
    return probabilities
