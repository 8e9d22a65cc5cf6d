"""Uncertainty for the user: an Image layer "<image> uncertainty" and a "Where next?" camera move.

Shared by the Train widget (uncertainty of the live preview) and the Predict widget (of the
prediction): both write the same layer, so it always shows the latest model's doubt.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image, Labels
from napari.utils import notifications
from qtpy.QtWidgets import QCheckBox, QHBoxLayout, QPushButton, QWidget

from .. import CompactProbabilities, suggest_next_region, uncertainty
from . import _results
from . import layers as layer_io

if TYPE_CHECKING:
    import napari

WINDOW = 64  # side of the region "Where next?" looks for, in pixels


def uncertainty_key(image_layer: Any) -> str:
    return f"{image_layer.name} uncertainty"


def show_uncertainty(
    viewer: napari.viewer.Viewer, image_layer: Any, uncertainty: np.ndarray, below: Any = None
) -> Image:
    """Write ``uncertainty`` (0 certain .. 1 uniform) into the image's uncertainty layer, creating it
    if needed, over the level of the image it was computed on (by shape). A new layer goes just below
    ``below`` (the strokes) and leaves the layer selection as it was."""
    key = uncertainty_key(image_layer)
    layer = _results.find_result(viewer, key, Image)
    if layer is not None and layer.ndim != uncertainty.ndim:  # a stack's prediction after a plane's preview
        viewer.layers.remove(layer)
        layer = None
    scale, translate = level_placement(image_layer, uncertainty.shape)
    if layer is None:
        layer = Image(
            uncertainty,
            name=key,
            colormap="magma",
            contrast_limits=(0.0, 1.0),
            opacity=0.5,
            scale=scale,
            translate=translate,
            metadata={_results.RESULT_KEY: key, layer_io.PREVIEW_METADATA_KEY: True},
        )
        insert_below(viewer, layer, below)
        return layer
    layer.data = uncertainty
    # Only when they differ: each assignment refreshes the layer (slice, thumbnail, texture).
    if not np.array_equal(layer.scale, scale):
        layer.scale = scale
    if not np.array_equal(layer.translate, translate):
        layer.translate = translate
    return layer


def level_placement(image_layer: Any, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(scale, translate) of an array of ``shape`` (the last axes of one of ``image_layer``'s
    levels, the one it was computed on) that put it over the image as napari shows that level:
    level ``k`` scaled by its downsample factor."""
    scale, translate = layer_io.level_transform(image_layer, tuple(shape))
    n = len(shape)
    return scale[-n:], translate[-n:]


def insert_below(viewer: napari.viewer.Viewer, layer: Any, below: Any = None) -> None:
    """Add ``layer`` just below ``below`` (on top without it), the layer selection unchanged.

    Inserted where it goes rather than added on top and moved: a move is one more round of
    napari's layer-list, canvas-order and layer-controls updates in a step that already costs
    the GUI thread ~100 ms (the layer's controls and vispy visuals)."""
    layers = viewer.layers
    index = layers.index(below) if below is not None and layer_io.in_viewer(viewer, below) else len(layers)
    with keep_selection(viewer):
        layers.insert(index, layer)


@contextmanager
def keep_selection(viewer: napari.viewer.Viewer) -> Iterator[None]:
    """Restore the layer selection (and the active layer) after adding layers: the user keeps
    painting on the layer they were painting on."""
    layers = viewer.layers
    selected, active = list(layers.selection), layers.selection.active
    try:
        yield
    finally:
        layers.selection.clear()
        layers.selection.update([la for la in selected if layer_io.in_viewer(viewer, la)])
        if active is not None and layer_io.in_viewer(viewer, active):
            layers.selection.active = active


def where_next(
    viewer: napari.viewer.Viewer,
    uncertainty: np.ndarray | None,
    strokes: np.ndarray | None,
    layer: Any,
    index: tuple[int, ...] = (),
) -> tuple[int, int] | None:
    """Centre the camera on the most uncertain ``WINDOW``-pixel region of a plane without strokes.

    Parameters
    ----------
    uncertainty, strokes
        The plane's uncertainty and labels (``None``: no strokes known).
    layer
        A layer whose data axes end with this plane's (H, W) axes; its scale and translation
        map the region to world coordinates.
    index
        The plane's position along ``layer``'s leading axes.

    Returns
    -------
    The region's centre (row, col) in the plane, or ``None`` (with a notification) if there is none.
    """
    if uncertainty is None:
        notifications.show_info("No uncertainty yet: train with the live preview on, or predict an image.")
        return None
    centre = suggest_next_region(uncertainty, strokes, window=WINDOW)
    if centre is None:
        notifications.show_info(
            "Every region of this plane already has strokes: check the prediction "
            "where it looks wrong and paint there."
        )
        return None
    move_camera(viewer, layer, (*index, *centre))
    return int(centre[0]), int(centre[1])


def move_camera(viewer: napari.viewer.Viewer, layer: Any, data_point: tuple[float, ...]) -> None:
    """Centre the camera on ``data_point`` of ``layer`` (its scale and translation applied)."""
    world = np.asarray(layer.data_to_world(data_point), float)
    point = np.asarray(viewer.dims.point, float)
    point[len(point) - len(world) :] = world  # a layer's axes are the last world axes
    layer_io.camera(viewer).center = tuple(point[d] for d in viewer.dims.displayed)


def uncertainty_row(widget: QWidget, what: str) -> tuple[QCheckBox, QPushButton]:
    """The "Show uncertainty" checkbox and "Where next?" button, laid out in a row on ``widget``."""
    checkbox = QCheckBox("Show uncertainty")
    checkbox.setToolTip(f"Show where the {what} is unsure (bright) as an image layer")
    button = QPushButton("Where next?")
    button.setToolTip("Move the view to the most uncertain region that has no strokes yet")
    layout = QHBoxLayout(widget)
    layout.setContentsMargins(0, 0, 0, 0)
    layout.addWidget(checkbox)
    layout.addWidget(button)
    return checkbox, button


class PredictionUncertainty(QWidget):
    """The Predict widget's "Show uncertainty" and "Where next?", computed from the cached compact
    result: like the threshold slider, they never run the network."""

    def __init__(self, viewer: napari.viewer.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self._image: Any = None
        self._result: Any = None  # the result labels layer: its axes are the uncertainty's
        self._compact: CompactProbabilities | None = None
        self._uncertainty: np.ndarray | None = None
        self.checkbox, self.where_button = uncertainty_row(self, "model")
        self.checkbox.toggled.connect(self._on_toggled)
        self.where_button.clicked.connect(self.where_next)

    @property
    def uncertainty(self) -> np.ndarray | None:
        """Of the latest prediction, computed once, on first use."""
        if self._uncertainty is None and self._compact is not None:
            self._uncertainty = uncertainty(self._compact)
        return self._uncertainty

    def set_result(self, image: Any, result: Any, compact: CompactProbabilities) -> None:
        self._image, self._result, self._compact, self._uncertainty = image, result, compact, None
        if self.checkbox.isChecked():
            self._on_toggled(True)

    def _on_toggled(self, checked: bool) -> None:
        if self._image is None:
            return
        layer = _results.find_result(self.viewer, uncertainty_key(self._image), Image)
        if checked and self.uncertainty is not None:
            layer = show_uncertainty(self.viewer, self._image, self.uncertainty)
        if layer is not None:
            layer.visible = checked

    def where_next(self) -> tuple[int, int] | None:
        """Centre the camera on the most uncertain region without strokes of the plane shown."""
        values, result = self.uncertainty, self._result
        if values is None or result is None:
            return where_next(self.viewer, None, None, None)
        index: tuple[int, ...] = ()
        if values.ndim > 2:  # a stack: the plane at the viewer's current step
            coords = np.asarray(result.world_to_data(self.viewer.dims.point), float)[: values.ndim - 2]
            index = tuple(int(min(max(round(c), 0), n - 1)) for c, n in zip(coords, values.shape))
        strokes = next(
            (
                la
                for la in self.viewer.layers
                if isinstance(la, Labels)
                and _results.RESULT_KEY not in la.metadata
                and not layer_io.is_preview(la)
                and tuple(layer_io.layer_array(la).shape) == values.shape
            ),
            None,
        )
        plane = None if strokes is None else np.asarray(layer_io.layer_array(strokes)[index])
        return where_next(self.viewer, values[index], plane, result, index)
