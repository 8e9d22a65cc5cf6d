"""Prediction results as napari layers: one labels layer (and optional probability layers) per input
image, replaced in place by later predictions and found again through their metadata."""

from __future__ import annotations

from typing import Any

import numpy as np
from napari.layers import Image, Labels
from napari.utils.colormaps import DirectLabelColormap

from ..prediction import CompactProbabilities, apply_threshold
from ..segmentation_model import SegmentationModel
from . import layers as layer_io
from ._large_labels import LargeLabels, ThresholdedLevel, set_read_only

RESULT_KEY = "deepseg_result"  # metadata of layers we created: "<input layer name> <role>"


def find_result(viewer: Any, key: str, kind: type) -> Any:
    """The layer made earlier for ``key`` if the user has not deleted it (renaming it is fine)."""
    return next(
        (la for la in viewer.layers if isinstance(la, kind) and la.metadata.get(RESULT_KEY) == key), None
    )


def show_labels(viewer: Any, image: Image, model: SegmentationModel, labels: Any) -> Labels:
    """Write ``labels`` (0 unclassified, 1..K) into the result layer of ``image``, creating it if needed.

    Class names go to ``metadata["class_names"]`` and to the features (hovering shows them); colours are
    those of the training strokes when a labels layer with the same class names is in the viewer.
    """
    key = f"{image.name} segmentation"
    layer = find_result(viewer, key, Labels)
    multiscale = isinstance(labels, list)  # the levels of a large result
    if layer is not None and layer.multiscale != multiscale:  # napari cannot change that in place
        index = viewer.layers.index(layer)
        viewer.layers.remove(layer)
        layer = viewer.add_labels(labels, name=key, opacity=layer.opacity, visible=layer.visible)
        viewer.layers.move(len(viewer.layers) - 1, index)
    elif layer is None:
        layer = viewer.add_labels(labels, name=key, opacity=0.6)
    else:
        layer.data = labels
    set_read_only(layer)  # views of a large result cannot be painted into
    layer.metadata.update({RESULT_KEY: key, "class_names": list(model.class_names)})
    layer.features = {
        "index": np.arange(model.num_classes + 1),
        "class": ["unclassified", *model.class_names],
    }
    colormap = training_colormap(viewer, model)
    if colormap is not None:
        layer.colormap = colormap
    _align(layer, image)
    return layer


def show_result(
    viewer: Any, image: Image, model: SegmentationModel, result: tuple[Any, Any], min_probability: float
) -> tuple[CompactProbabilities | None, Labels]:
    """Show what ``predict_image`` returned: the compact result (kept for the slider) and the
    labels at ``min_probability``, or the lazy labels of a large image (no compact result in memory)."""
    compact, extra = result
    if isinstance(extra, LargeLabels):
        return None, show_labels(viewer, image, model, extra.labels(min_probability))
    if extra is not None:
        show_probabilities(viewer, image, model, extra)
    return compact, show_labels(viewer, image, model, apply_threshold(compact, min_probability))


def replace_levels(layer: Labels, data: Any) -> None:
    """Swap in new data of the same shape and levels, keeping the level and the part of it that
    napari reads (replacing a multiscale layer's data resets them to the smallest level, whole;
    until the next draw that would be shown)."""
    level, corners = layer.data_level, layer.corner_pixels.copy()
    layer.data = data  # reads the smallest level: the thumbnail's
    set_read_only(layer)  # napari made a single-level layer editable again
    if layer.multiscale:
        layer.corner_pixels = corners
        layer.data_level = level  # reads the visible part of this level when it is another one


def editable_copy(viewer: Any, layer: Labels) -> Labels:
    """A new, editable Labels layer in memory with the full-resolution labels ``layer`` shows (the
    views of a large result, at their threshold) over it, with its colours, classes and transform;
    ``layer`` is hidden. The copy is not a result: later predictions and the slider leave it alone."""
    view = layer.data[0] if layer.multiscale else layer.data
    if not isinstance(view, ThresholdedLevel):
        raise TypeError(f"'{layer.name}' does not show a large result")
    metadata = {k: v for k, v in layer.metadata.items() if k != RESULT_KEY}
    copy = viewer.add_labels(
        np.asarray(view),
        name=f"{layer.name} (editable)",
        opacity=layer.opacity,
        scale=layer.scale,
        translate=layer.translate,
        metadata=metadata,
    )
    copy.colormap = layer.colormap
    copy.features = layer.features
    layer.visible = False
    return copy


def show_probabilities(
    viewer: Any, image: Image, model: SegmentationModel, probabilities: np.ndarray
) -> None:
    """One float32 image layer per class, ``"<image> P(<class>)"``; only the first is visible."""
    for k, class_name in enumerate(model.class_names):
        key = f"{image.name} P({class_name})"
        layer = find_result(viewer, key, Image)
        if layer is None:
            layer = viewer.add_image(
                probabilities[k],
                name=key,
                colormap="magma",
                contrast_limits=(0, 1),
                visible=k == 0,
                blending="additive",
                metadata={RESULT_KEY: key},
            )
        else:
            layer.data = probabilities[k]
        _align(layer, image)


def training_colormap(viewer: Any, model: SegmentationModel) -> DirectLabelColormap | None:
    """The colours of a labels layer with the model's class names (the training strokes), if any."""
    for layer in viewer.layers:
        if not isinstance(layer, Labels) or RESULT_KEY in layer.metadata or layer_io.is_preview(layer):
            continue
        if layer_io.class_names(layer) == list(model.class_names):
            colors = layer_io.class_colors(layer, model.num_classes)
            return DirectLabelColormap(color_dict={None: (0, 0, 0, 0), 0: (0, 0, 0, 0), **colors})
    return None


def _align(layer: Any, image: Image) -> None:
    if layer.ndim == image.ndim:  # overlay exactly, whatever the image's scale, offset and level
        layer.scale, layer.translate = layer_io.level_transform(image, tuple(layer.data.shape))


def hide_training_preview(viewer: Any, image: Image) -> str | None:
    """Hide the Train widget's visible preview of ``image`` (found as it finds it); its name or None."""
    for layer in viewer.layers:
        if (
            isinstance(layer, Labels)
            and layer_io.is_preview(layer)
            and layer.visible
            and layer.name == f"{image.name} preview"
        ):
            layer.visible = False
            return str(layer.name)
    return None
