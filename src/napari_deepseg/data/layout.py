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
                f"expected an array (..., {self.num_slices}, H, W) to unflatten, got shape {shape}"
            )
        return array.reshape(*shape[:-3], *self.leading_shape, *shape[-2:])


def _is_dask(array: Any) -> bool:
    return type(array).__module__.startswith("dask.")


def _as_array(image: Any) -> Any:
    return image if _is_dask(image) else np.asarray(image)


def check_ndim(shape: tuple[int, ...], what: str = "image") -> None:
    if not 2 <= len(shape) <= MAX_IMAGE_NDIM:
        raise ValueError(
            f"{what} must have 2 to {MAX_IMAGE_NDIM} dimensions (H, W with optional stack and "
            f"channel axes); got shape {shape}"
        )


def normalise_axis(axis: int, ndim: int, shape: tuple[int, ...]) -> int:
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"channel_axis must be an integer (or None), got {axis!r}")
    if not -ndim <= axis < ndim:
        raise ValueError(f"channel_axis {axis} is out of range for an image of shape {shape}")
    return int(axis) % ndim


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
        f"the model expects {_channels(in_channels)} but no axis of the image with shape {shape} "
        f"has {in_channels} entries; pick an image with {in_channels} channels"
    )


def channel_axis_from_labels(image_shape: tuple[int, ...], labels_shape: tuple[int, ...]) -> int | None:
    """The image axis whose removal gives the labels' shape: the last axis first, then the axes
    nearest to ``(H, W)``, the axis between H and W last. ``None`` when there is no such axis
    (e.g. image and labels have the same number of dimensions)."""
    ndim, labels_shape = len(image_shape), tuple(labels_shape)
    if ndim != len(labels_shape) + 1:
        return None
    axes: list[int] = [ndim - 1, *range(ndim - 3, -1, -1), ndim - 2]
    for axis in axes:
        if tuple(image_shape[:axis]) + tuple(image_shape[axis + 1 :]) == labels_shape:
            return axis
    return None


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
    check_ndim(shape)
    if 0 in shape:
        raise ValueError(f"the image is empty (shape {shape})")
    ndim = len(shape)
    if channel_axis is not None:
        axis: int | None = normalise_axis(channel_axis, ndim, shape)
        if ndim < 3:
            raise ValueError(f"an image of shape {shape} has no room for a channel axis besides H, W")
        found = shape[axis]  # type: ignore[index]  # normalise_axis gave an int: ndim >= 3 here
        if in_channels is not None and found != in_channels:
            raise ValueError(
                f"the model expects {_channels(in_channels)} but channel axis {channel_axis} of the "
                f"image with shape {shape} has {found}"
            )
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


def _channels(count: int) -> str:
    return f"{count} channel" if count == 1 else f"{count} channels"
