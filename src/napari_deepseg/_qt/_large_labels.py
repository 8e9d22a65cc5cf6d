"""Results of images too large to hold whole: the compact result on disk, thresholded as it is viewed.

Above :data:`LARGE_PIXELS` the Predict widget does not keep the compact result (2 bytes per pixel)
in memory but streams it through ``SegmentationModel.predict_compact(out=...)`` into a zarr store
with 1024-pixel chunks (a temporary directory under :func:`store_root`, in the user's cache, removed
when the Predict widget no longer shows it and at the latest when napari exits; or a given path), with
strided copies (every 2nd, 4th, ... pixel) down to :data:`PYRAMID_MIN` pixels a side written
from the same bands. The Labels layer's data are :class:`ThresholdedLevel` views of those levels
that threshold what napari reads of them; napari reads the visible chunks of one level (and the
smallest level whole, for the thumbnail), so a slider move (views at the new threshold swapped in)
re-thresholds only those and never runs the network. Asked for whole (``np.asarray``, saving the
layer), a level is thresholded band by band. The views are read-only: the layer is made
non-editable (:func:`set_read_only`), and an editable copy in memory is made on request.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import platformdirs

from ..prediction import CompactProbabilities, apply_threshold, label_dtype
from ..segmentation_model import SegmentationModel
from ..threshold import check_min_probability

LARGE_PIXELS = 64 * 2**20  # pixels (all planes) above which the result goes to disk
CHUNK = 1024
EDITABLE_PIXELS = 4 * LARGE_PIXELS  # at most this many pixels (level 0) for an editable copy in memory
PYRAMID_MIN = 1024  # the smallest level has at most this many pixels a side


def set_read_only(layer: Any) -> None:
    """Make ``layer`` non-editable when it shows :class:`ThresholdedLevel` views (napari makes a
    single-level Labels layer editable on every data change, and painting into a view would fail)."""
    data = layer.data[0] if layer.multiscale else layer.data
    if isinstance(data, ThresholdedLevel):
        layer.editable = False


class ThresholdedLevel:
    """One level of a large result as napari reads it: an array-like whose indexing thresholds
    just the part indexed of the compact result on disk at :attr:`min_probability`
    (``np.asarray`` computes it whole, band by band). Its ``chunks`` are those on disk, so napari
    reads whole chunks of what is visible. A new threshold is a new view (:meth:`LargeLabels.labels`)."""

    def __init__(self, compact: CompactProbabilities, min_probability: float = 0.0) -> None:
        self.compact, self.min_probability = compact, float(min_probability)
        self.shape = tuple(int(n) for n in compact.shape)
        self.dtype = np.dtype(compact.best_class.dtype)
        self.ndim = len(self.shape)
        self.chunks = tuple(getattr(compact.best_class, "chunks", None) or _chunk_shape(self.shape))

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: Any) -> np.ndarray:
        return _threshold_window(self.compact, index, self.min_probability)

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        labels = apply_threshold(self.compact, self.min_probability)
        return labels if dtype is None else labels.astype(dtype, copy=False)

    def __repr__(self) -> str:
        return f"ThresholdedLevel(shape={self.shape}, min_probability={self.min_probability})"


def _threshold_window(compact: CompactProbabilities, index: Any, min_probability: float) -> np.ndarray:
    return apply_threshold(compact.window(index), min_probability)


@dataclass(frozen=True)
class LargeLabels:
    """A compact result on disk: ``levels`` (full resolution first, then every 2nd, 4th, ...
    pixel), each a :class:`CompactProbabilities` of two zarr arrays (or memory-mapped ``.npy``
    files without zarr), in the store at ``path``; ``temporary``: a store of our own, in a folder
    of its own that :meth:`remove` deletes (a given path is never deleted)."""

    levels: tuple[CompactProbabilities, ...]
    path: Path
    temporary: bool = False

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(n) for n in self.levels[0].shape)

    @property
    def size(self) -> int:
        """Pixels at full resolution."""
        return int(np.prod(self.shape))

    def labels(self, min_probability: float) -> Any:
        """The data of a labels layer at ``min_probability``: a :class:`ThresholdedLevel` of every
        level (one when there is one level). Nothing is read until napari reads it."""
        check_min_probability(min_probability)
        views = [ThresholdedLevel(level, min_probability) for level in self.levels]
        return views if len(views) > 1 else views[0]

    def is_shown_by(self, layer: Any) -> bool:
        """Whether ``layer`` shows this result (the user may have replaced its data)."""
        data = layer.data[0] if layer.multiscale else layer.data
        return isinstance(data, ThresholdedLevel) and data.compact is self.levels[0]

    def remove(self) -> None:
        """Delete a temporary store (no layer may show it any more); a given path stays."""
        if self.temporary:
            _remove(self.path.parent)


def _chunk_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    return (1,) * (len(shape) - 2) + tuple(min(CHUNK, n) for n in shape[-2:])


class _Pyramid:
    """What ``predict_compact`` writes one of its arrays into: every band of rows goes to level 0
    and every ``2**k``-th row and column of it to level ``k``. The index of a write is the band's
    leading indices (ints) and a slice of rows, as ``predict_compact`` gives it."""

    def __init__(self, levels: list[Any]) -> None:
        self.levels = levels
        self.shape, self.dtype = tuple(levels[0].shape), levels[0].dtype

    def __setitem__(self, index: tuple[Any, ...], value: np.ndarray) -> None:
        *lead, rows = index
        if not isinstance(rows, slice) or rows.step not in (None, 1) or value.ndim != 2:
            raise IndexError(f"the pyramid takes bands of whole rows, got {index!r}")
        self.levels[0][index] = value
        start = rows.start or 0
        for k, level in enumerate(self.levels[1:], start=1):
            step = 2**k
            first = -(-start // step) * step  # the band's first row on level k's grid
            part = value[first - start :: step, ::step]
            if len(part):
                level[(*lead, slice(first // step, first // step + len(part)))] = part


def level_shapes(shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    """The shape of every level: halved (rounded up) until the larger side is at most
    :data:`PYRAMID_MIN`; the leading axes stay."""
    shapes = [tuple(shape)]
    while max(shapes[-1][-2:]) > PYRAMID_MIN:
        *lead, h, w = shapes[-1]
        shapes.append((*lead, -(-h // 2), -(-w // 2)))
    return shapes


def is_large(model: SegmentationModel, data: Any, channel_axis: int | None) -> bool:
    """Whether the labels of ``data`` would have more than :data:`LARGE_PIXELS` pixels."""
    return int(np.prod(model.view(data, channel_axis).labels_shape)) > LARGE_PIXELS


def store_root() -> Path:
    """Where temporary stores go: ``labels`` in the user's cache folder of napari-deepseg."""
    return Path(platformdirs.user_cache_dir("napari-deepseg")) / "labels"


def _temporary_store() -> Path:
    root = store_root()
    root.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix="napari-deepseg-labels-", dir=root))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path / "result.zarr"


def _claim(folder: Path) -> bool:
    """Refuse a ``folder`` that is a file or holds anything; whether this call creates it."""
    if folder.exists():
        if not folder.is_dir() or any(folder.iterdir()):
            raise FileExistsError(
                f"Cannot write the result to {folder}: it already exists and is not an empty "
                "folder. Choose a new path (nothing there was changed)."
            )
        return False
    return True


def predict_to_zarr(
    model: SegmentationModel,
    data: Any,
    channel_axis: int | None,
    progress: Any,
    should_stop: Any,
    path: str | Path | None = None,
    mirroring: bool = False,
) -> LargeLabels:
    """Predict the compact result of ``data`` (and its pyramid) into a new zarr store at ``path``
    (a temporary store by default), or into a folder of memory-mapped ``.npy`` files when zarr (an
    optional extra) is not installed (``path`` without its suffix). A given path must not exist or
    be an empty folder (``FileExistsError`` otherwise). A failed or cancelled prediction leaves no
    store behind and removes only what it created. ``mirroring``: ``PredictionOptions.mirroring``."""
    try:
        import zarr
    except ImportError:
        zarr = None
    shapes = level_shapes(model.view(data, channel_axis).labels_shape)  # may refuse the image
    temporary = path is None
    store = Path(path) if path is not None else _temporary_store()
    if zarr is None:
        store = store.with_suffix("")
    created = temporary or _claim(store)
    arrays: dict[str, list[Any]] = {}
    try:
        _open_arrays(arrays, store, zarr, model, shapes)
        out = CompactProbabilities(
            _Pyramid(arrays["best_class"]), _Pyramid(arrays["best_probability"]), model.num_classes
        )
        model.predict_compact(
            data, out=out, channel_axis=channel_axis, progress=progress, should_stop=should_stop,
            mirroring=mirroring,
        )  # fmt: skip
    except BaseException:
        for opened in arrays.values():  # memory maps must be closed before their files go (the
            opened.clear()  # traceback's frames still hold the pyramids, which share these lists)
        if temporary:
            _remove(store.parent)
        elif created:
            _remove(store)
        elif store.is_dir():  # an empty folder before: empty again
            for child in store.iterdir():
                _remove(child)
        raise
    levels = tuple(
        CompactProbabilities(c, p, model.num_classes)
        for c, p in zip(arrays["best_class"], arrays["best_probability"])
    )
    return LargeLabels(levels, store, temporary)


def _open_arrays(
    arrays: dict[str, list[Any]], store: Path, zarr: Any, model: SegmentationModel, shapes: list[Any]
) -> None:
    """Create every level's two arrays in ``store`` (into ``arrays``, so a failure part way leaves
    what was opened for the caller to close)."""
    dtypes = {"best_class": label_dtype(model.num_classes), "best_probability": np.uint8}
    if zarr is None:
        store.mkdir(parents=True, exist_ok=True)
        for name, dtype in dtypes.items():
            arrays[name] = [
                np.lib.format.open_memmap(store / f"{name}-{k}.npy", mode="w+", dtype=dtype, shape=shape)
                for k, shape in enumerate(shapes)
            ]
        return
    root = zarr.open_group(str(store), mode="w")
    root.attrs.update({"num_classes": model.num_classes, "class_names": list(model.class_names)})
    for name, dtype in dtypes.items():
        group = root.create_group(name)
        arrays[name] = [
            group.create_array(str(k), shape=shape, chunks=_chunk_shape(shape), dtype=dtype)
            for k, shape in enumerate(shapes)
        ]


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
