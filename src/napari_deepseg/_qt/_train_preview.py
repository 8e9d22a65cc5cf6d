"""The Train widget's live preview on the GUI side: it tells the worker which part of which plane
the user looks at, shows the previews (classes and uncertainty) and answers "Where next?"."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image, Labels
from napari.utils import notifications
from napari.utils.colormaps import DirectLabelColormap
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QCheckBox, QWidget

from . import _results, _uncertainty
from . import layers as layer_io
from ._preview_job import PREVIEW_MAX_PIXELS, Preview, PreviewSettings

if TYPE_CHECKING:
    import napari

# From Start to the first preview layer, and from the end of one layer to the next: each in a
# turn of its own, added before the worker starts (its model build competes for the cores).
LAYER_DELAY_MS = 50
THUMBNAIL_DELAY_MS = 300  # from a preview to its layers' thumbnails ...
THUMBNAIL_GAP_MS = 50  # ... each a turn apart


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
            self._place(plane.shape)  # a layer of an earlier run, maybe of another level
            if isinstance(self.layer.data, np.ndarray):  # ours: an earlier run's buffer
                self._buffer = self.layer.data
        if layer_io.in_viewer(self.viewer, self.layer) and not write_in_place(
            self.layer, self._buffer, plane
        ):
            self._buffer = plane.copy()
            self.layer.data = self._buffer

    def _add(self, plane: np.ndarray) -> Any:
        colors = {None: (0, 0, 0, 0), 0: (0, 0, 0, 0), **self._colors}
        scale, translate = _uncertainty.level_placement(self._image_layer, plane.shape)
        layer = Labels(
            plane,
            name=self.name,
            opacity=0.5,
            colormap=DirectLabelColormap(color_dict=colors),
            scale=scale,
            translate=translate,
            metadata={layer_io.PREVIEW_METADATA_KEY: True},
        )
        _uncertainty.insert_below(self.viewer, layer, self._labels_layer)  # strokes stay visible above
        return layer

    def _place(self, shape: tuple[int, ...]) -> None:
        """Over the image level the preview is computed on (each change refreshes the layer)."""
        scale, translate = _uncertainty.level_placement(self._image_layer, shape)
        if not np.array_equal(self.layer.scale, scale):
            self.layer.scale = scale
        if not np.array_equal(self.layer.translate, translate):
            self.layer.translate = translate


def level_factors(layer: Any, image: layer_io.ImageCopy) -> np.ndarray:
    """How many level-0 pixels of ``layer`` one pixel of ``image`` (its copy, of some level) spans
    along each spatial axis of the copy: 1 everywhere but for a level > 0 of a pyramid."""
    full = list(layer_io.spatial_shape(layer))
    if image.layer_channel_axis is not None:
        del full[image.layer_channel_axis]
    shape = image.spatial_shape
    full = full[-len(shape) :]
    if len(full) != len(shape):
        return np.ones(len(shape))
    return np.divide(full, shape)


def write_in_place(layer: Any, buffer: np.ndarray | None, plane: np.ndarray) -> bool:
    """Copy ``plane`` into ``buffer`` and refresh ``layer``, if the layer still shows ``buffer``
    (an array of ours) and the shapes agree; ``False`` (nothing done) otherwise.

    Setting ``layer.data`` instead would re-emit the layer's data events and, for labels, build a
    new colormap (a shader link on the GUI thread, tens of ms with software OpenGL) every preview.
    Only the slice and its texture are refreshed: the extent (shape, scale) is unchanged and the
    thumbnail follows in a turn of its own (:func:`refresh_thumbnail`).
    """
    if (
        buffer is None
        or layer.data is not buffer
        or buffer.shape != plane.shape
        or buffer.dtype != plane.dtype
    ):
        return False
    np.copyto(buffer, plane)
    layer.refresh(thumbnail=False, highlight=False, extent=False)
    return True


def refresh_thumbnail(layer: Any) -> None:
    """The layer list's thumbnail of ``layer`` (its slice again, then the thumbnail)."""
    layer.refresh(data_displayed=False, highlight=False, extent=False)


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
        self._stale_thumbnails: list[Any] = []  # layers whose thumbnail a preview left behind
        self._ready: Callable[[], Any] | None = None  # what begin() calls once the layers are in
        self.uncertainty_checkbox, self.where_button = _uncertainty.uncertainty_row(self, "preview")
        # Timers, not posted events: Qt runs the viewer's overdue timers before them.
        self._layers_timer = QTimer(self, singleShot=True, interval=LAYER_DELAY_MS, timeout=self._add_layers)
        self._thumbnail_timer = QTimer(self, singleShot=True, timeout=self._refresh_thumbnails)

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

    def begin(
        self,
        settings: PreviewSettings,
        image_layer: Any,
        labels_layer: Any,
        num_classes: int,
        ready: Callable[[], Any] = lambda: None,
    ) -> None:
        """A run starts: preview ``image_layer`` (the first pair) with ``settings``; ``ready`` is
        called once the run's preview layers are in the viewer (at once without a preview)."""
        self.settings, self.last, self._ready = settings, None, ready
        self._image_layer, self._labels_layer = image_layer, labels_layer
        settings.enabled = self.enabled_checkbox.isChecked() and not settings.too_large
        if settings.too_large and self.enabled_checkbox.isChecked():
            height, width = settings.plane_shape
            notifications.show_info(
                f"No live preview for this image: its planes have {height * width / 2**20:.0f} M pixels "
                f"({height} x {width}), more than the preview's {PREVIEW_MAX_PIXELS // 2**20} M. Training "
                "goes on; to look at the model, Stop (or wait) and predict a crop or a pyramid level in "
                "the Predict widget."
            )
        self.update_view()
        self.layer = PreviewLayer(self.viewer, image_layer, labels_layer, num_classes)
        self._uncertainty_layer = self._uncertainty_buffer = None
        if settings.enabled:  # the layers are added once Start has returned, one per turn
            self._layers_timer.start(LAYER_DELAY_MS)
        else:
            self._call_ready()

    def _call_ready(self) -> None:
        ready, self._ready = self._ready, None
        if ready is not None:
            ready()

    def _add_layers(self) -> None:
        """Add the run's empty preview layers, each in a turn of the event loop of its own: adding a
        layer costs the GUI thread 100-150 ms (napari's layer controls, a vispy visual), too
        much to add both while Start is handled. A preview that comes first adds its own."""
        settings = self.settings
        if settings is None or not settings.enabled or self.layer is None:
            self._call_ready()
            return
        if self.layer.layer is None:
            self.layer.create_empty(settings.plane_shape)
            if self.uncertainty_checkbox.isChecked() and self._uncertainty_layer is None:
                self._layers_timer.start(LAYER_DELAY_MS)  # the uncertainty layer next time
                return
        elif self.uncertainty_checkbox.isChecked() and self._uncertainty_layer is None:
            self._show_uncertainty(np.zeros(settings.plane_shape, np.float32))
        self._call_ready()

    def end(self) -> None:
        """The run ended: stop following the camera; the last preview stays for "Where next?"."""
        self.settings = None

    def show(self, preview: Preview) -> None:
        self.last = preview
        if self.layer is not None:
            self.layer.show(preview.labels)
        if self.uncertainty_checkbox.isChecked():
            self._show_uncertainty(preview.uncertainty)
        self._stale_thumbnails = [self.layer.layer if self.layer else None, self._uncertainty_layer]
        self._thumbnail_timer.start(THUMBNAIL_DELAY_MS)

    def _refresh_thumbnails(self) -> None:
        """One stale thumbnail per turn: each repaints the layer list."""
        while self._stale_thumbnails:
            layer = self._stale_thumbnails.pop(0)
            if layer is not None and layer_io.in_viewer(self.viewer, layer):
                refresh_thumbnail(layer)
                break
        if self._stale_thumbnails:
            self._thumbnail_timer.start(THUMBNAIL_GAP_MS)

    def update_view(self, _event: Any = None) -> None:
        """Tell the worker which plane, and which part of it, the canvas shows now."""
        settings = self.settings
        if settings is None:
            return
        layer, image = self._image_layer, settings.image
        index = layer_io.plane_index(layer, self.viewer.dims.point, image)
        region = layer_io.visible_region(self.viewer, layer, image)
        # Both are in level-0 pixels; a multiscale image trains (and previews) on its strokes' level.
        factors = level_factors(layer, image)
        if np.any(factors != 1):
            index = tuple(
                min(int(i / f), n - 1) for i, f, n in zip(index, factors[:-2], image.spatial_shape[:-2])
            )
            if region is not None:
                (fy, fx), (y0, y1, x0, x1) = factors[-2:], region
                region = (
                    math.floor(y0 / fy),
                    math.ceil(y1 / fy),
                    math.floor(x0 / fx),
                    math.ceil(x1 / fx),
                )
        # One tuple write each: the worker reads them between iterations.
        settings.index, settings.region = index, region

    def _on_enabled_toggled(self, checked: bool) -> None:
        if self.settings is not None:
            self.settings.enabled = checked and not self.settings.too_large

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
