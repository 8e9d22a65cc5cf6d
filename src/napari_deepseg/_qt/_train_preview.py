"""The Train widget's live preview on the GUI side: it tells the worker which part of which plane
the user looks at, shows the previews (classes and uncertainty) and answers "Where next?"."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image
from napari.utils.colormaps import DirectLabelColormap
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QCheckBox, QWidget

from . import _results, _uncertainty
from . import layers as layer_io
from ._preview_job import Preview, PreviewSettings

if TYPE_CHECKING:
    import napari

LAYER_DELAY_MS = 50  # between Start and the first preview layer, and between the two layers


class PreviewLayer:
    """The "<image> preview" labels layer: created at Start (or reused), then only its data is
    replaced. One the user deletes stays deleted for the rest of the run."""

    def __init__(
        self, viewer: napari.viewer.Viewer, image_layer: Any, labels_layer: Any, num_classes: int
    ) -> None:
        self.viewer = viewer
        self.name = f"{image_layer.name} preview"
        self._image_layer, self._labels_layer = image_layer, labels_layer
        self._colors = layer_io.class_colors(labels_layer, num_classes)  # the strokes' colours
        self.layer: Any = None
        self._buffer: np.ndarray | None = None  # the array the layer shows, ours to overwrite

    def create_empty(self, shape: tuple[int, ...]) -> None:
        """Add the (transparent) layer now: adding a layer costs the GUI thread far more than
        replacing its data, so it happens when Start is pressed, not in the middle of the run."""
        self.show(np.zeros(shape, np.uint8))

    def show(self, plane: np.ndarray) -> None:
        if self.layer is None:
            self.layer = next(
                (la for la in self.viewer.layers if la.name == self.name and layer_io.is_preview(la)), None
            )
            if self.layer is None:
                self._buffer = plane.copy()
                self.layer = self._add(self._buffer)
                return
        if layer_io.in_viewer(self.viewer, self.layer) and not write_in_place(
            self.layer, self._buffer, plane
        ):
            self._buffer = plane.copy()
            self.layer.data = self._buffer

    def _add(self, plane: np.ndarray) -> Any:
        layers = self.viewer.layers
        colors = {None: (0, 0, 0, 0), 0: (0, 0, 0, 0), **self._colors}
        with _uncertainty.keep_selection(self.viewer):  # the user keeps painting where they were
            layer = self.viewer.add_labels(
                plane,
                name=self.name,
                opacity=0.5,
                colormap=DirectLabelColormap(color_dict=colors),
                scale=self._image_layer.scale[-2:],
                translate=self._image_layer.translate[-2:],
                metadata={layer_io.PREVIEW_METADATA_KEY: True},
            )
            if layer_io.in_viewer(self.viewer, self._labels_layer):  # strokes stay visible above
                layers.move(layers.index(layer), layers.index(self._labels_layer))
        return layer


def write_in_place(layer: Any, buffer: np.ndarray | None, plane: np.ndarray) -> bool:
    """Copy ``plane`` into ``buffer`` and refresh ``layer``, if the layer still shows ``buffer``
    (an array of ours) and the shapes agree; ``False`` (nothing done) otherwise.

    Setting ``layer.data`` instead would re-emit the layer's data events and, for labels, build a
    new colormap (a shader link on the GUI thread, tens of ms with software OpenGL) every preview.
    """
    if (
        buffer is None
        or layer.data is not buffer
        or buffer.shape != plane.shape
        or buffer.dtype != plane.dtype
    ):
        return False
    np.copyto(buffer, plane)
    layer.refresh()
    return True


class TrainPreview(QWidget):
    """ "Show uncertainty" and "Where next?" of the Train widget, and the run's preview layers.

    Parameters
    ----------
    viewer
        Whose camera and dims say what to preview, and where the layers are shown.
    enabled_checkbox
        The form's "Live preview" checkbox; it can be toggled during a run.
    """

    def __init__(
        self, viewer: napari.viewer.Viewer, enabled_checkbox: QCheckBox, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self.enabled_checkbox = enabled_checkbox
        self.settings: PreviewSettings | None = None  # of the running run
        self.last: Preview | None = None  # the latest preview, kept after the run for "Where next?"
        self.layer: PreviewLayer | None = None
        self._image_layer: Any = None
        self._labels_layer: Any = None
        self._uncertainty_layer: Any = None
        self._uncertainty_buffer: np.ndarray | None = None  # what that layer shows, ours
        self.uncertainty_checkbox, self.where_button = _uncertainty.uncertainty_row(self, "preview")
        # Timers, not posted events: Qt runs the viewer's overdue timers before them.
        self._layers_timer = QTimer(self, singleShot=True, interval=LAYER_DELAY_MS, timeout=self._add_layers)

        enabled_checkbox.toggled.connect(self._on_enabled_toggled)
        self.uncertainty_checkbox.toggled.connect(self._on_uncertainty_toggled)
        self.where_button.clicked.connect(self.where_next)
        camera, canvas = layer_io.camera(viewer), getattr(viewer, "canvas", None)
        for emitter in (
            viewer.dims.events.current_step,
            viewer.dims.events.ndisplay,
            camera.events.center,
            camera.events.zoom,
            *((canvas.events.size,) if canvas is not None else ()),
        ):
            emitter.connect(self.update_view)

    def begin(self, settings: PreviewSettings, image_layer: Any, labels_layer: Any, num_classes: int) -> None:
        """A run starts: preview ``image_layer`` (the first pair) with ``settings``."""
        self.settings, self.last = settings, None
        self._image_layer, self._labels_layer = image_layer, labels_layer
        settings.enabled = self.enabled_checkbox.isChecked()
        self.update_view()
        self.layer = PreviewLayer(self.viewer, image_layer, labels_layer, num_classes)
        self._uncertainty_layer = self._uncertainty_buffer = None
        if settings.enabled:  # the layers are added once Start has returned, one per turn
            self._layers_timer.start()

    def _add_layers(self) -> None:
        """Add the run's empty preview layers, each in a turn of the event loop of its own: adding a
        layer costs the GUI thread 100-150 ms (napari's layer controls, a vispy visual), too
        much to add both while Start is handled. A preview that comes first adds its own."""
        settings = self.settings
        if settings is None or not settings.enabled or self.layer is None:
            return
        if self.layer.layer is None:
            self.layer.create_empty(settings.plane_shape)
            if self.uncertainty_checkbox.isChecked():
                self._layers_timer.start()  # the uncertainty layer next time
        elif self.uncertainty_checkbox.isChecked() and self._uncertainty_layer is None:
            self._show_uncertainty(np.zeros(settings.plane_shape, np.float32))

    def end(self) -> None:
        """The run ended: stop following the camera; the last preview stays for "Where next?"."""
        self.settings = None

    def show(self, preview: Preview) -> None:
        self.last = preview
        if self.layer is not None:
            self.layer.show(preview.labels)
        if self.uncertainty_checkbox.isChecked():
            self._show_uncertainty(preview.uncertainty)

    def update_view(self, _event: Any = None) -> None:
        """Tell the worker which plane, and which part of it, the canvas shows now."""
        settings = self.settings
        if settings is None:
            return
        # One tuple write each: the worker reads them between iterations.
        settings.index = layer_io.plane_index(self._image_layer, self.viewer.dims.point, settings.image)
        settings.region = layer_io.visible_region(self.viewer, self._image_layer, settings.image)

    def _on_enabled_toggled(self, checked: bool) -> None:
        if self.settings is not None:
            self.settings.enabled = checked

    def _on_uncertainty_toggled(self, checked: bool) -> None:
        if checked and self.last is not None:
            self._show_uncertainty(self.last.uncertainty).visible = True
        elif self._image_layer is not None:
            layer = _results.find_result(self.viewer, _uncertainty.uncertainty_key(self._image_layer), Image)
            if layer is not None:
                layer.visible = checked

    def _show_uncertainty(self, plane: np.ndarray) -> Any:
        layer = self._uncertainty_layer
        if (
            layer is not None
            and layer_io.in_viewer(self.viewer, layer)
            and write_in_place(layer, self._uncertainty_buffer, plane)
        ):
            return layer
        self._uncertainty_buffer = plane.copy()  # the Predict widget may have replaced the data
        self._uncertainty_layer = _uncertainty.show_uncertainty(
            self.viewer, self._image_layer, self._uncertainty_buffer, below=self._labels_layer
        )
        return self._uncertainty_layer

    def where_next(self) -> tuple[int, int] | None:
        """Centre the camera on the most uncertain region of the previewed plane without strokes."""
        last, labels = self.last, self._labels_layer
        if last is None or labels is None:
            return _uncertainty.where_next(self.viewer, None, None, labels)
        strokes: np.ndarray | None = np.asarray(layer_io.layer_array(labels)[last.index])
        if strokes.shape != last.uncertainty.shape:  # the user replaced the layer's data
            strokes = None
        return _uncertainty.where_next(self.viewer, last.uncertainty, strokes, labels, last.index)
