"""Labels of images too large to hold whole: written band by band into a zarr array on disk.

Above :data:`LARGE_PIXELS` the Predict widget does not keep the compact result (2 bytes per pixel
in memory) but writes the thresholded labels through ``SegmentationModel.predict(out=...)`` into a
zarr array with 1024-pixel chunks, in a temporary directory removed when napari exits; that array
is the Labels layer's data. The minimum probability is then applied while predicting.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..prediction import label_dtype
from ..segmentation_model import SegmentationModel

LARGE_PIXELS = 64 * 2**20  # pixels (all planes) above which the labels go to disk
CHUNK = 1024


@dataclass(frozen=True)
class LargeLabels:
    """Labels written to disk: ``labels`` is the zarr array (or memory-mapped ``.npy``), ``path``
    its store."""

    labels: Any
    path: Path
    min_probability: float


def is_large(model: SegmentationModel, data: Any, channel_axis: int | None) -> bool:
    """Whether the labels of ``data`` would have more than :data:`LARGE_PIXELS` pixels."""
    return int(np.prod(model.view(data, channel_axis).labels_shape)) > LARGE_PIXELS


def _temporary_store() -> Path:
    path = Path(tempfile.mkdtemp(prefix="napari-deepseg-labels-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path / "labels.zarr"


def predict_to_zarr(
    model: SegmentationModel,
    data: Any,
    channel_axis: int | None,
    min_probability: float,
    progress: Any,
    should_stop: Any,
    path: str | Path | None = None,
) -> LargeLabels:
    """Predict ``data`` into a new zarr array at ``path`` (a temporary store by default), or a
    memory-mapped ``.npy`` file when zarr (an optional extra) is not installed. A failed or
    cancelled prediction leaves no store behind."""
    try:
        import zarr
    except ImportError:
        zarr = None
    temporary = path is None
    store = Path(path) if path is not None else _temporary_store()
    shape = model.view(data, channel_axis).labels_shape
    dtype = label_dtype(model.num_classes)
    if zarr is None:
        store = store.with_suffix(".npy")
        out: Any = np.lib.format.open_memmap(store, mode="w+", dtype=dtype, shape=shape)
    else:
        chunks = (1,) * (len(shape) - 2) + (CHUNK, CHUNK)
        out = zarr.open_array(str(store), mode="w", shape=shape, chunks=chunks, dtype=dtype)
    try:
        model.predict(
            data,
            min_probability=min_probability,
            out=out,
            channel_axis=channel_axis,
            progress=progress,
            should_stop=should_stop,
        )
    except BaseException:
        del out  # a memory map must be closed before its file goes
        _remove(store.parent if temporary else store)
        raise
    return LargeLabels(out, store, min_probability)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
