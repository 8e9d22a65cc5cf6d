"""Rows of (image layer, labels layer) comboboxes, kept in sync with the viewer's layer list."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from napari.layers import Image, Labels
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QComboBox, QGridLayout, QLabel, QPushButton, QWidget

from . import layers as layer_io

if TYPE_CHECKING:
    import napari


class LayerComboBox(QComboBox):
    """The viewer's layers of one type (previews excluded); ``layer()`` is the chosen one."""

    def __init__(self, viewer: napari.viewer.Viewer, layer_type: type, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._viewer = viewer
        self._type = layer_type
        self.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.setMinimumContentsLength(6)
        self.refresh()

    def candidates(self) -> list[Any]:
        return [la for la in self._viewer.layers
                if isinstance(la, self._type) and not layer_io.is_preview(la)]

    def layer(self) -> Any:
        return self.currentData() if self.currentIndex() >= 0 else None

    def _index_of(self, layer: Any) -> int:
        return next((i for i in range(self.count()) if self.itemData(i) is layer), -1)

    def set_layer(self, layer: Any) -> None:
        """Choose ``layer``; one that is not a candidate is listed anyway (validation reports it)."""
        index = self._index_of(layer)
        if index < 0 and layer is not None:
            self.addItem(layer.name, layer)
            index = self.count() - 1
        self.setCurrentIndex(index)

    def refresh(self) -> None:
        current = self.layer()
        self.blockSignals(True)
        self.clear()
        for layer in self.candidates():
            self.addItem(layer.name, layer)
            self.setItemData(self.count() - 1, layer.name, Qt.ToolTipRole)  # names are often cut
        index = self._index_of(current)
        self.setCurrentIndex(index if index >= 0 else (0 if self.count() else -1))
        self.blockSignals(False)
        if self.layer() is not current:
            self.currentIndexChanged.emit(self.currentIndex())


def _fits(image: Any, labels: Any) -> bool:
    shape = tuple(layer_io.layer_array(image).shape)
    shape = shape[:-1] if getattr(image, "rgb", False) else shape
    lab = tuple(layer_io.layer_array(labels).shape)
    return lab == shape or layer_io.infer_channel_axis(shape, lab) is not None


class PairsEditor(QWidget):
    """One row per training pair: image combo, labels combo, "−"; "+" adds a row."""

    def __init__(self, viewer: napari.viewer.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._viewer = viewer
        self._rows: list[tuple[LayerComboBox, LayerComboBox, QPushButton]] = []
        self._grid = QGridLayout(self)
        self._grid.setContentsMargins(0, 0, 0, 0)
        self._grid.setColumnStretch(0, 1)
        self._grid.setColumnStretch(1, 1)
        self._grid.addWidget(QLabel("Image"), 0, 0)
        self._grid.addWidget(QLabel("Labels (strokes)"), 0, 1)
        self.add_button = QPushButton("+")
        self.add_button.setToolTip("Add another image / labels pair (sizes may differ)")
        self.add_button.setFixedWidth(28)
        self.add_button.clicked.connect(lambda: self.add_row())
        self._grid.addWidget(self.add_button, 0, 2)
        self.add_row()
        events = viewer.layers.events
        for emitter in (events.inserted, events.removed, events.moved, events.reordered):
            emitter.connect(self._on_layers_changed)
        for layer in viewer.layers:
            layer.events.name.connect(self._on_layers_changed)

    def pairs(self) -> list[tuple[Any, Any]]:
        """The chosen (image, labels) layers, one tuple per row (``None`` where nothing is chosen)."""
        return [(image.layer(), labels.layer()) for image, labels, _ in self._rows]

    def set_pairs(self, pairs: list[tuple[Any, Any]]) -> None:
        while self._rows:
            self._remove_row(self._rows[-1][2])
        for image, labels in pairs or [(None, None)]:
            self.add_row(image, labels)

    def add_row(self, image: Any = None, labels: Any = None) -> None:
        image_combo, labels_combo = LayerComboBox(self._viewer, Image), LayerComboBox(self._viewer, Labels)
        image_combo.setToolTip("Image to learn from")
        labels_combo.setToolTip("Labels layer with the painted strokes: 0 unlabelled, 1..K classes")
        remove = QPushButton("−")
        remove.setToolTip("Remove this pair")
        remove.setFixedWidth(28)
        remove.clicked.connect(lambda: self._remove_row(remove))
        if image is None:  # a new row proposes an image not used yet
            used = {id(i) for i, _ in self.pairs()}
            image = next((la for la in image_combo.candidates() if id(la) not in used), image_combo.layer())
        image_combo.set_layer(image)
        if labels is not None:
            labels_combo.set_layer(labels)
        else:
            self._match_labels(image_combo, labels_combo)
        image_combo.currentIndexChanged.connect(lambda _: self._match_labels(image_combo, labels_combo))
        self._rows.append((image_combo, labels_combo, remove))
        self._relayout()

    def _remove_row(self, button: QPushButton) -> None:
        row = next(r for r in self._rows if r[2] is button)
        self._rows.remove(row)
        for widget in row:
            self._grid.removeWidget(widget)
            widget.deleteLater()
        if self._rows:
            self._relayout()

    def _relayout(self) -> None:
        for i, row in enumerate(self._rows, start=1):
            for column, widget in enumerate(row):
                self._grid.addWidget(widget, i, column)
            row[2].setEnabled(len(self._rows) > 1)

    def _match_labels(self, image_combo: LayerComboBox, labels_combo: LayerComboBox) -> None:
        image, labels = image_combo.layer(), labels_combo.layer()
        if image is None or (labels is not None and _fits(image, labels)):
            return
        match = next((la for la in labels_combo.candidates() if _fits(image, la)), None)
        if match is not None:
            labels_combo.set_layer(match)

    def _on_layers_changed(self, event: Any = None) -> None:
        if event is not None and getattr(event, "type", "") == "inserted":
            event.value.events.name.connect(self._on_layers_changed)
        for image, labels, _ in self._rows:
            image.refresh()
            labels.refresh()
            self._match_labels(image, labels)

    def set_enabled(self, enabled: bool) -> None:
        self.setEnabled(enabled)
