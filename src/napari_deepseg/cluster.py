"""Prediction on a dask.distributed cluster, block by block, with the labels of the local path.

The labels are cut into blocks of whole write chunks, one task per block. A task runs the network
on every tile of the *whole image's* grid (``AxisTiles.along``) whose blending weight is non-zero
in its block, weights the tiles as the local path does, adds them in its order (tile rows, then
tiles along a row) and divides by the whole image's weight sums. Tiles crossing a block border are
computed by both blocks, each keeping its own pixels: every pixel gets the local path's sum, term
for term, so fp32 labels are bit-identical on the same kind of device with the same number of
torch threads (``worker_threads``: another count changes the last bits of a convolution).

Bounds are measured once, on the client; the model file's bytes are scattered to every worker
once and each worker process loads them once (``_model``, keyed by SHA-256). Tasks read their own
region (zarr / dask images, memory-mapped TIFFs; numpy regions travel with the task) and write
their block into a zarr ``out`` on disk or object storage, else return it to the client. They are
idempotent, so dask's retries and the rescheduling of a killed worker's tasks give the same result.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import math
import mmap
import tempfile
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .data.layout import SliceView
from .data.normalisation import Normalisation
from .prediction import (
    PredictionOptions,
    apply_threshold,
    blend_tile,
    divide_by_weights,
    label_dtype,
    predict_bands,
)
from .threshold import check_min_probability
from .tiling import AxisTiles, TilingOptions

if TYPE_CHECKING:
    from .segmentation_model import SegmentationModel

DEFAULT_BLOCK = 4096  # pixels per side of a task's block: ~16 tiles of 1024 (with overlap ~20 %)
WORKER_STORES = ("LocalStore", "FsspecStore", "ObjectStore")  # zarr stores workers can write
CLUSTER_EXTRA = 'pip install "napari-deepseg[cluster]"'
_MODELS: dict[str, Any] = {}  # in each worker process: the loaded models by file digest
_LOADING = threading.Lock()


def _model(digest: str, data: bytes, device: str | None, threads: int | None) -> Any:
    """The model of file bytes ``data``, loaded once per worker process (the last two kept)."""
    with _LOADING:
        if digest not in _MODELS:
            import torch

            from .segmentation_model import SegmentationModel

            if threads:
                torch.set_num_threads(threads)
            with tempfile.TemporaryDirectory() as folder:
                path = Path(folder) / "model.safetensors"
                path.write_bytes(data)
                model = SegmentationModel.load(path)
            model.module.eval()
            while len(_MODELS) >= 2:
                _MODELS.pop(next(iter(_MODELS)))
            _MODELS[digest] = model.to(device) if device else model
        return _MODELS[digest]


class MemmapFile:
    """A memory-mapped file that pickles as its name: workers map it themselves."""

    def __init__(self, filename: str, offset: int, shape: tuple[int, ...], dtype: Any) -> None:
        self.filename, self.offset = filename, offset
        self.shape, self.dtype, self.ndim = shape, np.dtype(dtype), len(shape)

    def __getitem__(self, index: Any) -> np.ndarray:
        array = np.memmap(self.filename, self.dtype, mode="r", offset=self.offset, shape=self.shape)
        return np.array(array[index])


def shareable(image: Any) -> Any:
    """``image`` as workers can read it: a whole memory-mapped file becomes a dask array over
    :class:`MemmapFile` (else the data itself would travel)."""
    whole = isinstance(image, np.memmap) and isinstance(image.base, mmap.mmap) and image.filename
    if whole and image.flags.c_contiguous:
        import dask.array as da

        source = MemmapFile(image.filename, image.offset, image.shape, image.dtype)
        return da.from_array(source, chunks=(1,) * (image.ndim - 2) + (2048, 2048), asarray=False)
    return image


class _Region:  # the pixels a task reads: numpy, or a lazy dask array computed in the task
    __slots__ = ("data",)

    def __init__(self, data: Any) -> None:
        self.data = data

    def read(self) -> np.ndarray:
        if isinstance(self.data, np.ndarray):
            return self.data
        return np.asarray(self.data.compute(scheduler="synchronous"))


@dataclass(frozen=True)
class _Job:
    digest: str
    device: str | None
    threads: int | None
    region: _Region
    origin: tuple[int, int]  # image position of the region's first pixel
    block: tuple[int, int, int, int]  # r0, r1, c0, c1
    tiles: tuple[tuple[int, ...], tuple[int, ...]]  # tile rows and tile columns needed
    shape: tuple[int, int]
    normalisation: Normalisation
    options: PredictionOptions
    min_probability: float
    out: Any  # a zarr array to write into, or None
    out_index: tuple[int, ...]  # the leading index of the block's slice in the labels


@functools.lru_cache(maxsize=8)
def _axis(length: int, tiling: TilingOptions) -> AxisTiles:
    return AxisTiles.along(length, tiling)


def _needed(axis: AxisTiles, start: int, stop: int) -> tuple[int, ...]:
    """Tiles whose non-zero weights reach into [start, stop); the others only ever add 0."""
    spans = [
        (s + np.flatnonzero(w)[0], s + np.flatnonzero(w)[-1] + 1) for s, w in zip(axis.starts, axis.weights)
    ]
    return tuple(i for i, (first, end) in enumerate(spans) if first < stop and end > start)


def _tile_probabilities(module: Any, tile: np.ndarray, job: _Job, classes: int) -> np.ndarray:
    # A view of exactly one tile is predicted whole, with weights 1: the network's probabilities.
    out = np.empty((*tile.shape[1:], classes), np.float32)

    def sink(s: int, y0: int, chunk: np.ndarray) -> None:
        out[y0 : y0 + chunk.shape[0]] = chunk

    predict_bands(module, SliceView(tile[None], (), None), job.normalisation, classes, sink, job.options)
    return out


def predict_block(job: _Job, model_file: bytes) -> np.ndarray | None:
    """The task: labels of one block (written into ``job.out`` when given, else returned)."""
    model = _model(job.digest, model_file, job.device, job.threads)
    rows, cols = _axis(job.shape[0], job.options.tiling), _axis(job.shape[1], job.options.tiling)
    r0, r1, c0, c1 = job.block
    data, (oy, ox) = job.region.read(), job.origin
    acc = np.zeros((r1 - r0, c1 - c0, model.num_classes), np.float32)
    for i in job.tiles[0]:
        y0 = rows.starts[i]
        for j in job.tiles[1]:
            x0 = cols.starts[j]
            tile = data[:, y0 - oy : y0 - oy + rows.size, x0 - ox : x0 - ox + cols.size]
            probs = _tile_probabilities(model.module, tile, job, model.num_classes)
            blend_tile(acc, (r0, c0), probs, (y0, x0), rows.weights[i], cols.weights[j])
    divide_by_weights(acc, rows.total[r0:r1], cols.total[c0:c1])
    labels = apply_threshold(np.moveaxis(acc, -1, 0), job.min_probability)
    if job.out is None:
        return labels
    index = (*job.out_index, slice(r0, r1), slice(c0, c1))
    job.out[index] = labels
    return None


def _write_unit(out: Any) -> tuple[int, int] | None:
    # The chunk (or shard) a zarr ``out`` is written in, when workers can write it.
    if type(getattr(out, "store", None)).__name__ not in WORKER_STORES:
        return None
    unit = tuple(getattr(out, "shards", None) or out.chunks)
    if any(n != 1 for n in unit[:-2]):
        raise ValueError(f"out's chunks {unit} must be 1 along the leading axes (one plane per task)")
    return int(unit[-2]), int(unit[-1])


def _blocks(length: int, block: int) -> Iterator[tuple[int, int]]:
    yield from ((start, min(start + block, length)) for start in range(0, length, block))


def predict_on_cluster(
    model: SegmentationModel,
    image: Any,
    client: Any,
    *,
    options: PredictionOptions = PredictionOptions(),
    min_probability: float = 0.0,
    out: Any = None,
    channel_axis: int | None = None,
    block_size: int = DEFAULT_BLOCK,
    worker_threads: int | None = None,
    retries: int = 2,
) -> Any:
    """Labels of ``image`` predicted by ``client``'s workers; equal to ``model.predict(image)``.

    Parameters
    ----------
    client
        A ``distributed.Client`` (``LocalCluster``, dask-jobqueue, dask-cuda, a scheduler address).
    out
        Where the labels go: a zarr array on disk / object storage that the workers can reach
        is written by them, block by block; anything else (numpy, memmap, ``None``: a new numpy
        array) is written on the client as the blocks arrive. Returned.
    block_size
        Pixels per side of a task's block, rounded to whole chunks of a zarr ``out``.
    worker_threads
        torch threads per worker (``None``: as the workers are set up; distributed's nanny sets
        ``OMP_NUM_THREADS=1``). The local path's count gives bit-identical fp32 labels.
    retries
        How often dask reruns a failed task.
    """
    if importlib.util.find_spec("distributed") is None:
        raise ImportError(
            f"prediction on a cluster needs dask.distributed; install the cluster extra: {CLUSTER_EXTRA}"
        )
    check_min_probability(min_probability)
    if block_size < 1:
        raise ValueError(f"block_size must be a positive integer, got {block_size!r}")
    image = shareable(image)
    view = model.view(image, channel_axis)
    classes, (height, width) = model.num_classes, view.spatial_shape
    if out is None:
        out = np.zeros(view.labels_shape, label_dtype(classes))
    if tuple(out.shape) != view.labels_shape:
        raise ValueError(f"out has shape {tuple(out.shape)} but the labels have shape {view.labels_shape}")
    if not np.issubdtype(out.dtype, np.integer) or np.iinfo(out.dtype).max < classes:
        raise TypeError(f"out must be an integer array that holds {classes}; got {out.dtype}")
    unit = _write_unit(out)
    by, bx = (math.ceil(block_size / u) * u for u in unit) if unit else (block_size, block_size)
    normalisation = model.normalisation.for_image(view.data)  # once, for the whole image
    task_options = replace(options, device=None, progress=None, should_stop=None)
    with tempfile.TemporaryDirectory() as folder:
        data = model.save(Path(folder) / "model.safetensors").read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    device = None if options.device is None else str(options.device)
    rows, cols = AxisTiles.along(height, options.tiling), AxisTiles.along(width, options.tiling)
    jobs = []
    for s in range(view.num_slices):
        leading = tuple(int(i) for i in np.unravel_index(s, view.leading_shape)) if view.leading_shape else ()
        for r0, r1 in _blocks(height, by):
            for c0, c1 in _blocks(width, bx):
                ti, tj = _needed(rows, r0, r1), _needed(cols, c0, c1)
                ya, yb = rows.starts[ti[0]], rows.starts[ti[-1]] + rows.size
                xa, xb = cols.starts[tj[0]], cols.starts[tj[-1]] + cols.size
                region = view.data[s, :, ya:yb, xa:xb]
                region = np.ascontiguousarray(region) if isinstance(region, np.ndarray) else region
                jobs.append(
                    _Job(digest, device, worker_threads, _Region(region), (ya, xa), (r0, r1, c0, c1),
                         (ti, tj), (height, width), normalisation, task_options, float(min_probability),
                         out if unit else None, leading)
                )  # fmt: skip
    _run(client, jobs, data, out, options, retries)
    return out


def _run(
    client: Any, jobs: list[_Job], data: bytes, out: Any, options: PredictionOptions, retries: int
) -> None:
    from distributed import as_completed

    token = uuid.uuid4().hex[:8]
    model_file = client.scatter(data, broadcast=True)  # once per worker, not with every task
    futures = [
        client.submit(
            predict_block,
            job,
            model_file,
            key=f"napari-deepseg-block-{token}-{n}",
            retries=retries,
            pure=False,
        )
        for n, job in enumerate(jobs)
    ]
    by_key = {f.key: job for f, job in zip(futures, jobs)}
    try:
        for done, future in enumerate(as_completed(futures), start=1):
            labels = future.result()
            if labels is not None:
                job = by_key[future.key]
                r0, r1, c0, c1 = job.block
                index = (*job.out_index, slice(r0, r1), slice(c0, c1))
                out[index] = labels
            future.release()
            if options.progress is not None:
                options.progress(done, len(jobs))
            if options.should_stop is not None and options.should_stop():
                raise InterruptedError("prediction was cancelled")
    finally:
        client.cancel([f for f in futures if not f.done()])
