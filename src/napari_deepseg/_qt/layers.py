"""napari layers <-> numpy arrays: one copy per layer, no training logic.

Training images are copied channel-last, ``(..., H, W)`` or ``(..., H, W, C)``, so every pair
of a run shares one channel convention whatever the layers looked like. A large layer (a slide:
see :func:`napari_deepseg.data.regions.trains_from_regions`) is not copied: its image is handed
over lazily (the core reads the regions around the strokes), its labels as a snapshot of the
painted boxes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..data.layout import channel_axis_from_labels
from ..data.regions import LAZY_PIXELS, SparseLabels, is_lazy, trains_from_regions

if TYPE_CHECKING:
    import napari
    from napari.layers import Image, Labels, Layer

PREVIEW_METADATA_KEY = "napari_deepseg_preview"  # marks layers this plugin writes its previews to


@dataclass(frozen=True)
class ImageCopy:
    """A private copy of an image layer's data.

    Attributes
    ----------
    data
        ``(..., H, W)`` without channels, ``(..., H, W, C)`` with channels. For a large layer the
        layer's own data, not copied: a read-only numpy view or a dask array.
    channels
        Whether ``data`` ends with a channel axis.
    layer_channel_axis
        The channel axis among the layer's own dimensions (``None`` for RGB layers, whose colour
        axis is not a layer dimension, and for grey images).
    """

    data: Any
    channels: bool
    layer_channel_axis: int | None

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape[:-1] if self.channels else self.data.shape)

    @property
    def num_channels(self) -> int:
        return int(self.data.shape[-1]) if self.channels else 1


def layer_array(layer: Layer) -> Any:
    """The full-resolution data of a layer (level 0 of a multiscale pyramid), not copied."""
    return layer.data[0] if getattr(layer, "multiscale", False) else layer.data


def level_count(layer: Layer) -> int:
    """Levels of a multiscale layer (level 0 the largest); 1 for any other layer."""
    return len(layer.data) if getattr(layer, "multiscale", False) else 1


def level_array(layer: Layer, level: int = 0) -> Any:
    """Level ``level`` of a multiscale layer (the data itself for others), not copied."""
    return layer.data[level] if getattr(layer, "multiscale", False) else layer.data


def spatial_shape(layer: Layer, level: int = 0) -> tuple[int, ...]:
    """Shape of a level without the colour axis of an RGB(A) layer."""
    shape = tuple(int(n) for n in level_array(layer, level).shape)
    return shape[:-1] if getattr(layer, "rgb", False) else shape


def lazy(data: Any) -> Any:
    """numpy and dask arrays as they are; any other array (zarr, ...) as a dask array over its chunks,
    so the core reads it tile by tile instead of converting it whole."""
    if isinstance(data, np.ndarray) or type(data).__module__.startswith("dask."):
        return data
    import dask.array as da  # a napari dependency

    chunks = getattr(data, "chunks", None)
    return da.from_array(data, chunks=chunks if isinstance(chunks, tuple) else "auto")


def level_transform(layer: Layer, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(scale, translate) that overlay an array of ``shape`` (the last axes of one of ``layer``'s
    levels) on ``layer``: napari shows level ``k`` scaled by its downsample factor, not shifted."""
    scale, translate = np.asarray(layer.scale, float), np.asarray(layer.translate, float)
    ndim = len(shape)
    full = spatial_shape(layer)[-ndim:]
    for level in range(level_count(layer)):
        if spatial_shape(layer, level)[-ndim:] == tuple(shape):
            scale = scale.copy()
            scale[-ndim:] *= np.divide(full, shape)
            break
    return scale, translate


def training_level(layer: Layer, labels_shape: tuple[int, ...] | None) -> int:
    """The level of a multiscale image whose shape fits the labels (strokes painted on that level's
    grid); level 0 when none does or without labels."""
    if labels_shape is None or level_count(layer) == 1:
        return 0
    for level in range(level_count(layer)):
        shape = spatial_shape(layer, level)
        if shape == tuple(labels_shape) or channel_axis_from_labels(shape, tuple(labels_shape)) is not None:
            return level
    return 0


def _owned_copy(data: Any) -> np.ndarray:
    array = np.asarray(data)  # computes dask / zarr into a new array
    if array is data or (isinstance(data, np.ndarray) and np.may_share_memory(array, data)):
        array = array.copy()
    return array


def copy_image(
    layer: Image, *, labels_shape: tuple[int, ...] | None = None, channel_axis: int | None = None
) -> ImageCopy:
    """Copy an image layer once, moving any channel axis last.

    Parameters
    ----------
    layer
        RGB(A) layers keep their colour axis as channels. Otherwise ``channel_axis`` (an axis of the
        layer data) when given, else the axis inferred from ``labels_shape``, else no channels.
    labels_shape
        Shape of the labels painted on this image, used to find a channel axis.
    channel_axis
        Explicit channel axis of the layer data (negative allowed).
    """
    level = level_array(layer, training_level(layer, labels_shape))
    shape = labels_shape if labels_shape is not None else spatial_shape(layer)
    # A large level is not copied: the trainer reads the crops it needs, never the whole level.
    large = trains_from_regions(level, int(np.prod(shape)))
    array = _read_only(level) if large else _owned_copy(level)
    if getattr(layer, "rgb", False):
        return ImageCopy(array, True, None)
    axis = channel_axis
    if axis is None and labels_shape is not None:
        axis = channel_axis_from_labels(tuple(array.shape), tuple(labels_shape))
    if axis is None:
        return ImageCopy(array, False, None)
    if not -array.ndim <= axis < array.ndim or array.ndim < 3:
        raise ValueError(f"channel axis {axis} does not fit layer '{layer.name}' of shape {array.shape}")
    axis %= array.ndim
    moved = np.moveaxis(array, axis, -1) if isinstance(array, np.ndarray) else _dask_moveaxis(array, axis)
    return ImageCopy(moved, True, axis)


def copy_labels(layer: Labels) -> Any:
    """Copy a labels layer's (level 0) data once.

    Above ``LAZY_PIXELS`` pixels (or lazy), a :class:`~napari_deepseg.data.regions.SparseLabels`
    snapshot instead: the layer is read in bands and only its painted cells are kept (~70 ms for a
    20000 x 20000 uint8 layer with a few strokes, where a whole copy takes 400 MB).
    """
    data = layer_array(layer)
    if is_lazy(data) or int(np.prod(data.shape)) > LAZY_PIXELS:
        return SparseLabels.of(data)
    return _owned_copy(data)


def _read_only(data: Any) -> Any:
    """A layer's data as the trainer may keep it: a read-only view of a numpy array, a dask array
    over any other array (zarr, ...)."""
    if isinstance(data, np.ndarray):
        view = data.view()
        view.flags.writeable = False
        return view
    return lazy(data)


def _dask_moveaxis(array: Any, axis: int) -> Any:
    import dask.array as da

    return da.moveaxis(array, axis, -1)


def class_names(layer: Labels) -> list[str] | None:
    """Names of classes 1..K stored in ``layer.metadata["class_names"]``, if any."""
    names = layer.metadata.get("class_names") if isinstance(layer.metadata, dict) else None
    if not names or isinstance(names, str):
        return None
    return [str(n) for n in names]


def class_colors(layer: Labels, num_classes: int) -> dict[int, np.ndarray]:
    """RGBA colour of classes 1..K as the labels layer shows them."""
    colors = {}
    for k in range(1, num_classes + 1):
        color = layer.colormap.map(k)
        colors[k] = np.asarray(color, dtype=np.float32).reshape(-1)[:4]
    return colors


def is_preview(layer: Layer) -> bool:
    """Whether ``layer`` is a preview this plugin writes to (not user data)."""
    return bool(isinstance(layer.metadata, dict) and layer.metadata.get(PREVIEW_METADATA_KEY))


def in_viewer(viewer: napari.viewer.Viewer, layer: Layer | None) -> bool:
    """Whether ``layer`` (the object itself, not a namesake) is still in ``viewer``.

    Widgets opened from the Plugins menu get a proxy of the viewer whose layers are proxies too,
    so an identity test would always fail there; the layer list's own membership test works.
    """
    return layer is not None and layer in viewer.layers


def plane_index(layer: Image, point: Any, image: ImageCopy) -> tuple[int, ...]:
    """Index into ``image.data`` of the 2D plane of ``layer`` shown at the world ``point``.

    ``image`` is the channel-last copy of ``layer``; the result indexes its leading (stack) axes.
    """
    coords = [float(c) for c in np.asarray(layer.world_to_data(point)).ravel()]
    if image.layer_channel_axis is not None:
        del coords[image.layer_channel_axis]
    leading = image.spatial_shape[:-2]
    coords = coords[-len(image.spatial_shape) :][: len(leading)]
    return tuple(int(min(max(round(c), 0), n - 1)) for c, n in zip(coords, leading, strict=False))


def camera(viewer: napari.viewer.Viewer) -> Any:
    """The viewer's camera: in ``viewer.scene`` since napari 0.9, ``viewer.camera`` before."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None else viewer.camera


def canvas_size(viewer: napari.viewer.Viewer) -> tuple[int, int]:
    """(height, width) of the canvas in screen pixels (napari < 0.9: a typical canvas)."""
    canvas = getattr(viewer, "canvas", None)
    return tuple(getattr(canvas, "size", (600, 800)))  # type: ignore[return-value]


def visible_region(
    viewer: napari.viewer.Viewer, layer: Image, image: ImageCopy
) -> tuple[int, int, int, int] | None:
    """The part ``(y0, y1, x0, x1)`` of ``image``'s current (H, W) plane that the 2D canvas shows.

    From the camera (centre and zoom) and the canvas size, so it works before anything is drawn.
    ``None`` (the whole plane) in 3D, or when the plane's axes are not the ones displayed.
    """
    dims = viewer.dims
    axes = layer.ndim - 2, layer.ndim - 1  # the layer's (H, W) axes ...
    if dims.ndisplay != 2 or image.layer_channel_axis in axes:
        return None
    if tuple(dims.displayed) != tuple(range(dims.ndim - 2, dims.ndim)):  # ... must be the shown ones
        return None
    height, width = canvas_size(viewer)
    zoom = max(float(camera(viewer).zoom), 1e-12)
    centre = np.asarray(camera(viewer).center[-2:], float)
    half = np.array([height, width], float) / zoom / 2
    corners = []
    for dy, dx in ((-1, -1), (-1, 1), (1, -1), (1, 1)):
        point = np.asarray(dims.point, float)
        point[-2:] = centre + half * (dy, dx)
        corners.append(np.asarray(layer.world_to_data(point), float)[-2:])
    low, high = np.floor(np.min(corners, axis=0)), np.ceil(np.max(corners, axis=0))
    return int(low[0]), int(high[0]) + 1, int(low[1]), int(high[1]) + 1
