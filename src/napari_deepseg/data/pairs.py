"""Image / labels pairs for training: the checks they must pass and their labelled slices.

Labels hold 0 for unlabelled pixels and 1..K for classes; an image has the labels' shape, plus
a channel axis when it has channels (see :mod:`.layout` for the slice view both share).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .layout import channel_axis_from_labels, check_ndim, normalise_axis, to_slices

# The network has one output per class: 1,000 classes already cost 1 GB of logits per batch of
# four 128-pixel patches, and a label image with one value per object is no class map.
MAX_CLASSES = 1000
NO_LABELLED_PIXEL = (
    "labels contain no labelled pixel; paint at least one stroke with a class >= 1 (0 means unlabelled)"
)


def _check_image_dtype(image: Any) -> None:
    kind = np.dtype(image.dtype).kind
    if kind not in "biuf":
        raise TypeError(f"image must be numeric (integer or float); got dtype {image.dtype}")


def check_label_dtype(labels: Any) -> None:
    """Labels (anything with a ``dtype``) must be integers, not bool."""
    kind = np.dtype(labels.dtype).kind
    if kind == "b":
        raise TypeError("labels must be integers; got bool (use 1, 2, ... for classes, 0 for unlabelled)")
    if kind not in "iu":
        raise TypeError(f"labels must be integers; got {labels.dtype}")


def _resolve_training_channel_axis(
    image_shape: tuple[int, ...], labels_shape: tuple[int, ...], channel_axis: int | None
) -> int | None:
    mismatch = (
        f"image and labels must have the same spatial shape; got image {image_shape} "
        f"and labels {labels_shape}"
    )
    if channel_axis is not None:
        axis = normalise_axis(channel_axis, len(image_shape), image_shape)
        if image_shape[:axis] + image_shape[axis + 1 :] != labels_shape:
            raise ValueError(mismatch + f" (with channel axis {channel_axis})")
        return axis
    if image_shape == labels_shape:
        return None
    found = channel_axis_from_labels(image_shape, labels_shape)
    if found is None:
        raise ValueError(mismatch)
    return found


def check_training_pair(
    image: Any, labels: Any, *, channel_axis: int | None = None
) -> tuple[np.ndarray, np.ndarray, int | None]:
    """Validate an image / labels pair for training.

    Returns
    -------
    image, labels, channel_axis
        The inputs as numpy arrays (not copies) and the image's channel axis (``None``: none).

    Raises
    ------
    TypeError
        For a non-numeric image, or float / bool labels.
    ValueError
        For mismatched shapes, empty arrays, non-finite image values, negative labels or
        labels without a single labelled pixel.
    """
    image = np.asarray(image)
    labels = np.asarray(labels)
    _check_image_dtype(image)
    check_labels(labels)
    axis = check_pair_shapes(image, labels, channel_axis=channel_axis)
    if image.dtype.kind == "f":
        bad = int(image.size - np.count_nonzero(np.isfinite(image)))
        if bad:
            raise ValueError(f"image contains {bad} NaN or infinite value(s); clean or fill them first")
    if not labels.any():
        raise ValueError(NO_LABELLED_PIXEL)
    return image, labels, axis


def check_pair_shapes(image: Any, labels: Any, *, channel_axis: int | None = None) -> int | None:
    """The checks of :func:`check_training_pair` that read no pixel (image dtype, sizes, shapes);
    the image's channel axis. For arrays of any kind with ``shape`` and ``dtype``."""
    _check_image_dtype(image)
    check_label_dtype(labels)
    image_shape, labels_shape = tuple(int(n) for n in image.shape), tuple(int(n) for n in labels.shape)
    if 0 in image_shape or 0 in labels_shape:
        raise ValueError(
            f"image and labels must not be empty; got image {image_shape} and labels {labels_shape}"
        )
    check_ndim(image_shape)
    check_ndim(labels_shape, "labels")
    return _resolve_training_channel_axis(image_shape, labels_shape, channel_axis)


def check_labels(labels: np.ndarray) -> None:
    """Integer labels in 0..:data:`MAX_CLASSES` (0 = unlabelled, 1..K = classes)."""
    check_label_dtype(labels)
    if not labels.size:
        return
    check_label_range(int(labels.min()) if labels.dtype.kind == "i" else 0, int(labels.max()))


def check_label_range(low: int, top: int) -> None:
    """The smallest and largest label must lie in 0..:data:`MAX_CLASSES`."""
    if low < 0:
        raise ValueError(f"labels must be >= 0 (0 means unlabelled); found {low}")
    if top > MAX_CLASSES:
        raise ValueError(
            f"labels contain class {top} but at most {MAX_CLASSES} classes are supported "
            "(0 unlabelled, 1..K classes); instance labels (one value per object) are not classes"
        )


def pair_slices(image: np.ndarray, axis: int | None) -> np.ndarray:
    """``(S, C, H, W)`` view of a training image whose channel axis is ``axis``."""
    if axis is None:  # same ndim as the labels: no channel axis, whatever the last axis' size
        return image.reshape(-1, 1, *image.shape[-2:])
    slices: np.ndarray = to_slices(image, channel_axis=axis).data  # numpy in, numpy out
    return slices


class ImageSlices:
    """The ``(S, C, H, W)`` slices of an image of any kind (numpy, memmap, dask, zarr, anything with
    ``shape``, ``dtype`` and basic slicing), read part by part: nothing is read until indexed.

    Indexing takes up to four ints or slices (steps allowed; a slice for the channels) and returns
    a read-only numpy array of the image's pixels. The last one is remembered until :meth:`forget`:
    the normalisation's strided sample of a slide is read once for the pooled and the image's own
    bounds.
    """

    def __init__(self, image: Any, axis: int | None) -> None:
        self._image, self._axis = image, axis
        shape = tuple(int(n) for n in image.shape)
        self._spatial = [a for a in range(len(shape)) if a != axis]  # (*leading, H, W) axes
        self.leading = tuple(shape[a] for a in self._spatial[:-2])
        channels = 1 if axis is None else shape[axis]
        height, width = (shape[a] for a in self._spatial[-2:])
        self.shape = (int(np.prod(self.leading)) if self.leading else 1, channels, height, width)
        self.dtype = np.dtype(image.dtype)
        self.ndim = 4
        self._last: tuple[str, np.ndarray] | None = None

    def read(self, s: int, channels: slice, rows: slice, cols: slice) -> np.ndarray:
        """Channels ``channels`` of rows ``rows`` and columns ``cols`` of slice ``s``, ``(c, h, w)``."""
        index: list[Any] = [slice(None)] * len(self._image.shape)
        for a, i in zip(self._spatial[:-2], np.unravel_index(s, self.leading) if self.leading else ()):
            index[a] = int(i)
        index[self._spatial[-2]], index[self._spatial[-1]] = rows, cols
        if self._axis is not None:
            index[self._axis] = channels
        crop = np.asarray(self._image[tuple(index)])
        if isinstance(self._image, np.ndarray):  # a view: the run keeps its own pixels
            crop = crop.copy()
        if self._axis is None:
            return np.asarray(crop[None][channels])
        kept = [a for a in range(len(index)) if not isinstance(index[a], int)]
        return np.moveaxis(crop, kept.index(self._axis), 0)

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        key = key + (slice(None),) * (4 - len(key))
        if self._last is not None and self._last[0] == repr(key):
            return self._last[1]
        picked = range(self.shape[0])[key[0]]
        if isinstance(picked, int):
            out = self.read(picked, *key[1:])
        elif len(picked) == 1:  # a 2D image: no stacking copy
            out = self.read(picked[0], *key[1:])[None]
        else:
            out = np.stack([self.read(s, *key[1:]) for s in picked])
        out.flags.writeable = False  # shared by the callers of the same key
        self._last = (repr(key), out)
        return out

    def forget(self) -> None:
        self._last = None


def labelled_slices(labels: np.ndarray) -> np.ndarray:
    """Indices of the ``(S, H, W)`` label slices with at least one labelled pixel."""
    return np.flatnonzero(labels.reshape(len(labels), -1).any(axis=1))


def training_slices(
    image: Any, labels: Any, *, channel_axis: int | None = None
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Validate an image / labels pair and cut it into labelled training slices.

    Parameters
    ----------
    image
        Image with 2 to 5 dimensions, with or without a channel axis.
    labels
        Integer labels with the image's shape minus its channel axis; 0 means unlabelled,
        1..K are classes.
    channel_axis
        The image's channel axis. When omitted it is inferred: if the image has one more
        dimension than the labels, the axis whose removal gives the labels' shape (the last
        axis preferred); if both have the same dimensions, a single channel.

    Returns
    -------
    images, labels
        float32 ``(C, H, W)`` copies and int64 ``(H, W)`` copies, only for slices with at
        least one labelled pixel. The inputs are never modified.

    Raises
    ------
    TypeError, ValueError
        As :func:`check_training_pair`.
    """
    image, labels, axis = check_training_pair(image, labels, channel_axis=channel_axis)
    slices = pair_slices(image, axis)
    flat_labels = labels.reshape(-1, *labels.shape[-2:])
    keep = labelled_slices(flat_labels)
    images_out = [np.array(slices[s], dtype=np.float32, copy=True) for s in keep]
    labels_out = [np.array(flat_labels[s], dtype=np.int64, copy=True) for s in keep]
    return images_out, labels_out


def validate_label_set(label_slices: list[np.ndarray], *, num_classes: int | None = None) -> int:
    """Check that labelled slices make a trainable class set and return the class count.

    Parameters
    ----------
    label_slices
        Integer label slices (0 = unlabelled).
    num_classes
        Classes of an already trained model being continued; labels above it are an error.

    Returns
    -------
    int
        ``K``, the largest painted class, or ``num_classes`` when given (the model's output
        count does not shrink when a class is not painted this time).

    Raises
    ------
    ValueError
        When fewer than two classes are painted, or a class exceeds ``num_classes``.
    """
    present: set[int] = set()
    for lab in label_slices:
        values = np.unique(np.asarray(lab))
        present.update(int(v) for v in values if v > 0)
    if not present:
        raise ValueError(NO_LABELLED_PIXEL)
    if len(present) < 2:
        (only,) = present
        raise ValueError(
            f"only class {only} is painted; paint at least two classes (e.g. 1 = background, 2 = object)"
        )
    k = max(present)
    if num_classes is not None:
        if k > num_classes:
            raise ValueError(f"labels contain class {k} but the model knows {num_classes} classes")
        return num_classes
    return k
