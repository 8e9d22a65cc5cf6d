"""Predict widget: segment an image layer in a worker; the minimum-probability slider re-thresholds the
cached ``CompactProbabilities`` (2 bytes per pixel) with :func:`apply_threshold`, never the network
(for a large image, on disk: lazy views at the new threshold, of which napari computes what it shows).
The uncertainty layer and "Where next?" come from the same cached result. A result hides the
Train widget's preview of the same image, whose colours would otherwise show through unclassified pixels.
A large result's layer is read-only ("Editable copy" copies it into memory when it fits); its temporary
store is deleted when a new result replaces it or its layer is deleted from the viewer."""

from __future__ import annotations

import copy
import threading
from pathlib import Path
from typing import Any

from napari.layers import Image, Labels, Layer
from napari.utils import notifications
from qtpy.QtCore import Qt, QTimer, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSlider,
    QWidget,
)
from superqt.utils import FunctionWorker, create_worker

from ..prediction import CompactProbabilities, apply_threshold
from ..segmentation_model import SegmentationModel
from . import _large_labels, _results
from . import layers as layer_io
from ._export_dialog import ExportRow
from ._image_picker import ImagePicker
from ._large_labels import LargeLabels
from ._layout import row
from ._model_dialogs import ask_load_path, load_model_file
from ._predict_job import TileCount, error_text, model_text, predict_image, result_text
from ._session import model_store
from ._train_run import show_warning
from ._uncertainty import PredictionUncertainty


class PredictWidget(QWidget):
    """Pick a model and an image layer, predict in a worker, threshold the cached result live.

    Parameters
    ----------
    napari_viewer
        The viewer whose image layers are segmented; results become new Labels layers.
    """

    prediction_finished = Signal(object)  # the result Labels layer
    prediction_failed = Signal(str)

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self._viewer = napari_viewer
        self._store = model_store()
        self._model_names: list[str] = []
        self._known_models: dict[str, SegmentationModel | None] = {}
        self._stop = threading.Event()
        # The worker writes tile counts here and a timer shows them: a signal of this widget emitted
        # from the worker after the widget was deleted (the viewer closed mid-run) crashes the process.
        self._tiles = TileCount()
        self._pending: tuple[Image, SegmentationModel] | None = None
        self.worker: FunctionWorker | None = None
        self.result_layer: Labels | None = None
        self.compact: CompactProbabilities | None = None
        self.large: LargeLabels | None = None  # the result on disk of a large image

        self.model_combo = QComboBox()
        self.load_button = QPushButton("Load model…")
        self.model_info = QLabel()
        self.model_info.setWordWrap(True)
        self.model_info.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.export_row = ExportRow(lambda: self.model)  # enabled while a model is selected
        self.images = ImagePicker(napari_viewer)
        self.image_combo = self.images.combo
        self.model_combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.model_combo.setMinimumContentsLength(12)  # long model names must not widen the dock
        self.threshold_slider = QSlider(Qt.Horizontal)
        self.threshold_slider.setRange(0, 100)  # percent; starts at 0: every pixel gets a class
        self.threshold_label = QLabel("0 %")
        self.threshold_label.setMinimumWidth(40)
        self.threshold_slider.setToolTip(
            "A pixel gets its most probable class only if that probability "
            "reaches this value; other pixels stay 0 (unclassified)."
        )
        self.probabilities_checkbox = QCheckBox("Also show per-class probabilities")
        self.mirroring_checkbox = QCheckBox("Average over mirror images (4x slower)")
        self.mirroring_checkbox.setToolTip(
            "Test-time augmentation: each tile is also predicted mirrored left-right, up-down and "
            "both, and the four results are averaged. Smoother probabilities, usually slightly more "
            "accurate; four times the time."
        )
        self.uncertainty = PredictionUncertainty(napari_viewer)
        self.uncertainty_checkbox = self.uncertainty.checkbox
        self.where_button = self.uncertainty.where_button
        self.predict_button = QPushButton("Predict")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.progress_bar = QProgressBar()
        self.progress_bar.setVisible(False)
        self.copy_button = QPushButton("Editable copy")
        self.copy_button.setToolTip(
            "The result of a large image is read-only: copy it at this threshold into an editable "
            "Labels layer in memory (the result is hidden; the slider no longer changes the copy)."
        )
        self.copy_button.setVisible(False)  # shown for large results only
        self.status_label = QLabel("")
        self.status_label.setWordWrap(True)

        layout = QFormLayout(self)
        layout.addRow("Model", row(self.model_combo, self.load_button))
        layout.addRow(self.model_info)
        layout.addRow("Export", self.export_row)
        layout.addRow("Image", self.image_combo)
        self.images.add_level_row(layout)  # shown for multiscale layers only
        layout.addRow("Min. probability", row(self.threshold_slider, self.threshold_label))
        layout.addRow(self.probabilities_checkbox)
        layout.addRow(self.mirroring_checkbox)
        layout.addRow(self.uncertainty)
        layout.addRow(row(self.predict_button, self.cancel_button))
        layout.addRow(self.progress_bar)
        layout.addRow(self.copy_button)
        layout.addRow(self.status_label)

        self.load_button.clicked.connect(self._ask_model_file)
        self.model_combo.currentIndexChanged.connect(self._show_model_info)
        self.threshold_slider.valueChanged.connect(self._on_threshold_changed)
        self.predict_button.clicked.connect(self.predict)
        self.cancel_button.clicked.connect(self.cancel)
        self.copy_button.clicked.connect(self.editable_copy)
        napari_viewer.layers.events.removed.connect(self._on_layer_removed)
        self._progress_timer = QTimer(self, interval=100, timeout=self._show_progress)
        stop = self._stop  # not self: the slot outlives the widget; destroyed's argument is dropped
        self.destroyed.connect(lambda *_: stop.set())  # the viewer or the dock closed: the worker stops
        self._store.changed.connect(self._refresh_models)
        self._refresh_models()

    # ---- models -------------------------------------------------------------------------------
    @property
    def model(self) -> SegmentationModel | None:
        """The selected model (the store's current object under that name, so live training shows)."""
        index = self.model_combo.currentIndex()
        return self._store.get(self._model_names[index]) if 0 <= index < len(self._model_names) else None

    def _refresh_models(self) -> None:
        names = self._store.names()
        current = self.model_combo.currentText()
        objects = {n: self._store.get(n) for n in names}
        # A new name, or a new model under a known name (trained again), wins; re-publishing the
        # same object (progress of the run being trained) keeps the user's choice.
        new = [n for n in names if self._known_models.get(n) is not objects[n]]
        self._known_models = objects
        self._model_names = names
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        self.model_combo.addItems(names)
        if names:
            self.model_combo.setCurrentIndex(
                names.index(new[-1]) if new or current not in names else names.index(current)
            )
        self.model_combo.blockSignals(False)
        self._show_model_info()

    def _show_model_info(self, *_: Any) -> None:
        model = self.model
        self.model_info.setText(model_text(model))
        self.export_row.refresh()
        self.model_info.setToolTip(model.summary() if model is not None else "")

    def _ask_model_file(self) -> None:
        if path := ask_load_path(self):
            self.load_model(path)

    def load_model(self, path: str | Path) -> SegmentationModel | None:
        """Load a model file, publish it under its file name and select it; None (and a
        notification) when the file cannot be used."""
        model = load_model_file(path)
        if model is None:
            return None
        name = Path(path).name
        self._store.publish(name, model)
        self.model_combo.setCurrentIndex(self._model_names.index(name))
        return model

    # ---- prediction ---------------------------------------------------------------------------
    @property
    def min_probability(self) -> float:
        return self.threshold_slider.value() / 100

    def predict(self, *_: Any, image_layer: Layer | None = None) -> None:
        """Predict the selected (or given) image layer in a worker; results arrive asynchronously."""
        if self.cancel_button.isEnabled():  # a prediction is running
            return None
        layer = image_layer if image_layer is not None else self.images.selected()
        model = self.model
        if model is None:
            return self._fail(
                "No model selected: train one in the Train widget or load a model file with 'Load model…'."
            )
        if layer is None:
            return self._fail("No image layer to segment: open an image first.")
        if not isinstance(layer, Image):
            return self._fail(
                f"'{layer.name}' is a {type(layer).__name__} layer; choose an image layer to segment."
            )
        if model.training_in_progress:  # the Train widget is training it now: predict with a snapshot
            model = copy.deepcopy(model)
        data = layer_io.lazy(layer_io.level_array(layer, self.images.level()))  # read tile by tile
        channel_axis = -1 if layer.rgb else None
        self._stop.clear()
        self.status_label.clear()  # a failed or cancelled run must not leave the last success here
        self._set_busy(True)
        self.worker = create_worker(
            predict_image,
            model,
            data,
            channel_axis,
            self.probabilities_checkbox.isChecked(),
            self._tiles,
            self._stop.is_set,
            self.mirroring_checkbox.isChecked(),
            _start_thread=False,
            _connect={
                "errored": self._on_errored,
                "finished": self._on_worker_finished,
                "warned": show_warning,  # e.g. out of memory: trying again with smaller tiles
            },
        )
        self._pending = (layer, model)
        self._tiles.reset()
        self.worker.returned.connect(self._on_result)  # bound methods: disconnected if the widget goes
        self.worker.start()
        return None

    def cancel(self) -> None:
        self._stop.set()

    def _set_busy(self, busy: bool) -> None:
        try:
            for widget in (
                self.predict_button,
                self.load_button,
                self.model_combo,
                self.image_combo,
                self.probabilities_checkbox,
            ):
                widget.setEnabled(not busy)
            self.cancel_button.setEnabled(busy)
            self.progress_bar.setVisible(busy)
            self.progress_bar.setRange(0, 0)  # busy indicator until the first tile is done
            if busy:
                self._progress_timer.start()
            else:
                self._progress_timer.stop()
        except RuntimeError:  # the dock was closed while a prediction was still finishing
            return

    def _on_worker_finished(self) -> None:
        self._set_busy(False)

    def _show_progress(self) -> None:
        done, total = self._tiles.done, self._tiles.total
        if total:
            self.progress_bar.setRange(0, total)
            self.progress_bar.setValue(done)

    def _fail(self, message: str) -> None:
        notifications.show_error(message)
        self.prediction_failed.emit(message)

    def _on_errored(self, error: BaseException) -> None:
        self._set_busy(False)
        if isinstance(error, InterruptedError):
            notifications.show_info("Prediction cancelled.")
            self.prediction_failed.emit("cancelled")
        elif (message := error_text(error)) is not None:
            self._fail(message)
        else:  # unexpected: full traceback in napari's notification
            notifications.notification_manager.receive_error(type(error), error, error.__traceback__)
            self.prediction_failed.emit(f"{type(error).__name__}: {error}")

    def _on_result(self, result: tuple[CompactProbabilities | None, Any]) -> None:
        if self._pending is None:
            return
        (image, model), self._pending = self._pending, None
        self._set_busy(False)
        self.compact, self.result_layer = _results.show_result(
            self._viewer, image, model, result, self.min_probability
        )
        self._set_large(result[1] if isinstance(result[1], LargeLabels) else None)
        self.uncertainty.set_result(image, self.result_layer, self.compact)  # None: a large image
        hidden = _results.hide_training_preview(
            self._viewer, image
        )  # else it shows through unclassified pixels
        self.status_label.setText(result_text(image.name, self.result_layer.name, hidden, result[1]))
        self.prediction_finished.emit(self.result_layer)

    # ---- large results ------------------------------------------------------------------------
    def _shown(self, large: LargeLabels) -> bool:
        return any(isinstance(la, Labels) and large.is_shown_by(la) for la in self._viewer.layers)

    def _set_large(self, large: LargeLabels | None) -> None:
        """Keep ``large`` (or none); the store of the one it replaces goes unless a layer shows it."""
        old, self.large = self.large, large
        if old is not None and old is not large and not self._shown(old):
            old.remove()
        fits = large is not None and large.size <= _large_labels.EDITABLE_PIXELS
        try:
            self.copy_button.setVisible(large is not None)
            self.copy_button.setEnabled(fits)
        except RuntimeError:  # the dock was closed
            return

    def _on_layer_removed(self, *_: Any) -> None:
        if self.large is not None and not self._shown(self.large):  # its layer was deleted
            self._set_large(None)

    def editable_copy(self, *_: Any) -> Labels | None:
        """Copy the large result shown (at its threshold) into an editable Labels layer in memory."""
        layer, large = self.result_layer, self.large
        if layer is None or large is None or layer not in self._viewer.layers or not large.is_shown_by(layer):
            self._fail("No large result to copy: predict a large image first.")
            return None
        if large.size > _large_labels.EDITABLE_PIXELS:
            self._fail(
                f"The result has {large.size / 2**20:.0f} M pixels, too many to copy into "
                f"memory (at most {_large_labels.EDITABLE_PIXELS / 2**20:.0f} M): predict a crop or a "
                "coarser level to edit it."
            )
            return None
        copy_layer = _results.editable_copy(self._viewer, layer)
        self.status_label.setText(
            f"Copied '{layer.name}' at {self.threshold_slider.value()} % into '{copy_layer.name}', "
            f"which you can edit; '{layer.name}' is hidden and the slider still changes it only."
        )
        return copy_layer

    # ---- threshold ----------------------------------------------------------------------------
    def _on_threshold_changed(self, value: int) -> None:
        self.threshold_label.setText(f"{value} %")
        layer, compact, large = self.result_layer, self.compact, self.large
        # ``in`` compares with ==, which also matches napari's PublicOnlyProxy wrappers (``is`` does not).
        if layer is None or layer not in self._viewer.layers:
            return
        if compact is not None and layer.data.shape == compact.shape:  # the user may have replaced the data
            layer.data = apply_threshold(compact, value / 100)
        elif large is not None and large.is_shown_by(layer):  # napari thresholds the chunks it shows
            _results.replace_levels(layer, large.labels(value / 100))
