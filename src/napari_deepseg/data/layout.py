"""Array layout and validation: the one contract that training and prediction share.

Every image is seen as a stack of 2D slices ``(S, C, H, W)``: ``H, W`` are the last two
spatial axes, ``C`` the channel axis (1 when there is none) and ``S`` the product of all
remaining (stack / time) axes, in C order, so results ``(K, S, H, W)`` reshape back to
``(K, *leading_shape, H, W)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

MAX_IMAGE_NDIM = 5


@dataclass(frozen=True)
class SliceView:
    """An image seen as 2D slices.

    Attributes
    ----------
    data
        ``(S, C, H, W)`` numpy array (a view of the input where possible) or lazy dask array.
    leading_shape
        The stack shape whose product is ``S``; ``()`` for a single 2D image.
    channel_axis
        The channel axis of the input image (non-negative), or ``None`` when it has none.
    """

    data: Any
    leading_shape: tuple[int, ...]
    channel_axis: int | None

    @property
    def num_slices(self) -> int:
        return int(self.data.shape[0])

    @property
    def num_channels(self) -> int:
        return int(self.data.shape[1])

    @property
    def spatial_shape(self) -> tuple[int, int]:
        return int(self.data.shape[2]), int(self.data.shape[3])

    @property
    def labels_shape(self) -> tuple[int, ...]:
        """Shape of per-pixel results for the input image: ``(*leading_shape, H, W)``."""
        return (*self.leading_shape, *self.spatial_shape)

    def unflatten(self, array: Any) -> Any:
        """Reshape ``(..., S, H, W)`` back to ``(..., *leading_shape, H, W)``.

        Parameters
        ----------
        array
            Per-slice results, e.g. probabilities ``(K, S, H, W)`` or a mask ``(S, H, W)``.
        """
        shape = tuple(array.shape)
        if len(shape) < 3 or shape[-3] != self.num_slices:
            raise ValueError(
                f"expected an array (..., {self.num_slices}, H, W) to unflatten, got shape {shape}")
        return array.reshape(*shape[:-3], *self.leading_shape, *shape[-2:])


def _is_dask(array: Any) -> bool:
    return type(array).__module__.startswith("dask.")


def _as_array(image: Any) -> Any:
    return image if _is_dask(image) else np.asarray(image)


def _check_ndim(shape: tuple[int, ...], what: str = "image") -> None:
    if not 2 <= len(shape) <= MAX_IMAGE_NDIM:
        raise ValueError(
            f"{what} must have 2 to {MAX_IMAGE_NDIM} dimensions (H, W with optional stack and "
            f"channel axes); got shape {shape}")


def _normalise_axis(axis: int, ndim: int, shape: tuple[int, ...]) -> int:
    if not -ndim <= axis < ndim:
        raise ValueError(f"channel_axis {axis} is out of range for an image of shape {shape}")
    return axis % ndim


def _infer_channel_axis(shape: tuple[int, ...], in_channels: int | None) -> int | None:
    ndim = len(shape)
    if in_channels is None:
        return ndim - 1 if ndim == 3 and shape[-1] in (3, 4) else None
    if in_channels < 1:
        raise ValueError(f"in_channels must be >= 1, got {in_channels}")
    if in_channels == 1:
        # A trailing singleton axis (H, W, 1) is a channel axis, not a stack of 1-pixel-wide images.
        return ndim - 1 if ndim >= 3 and shape[-1] == 1 else None
    if ndim >= 3 and shape[-1] == in_channels:
        return ndim - 1
    # Search the non-spatial axes nearest to (H, W) first: (C, H, W), (Z, C, H, W), (C, Z, H, W).
    for axis in range(ndim - 3, -1, -1):
        if shape[axis] == in_channels:
            return axis
    raise ValueError(
        f"the model expects {in_channels} channels but no axis of the image with shape {shape} "
        f"has {in_channels} entries; pick an image with {in_channels} channels")


def to_slices(image: Any, *, channel_axis: int | None = None, in_channels: int | None = None) -> SliceView:
    """View an image as 2D slices ``(S, C, H, W)`` without copying where possible.

    Parameters
    ----------
    image
        numpy array (or array-like) or dask array with 2 to 5 dimensions.
    channel_axis
        The channel axis, if known (negative allowed).
    in_channels
        Channel count the model expects (prediction). Used to find the channel axis when
        ``channel_axis`` is not given: 1 means no channel axis; otherwise the last axis if it
        has that size, else the non-spatial axis of that size nearest to ``(H, W)``.

    Returns
    -------
    SliceView
        ``data`` is a view for numpy inputs (a copy only when the stack axes cannot be merged
        without one) and stays lazy for dask inputs.

    Raises
    ------
    ValueError
        For unsupported dimensionality, an out-of-range channel axis, or a channel count that
        does not match ``in_channels``.
    """
    array = _as_array(image)
    shape = tuple(int(n) for n in array.shape)
    _check_ndim(shape)
    ndim = len(shape)
    if channel_axis is not None:
        axis: int | None = _normalise_axis(channel_axis, ndim, shape)
        if ndim < 3:
            raise ValueError(f"an image of shape {shape} has no room for a channel axis besides H, W")
        if in_channels is not None and shape[axis] != in_channels:  # type: ignore[index]
            raise ValueError(
                f"the model expects {in_channels} channels but channel axis {channel_axis} of the "
                f"image with shape {shape} has {shape[axis]}")  # type: ignore[index]
    else:
        axis = _infer_channel_axis(shape, in_channels)
    if axis is None:
        leading = shape[:-2]
        data = array.reshape(-1, 1, *shape[-2:])
    else:
        moved = np.moveaxis(array, axis, -3) if not _is_dask(array) else _dask_moveaxis(array, axis)
        leading = tuple(moved.shape[:-3])
        data = moved.reshape(-1, *moved.shape[-3:])
    return SliceView(data=data, leading_shape=tuple(int(n) for n in leading), channel_axis=axis)


def _dask_moveaxis(array: Any, axis: int) -> Any:
    import dask.array as da

    return da.moveaxis(array, axis, -3)


def _check_image_dtype(image: np.ndarray) -> None:
    kind = image.dtype.kind
    if kind not in "biuf":
        raise TypeError(f"image must be numeric (integer or float); got dtype {image.dtype}")


def _check_label_dtype(labels: np.ndarray) -> None:
    kind = labels.dtype.kind
    if kind == "b":
        raise TypeError("labels must be integers; got bool (use 1, 2, ... for classes, 0 for unlabelled)")
    if kind not in "iu":
        raise TypeError(f"labels must be integers; got {labels.dtype}")


def _resolve_training_channel_axis(
    image_shape: tuple[int, ...], labels_shape: tuple[int, ...], channel_axis: int | None
) -> int | None:
    mismatch = (f"image and labels must have the same spatial shape; got image {image_shape} "
                f"and labels {labels_shape}")
    ndim = len(image_shape)
    if channel_axis is not None:
        axis = _normalise_axis(channel_axis, ndim, image_shape)
        if ndim != len(labels_shape) + 1:
            raise ValueError(mismatch + f" (with channel axis {channel_axis})")
        if image_shape[:axis] + image_shape[axis + 1:] != labels_shape:
            raise ValueError(mismatch + f" (with channel axis {channel_axis})")
        return axis
    if ndim == len(labels_shape):
        if image_shape != labels_shape:
            raise ValueError(mismatch)
        return None
    if ndim == len(labels_shape) + 1:
        # Prefer channel-last, then the axes nearest to (H, W), the axis between H and W last.
        for axis in [ndim - 1, *range(ndim - 3, -1, -1), ndim - 2]:
            if image_shape[:axis] + image_shape[axis + 1:] == labels_shape:
                return axis
    raise ValueError(mismatch)


def check_training_pair(image: Any, labels: Any, *, channel_axis: int | None = None
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
    if image.size == 0 or labels.size == 0:
        raise ValueError(
            f"image and labels must not be empty; got image {image.shape} and labels {labels.shape}")
    _check_ndim(image.shape)
    _check_ndim(labels.shape, "labels")
    axis = _resolve_training_channel_axis(image.shape, labels.shape, channel_axis)
    if image.dtype.kind == "f":
        bad = int(image.size - np.count_nonzero(np.isfinite(image)))
        if bad:
            raise ValueError(f"image contains {bad} NaN or infinite value(s); clean or fill them first")
    if not labels.any():
        raise ValueError("labels contain no labelled pixel; paint at least one stroke with a class >= 1 "
                         "(0 means unlabelled)")
    return image, labels, axis


def check_labels(labels: np.ndarray) -> None:
    """Integer labels, none negative (0 = unlabelled, 1..K = classes)."""
    _check_label_dtype(labels)
    if labels.dtype.kind == "i" and labels.size and labels.min() < 0:
        raise ValueError(f"labels must be >= 0 (0 means unlabelled); found {labels.min()}")


def pair_slices(image: np.ndarray, axis: int | None) -> np.ndarray:
    """``(S, C, H, W)`` view of a training image whose channel axis is ``axis``."""
    if axis is None:  # same ndim as the labels: no channel axis, whatever the last axis' size
        return image.reshape(-1, 1, *image.shape[-2:])
    return to_slices(image, channel_axis=axis).data


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
    keep = np.flatnonzero(flat_labels.reshape(len(flat_labels), -1).any(axis=1))
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
        raise ValueError("labels contain no labelled pixel; paint at least one stroke with a class >= 1 "
                         "(0 means unlabelled)")
    if len(present) < 2:
        (only,) = present
        raise ValueError(f"only class {only} is painted; paint at least two classes "
                         "(e.g. 1 = background, 2 = object)")
    k = max(present)
    if num_classes is not None:
        if k > num_classes:
            raise ValueError(f"labels contain class {k} but the model knows {num_classes} classes")
        return num_classes
    return k
