"""Tiled prediction with smooth blending; the threshold of its result is in ``threshold.py``.

Tiles are processed one row of tiles at a time and each finished band of image rows is
handed to a sink, so memory is bounded by the tile batch, one band and the sink's output.
A prediction that runs out of memory is run once more with smaller tiles.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from ._device import autocast, eval_mode, resolve_precision, use_channels_last
from .data.layout import SliceView
from .data.normalisation import Normalisation
from .errors import DeviceOutOfMemoryError, is_out_of_memory, release_cached_memory
from .models._folding import inference_network
from .prediction_options import TILING_FIELDS as TILING_FIELDS
from .prediction_options import PredictionOptions as PredictionOptions
from .prediction_options import ProgressCallback as ProgressCallback
from .threshold import CompactProbabilities as CompactProbabilities
from .threshold import apply_threshold as apply_threshold
from .threshold import check_min_probability, most_probable_class
from .threshold import label_dtype as label_dtype
from .tiling import AxisTiles, smaller_tiling, tiling_used
from .tiling import TilingOptions as TilingOptions  # re-exported: part of PredictionOptions
from .tiling import tile_layout as tile_layout  # re-exported for benchmarks/prediction.py

# Called with (slice index, first row, probabilities (rows, W, K)) for each chunk of finished rows;
# the chunk is a view into a buffer that is reused afterwards.
BandSink = Callable[[int, int, np.ndarray], None]

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

    When the device runs out of memory, the whole prediction runs once more with the tiling of
    :func:`~napari_deepseg.tiling.smaller_tiling` (a ``RuntimeWarning`` says so); ``sink`` then
    gets the rows again from the first, which sinks that write by position do not notice.

    Raises
    ------
    DeviceOutOfMemoryError
        When the smaller tiles run out of memory too, or there are none smaller.
    InterruptedError
        When ``options.should_stop`` returned true.
    """
    device = options.device_for(module)
    height, width = view.data.shape[2:]
    failure = _out_of_memory(_predict_bands, module, view, normalisation, num_classes, sink, options)
    if failure is None:
        return
    release_cached_memory(device)
    used = tiling_used(options.tiling, height, width)
    what = f"out of memory on {device} predicting {height} x {width} pixels with tiles of {used} pixels"
    on_cpu = "" if device.type == "cpu" else ", or predict on the CPU"
    smaller = smaller_tiling(options.tiling, height, width)
    if smaller is None:
        raise DeviceOutOfMemoryError(
            f"{what}, the smallest: predict a smaller image or crop{on_cpu} ({failure})"
        )
    retry, side = options.replace(tiling=smaller), tiling_used(smaller, height, width)
    warnings.warn(
        f"{what} ({failure}); predicting again with tiles of {side}, one per pass",
        RuntimeWarning,
        stacklevel=2,
    )
    failure = _out_of_memory(_predict_bands, module, view, normalisation, num_classes, sink, retry)
    if failure is None:
        return
    release_cached_memory(device)
    raise DeviceOutOfMemoryError(
        f"{what} and again with {side}: lower the tile size (tile_size, "
        f"--tile-size) or predict a smaller image or crop{on_cpu} ({failure})"
    )


def _out_of_memory(run: Callable[..., None], *args: Any) -> str | None:
    """``run(*args)``; the first line of its error when it ran out of memory, else ``None``. The
    error itself is dropped here: its traceback holds the failed pass's tensors."""
    try:
        run(*args)
    except Exception as err:
        if isinstance(err, DeviceOutOfMemoryError) or not is_out_of_memory(err):
            raise
        return (str(err) or type(err).__name__).splitlines()[0]
    return None


def _predict_bands(
    module: torch.nn.Module,
    view: SliceView,
    normalisation: Normalisation,
    num_classes: int,
    sink: BandSink,
    options: PredictionOptions,
) -> None:
    data = view.data
    num_slices, _, height, width = data.shape
    normalisation = normalisation.for_image(data)  # per-image bounds over the whole image, not per tile
    rows, cols = AxisTiles.along(height, options.tiling), AxisTiles.along(width, options.tiling)
    th, ys, tw, xs = rows.size, rows.starts, cols.size, cols.starts
    total = num_slices * len(ys) * len(xs)
    done = 0
    device = options.device_for(module)
    dtype = resolve_precision(options.precision, device)
    # Inference takes channels_last on the CPU whatever the precision (1.1-1.4x in fp32 too,
    # benchmarks/inference_speed.py); training keeps use_channels_last's choice.
    channels_last = device.type == "cpu" or use_channels_last(device, dtype)
    progress, should_stop = options.progress, options.should_stop
    with eval_mode(module), torch.inference_mode():
        network = inference_network(module)  # BatchNorms folded into their convolutions
        for s in range(num_slices):
            band = np.zeros((th, width, num_classes), np.float32)
            for row, y0 in enumerate(ys):
                tiles = [(i, np.asarray(data[s, :, y0 : y0 + th, x0 : x0 + tw])) for i, x0 in enumerate(xs)]
                for i, probs in _forward_tiles(
                    network, tiles, normalisation, options.tiling.batch_size, device, dtype, channels_last,
                    options.mirroring,
                ):  # fmt: skip
                    blend_tile(band, (y0, 0), probs, (y0, xs[i]), rows.weights[row], cols.weights[i])
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
                    divide_by_weights(chunk, rows.total[y0 + r0 : y0 + r1], cols.total)
                    sink(s, y0 + r0, chunk)
                rest = th - finished
                band[:rest] = band[finished:]  # no overlap between the two when stride >= overlap
                band[rest:] = 0


def blend_tile(
    acc: np.ndarray,
    origin: tuple[int, int],
    probs: np.ndarray,
    at: tuple[int, int],
    row_weights: np.ndarray,
    col_weights: np.ndarray,
) -> None:
    """Weight a tile's probabilities ``probs`` (h, w, K) in place by its blending weights and add
    the part that lies inside ``acc`` (rows, cols, K) to it.

    ``origin`` and ``at`` are the image positions (row, column) of ``acc``'s and the tile's first
    pixel. The local path and every cluster task blend with this, in the same tile order, so each
    pixel's sum is the same sequence of float32 operations in both.
    """
    probs *= row_weights[:, None, None]
    probs *= col_weights[None, :, None]
    (ay, ax), (ty, tx) = origin, at
    y0, y1 = max(ty, ay), min(ty + probs.shape[0], ay + acc.shape[0])
    x0, x1 = max(tx, ax), min(tx + probs.shape[1], ax + acc.shape[1])
    acc[y0 - ay : y1 - ay, x0 - ax : x1 - ax] += probs[y0 - ty : y1 - ty, x0 - tx : x1 - tx]


def divide_by_weights(acc: np.ndarray, row_total: np.ndarray, col_total: np.ndarray) -> None:
    """Finish a blend in place: divide ``acc`` (rows, cols, K) by the sums of the weights of its
    rows and columns (the ``AxisTiles.total`` of the pixels it covers)."""
    acc /= row_total[:, None, None]
    acc /= col_total[None, :, None]


# The mirror images averaged by PredictionOptions.mirroring: left-right, up-down, both.
MIRRORS = ((3,), (2,), (2, 3))


def _forward_tiles(
    module: torch.nn.Module,
    tiles: list[tuple[int, np.ndarray]],
    normalisation: Normalisation,
    batch_size: int,
    device: torch.device,
    dtype: torch.dtype,
    channels_last: bool,
    mirroring: bool = False,
) -> Iterator[tuple[int, np.ndarray]]:
    """Softmax probabilities of each tile, classes last: (h, w, K) float32, writable.

    ``mirroring``: the mean of the probabilities of the tile and of its three mirror images
    (left-right, up-down, both), each mirrored back first.
    """
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    for start in range(0, len(tiles), batch_size):
        chunk = tiles[start : start + batch_size]
        for _, tile in chunk:  # the bounds saw a grid of samples only: a stray NaN shows here
            if tile.dtype.kind == "f" and not np.isfinite(tile).all():
                raise ValueError("the image contains NaN or infinite values; clean or fill them first")
        batch = torch.from_numpy(np.stack([normalisation.apply(t) for _, t in chunk]))
        batch = batch.to(device, memory_format=memory_format)
        with autocast(device, dtype):
            logits = module(batch)
        probs_t = logits.float().softmax(dim=1)
        if mirroring:
            for dims in MIRRORS:
                with autocast(device, dtype):
                    mirrored = module(batch.flip(dims))
                probs_t += mirrored.float().softmax(dim=1).flip(dims)
            probs_t /= 1 + len(MIRRORS)
        # channels_last logits are already (N, H, W, K) in memory: the permute is free.
        probs = probs_t.permute(0, 2, 3, 1).contiguous().cpu().numpy()
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


def predict_compact(
    module: torch.nn.Module,
    view: SliceView,
    normalisation: Normalisation,
    num_classes: int,
    options: PredictionOptions = PredictionOptions(),
    out: CompactProbabilities | None = None,
) -> CompactProbabilities:
    """Like :func:`predict_probabilities` but keeps only the compact result (2 bytes per pixel).

    ``out``: a :class:`CompactProbabilities` whose two arrays (of the labels' shape; numpy,
    ``np.memmap``, zarr, anything with numpy slice assignment) receive the result band by band,
    so it can be larger than memory; it is returned.
    """
    if out is None:
        num_slices, _, height, width = view.data.shape
        flat = CompactProbabilities.empty((num_slices, height, width), num_classes)
        predict_bands(module, view, normalisation, num_classes, _compact_sink(flat, None), options)
        shape = view.labels_shape
        return CompactProbabilities(
            flat.best_class.reshape(shape), flat.best_probability.reshape(shape), num_classes
        )
    if not isinstance(out, CompactProbabilities):
        raise TypeError(f"out must be a CompactProbabilities (two arrays), got {type(out).__name__}")
    out.check_output(view.labels_shape, num_classes)
    leading = [np.unravel_index(s, view.leading_shape) for s in range(view.num_slices)]
    predict_bands(module, view, normalisation, num_classes, _compact_sink(out, leading), options)
    return out


def _compact_sink(out: CompactProbabilities, leading: list[tuple[Any, ...]] | None) -> BandSink:
    # ``leading``: the index of each slice in arrays of the labels' shape; None: arrays (S, H, W).
    def write(s: int, y0: int, chunk: np.ndarray) -> None:
        lead = (s,) if leading is None else tuple(leading[s])
        out.write(chunk, (*lead, slice(y0, y0 + chunk.shape[0])))

    return write


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
    check_min_probability(min_probability)
    leading = [np.unravel_index(s, view.leading_shape) for s in range(view.num_slices)]

    def write(s: int, y0: int, chunk: np.ndarray) -> None:
        labels, top = most_probable_class(np.moveaxis(chunk, -1, 0))
        labels = labels.astype(out.dtype, copy=False)
        if min_probability > 0:
            labels *= top >= min_probability
        index = (*leading[s], slice(y0, y0 + chunk.shape[0]))
        out[index] = labels

    predict_bands(module, view, normalisation, num_classes, write, options)
    return out
