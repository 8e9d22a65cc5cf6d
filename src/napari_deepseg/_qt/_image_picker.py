"""A combo box of a viewer's image layers (the Train widget's previews left out), kept in sync with
the layer list: added, removed, moved and renamed layers; the chosen layer stays chosen. A second
combo box, shown only for multiscale layers, picks the pyramid level (0, the largest, by default)."""

from __future__ import annotations

from typing import Any

from napari.layers import Image
from qtpy.QtWidgets import QComboBox, QFormLayout, QHBoxLayout, QLabel, QWidget

from . import layers as layer_io


class ImagePicker:
    """``combo`` lists the viewer's image layers; ``selected()`` is the chosen one or ``None``;
    ``level_row`` (hidden unless the layer is multiscale) holds ``level_combo``, read by ``level()``."""

    def __init__(self, viewer: Any) -> None:
        self._viewer = viewer
        self._layers: list[Image] = []
        self.combo = QComboBox()
        self.combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.combo.setMinimumContentsLength(12)  # long layer names must not widen the dock
        self.level_combo = QComboBox()
        self.level_combo.setToolTip("Pyramid level to predict: 0 is the full resolution")
        self.level_row = QWidget()
        row = QHBoxLayout(self.level_row)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(QLabel("Level"))
        row.addWidget(self.level_combo, 1)
        self.level_row.hide()
        self._levels_of: Image | None = None
        self.combo.currentIndexChanged.connect(self._refresh_levels)
        events = viewer.layers.events
        events.inserted.connect(self._on_inserted)
        events.removed.connect(self.refresh)
        events.moved.connect(self.refresh)
        for layer in viewer.layers:
            layer.events.name.connect(self.refresh)
        self.refresh()

    def selected(self) -> Image | None:
        index = self.combo.currentIndex()
        return self._layers[index] if 0 <= index < len(self._layers) else None

    def level(self) -> int:
        """The chosen level of a multiscale layer (0 for other layers)."""
        return max(self.level_combo.currentIndex(), 0) if self.level_combo.count() > 1 else 0

    def add_level_row(self, layout: QFormLayout) -> None:
        """Put the level row into the widget's form (a row without a parent would be a window)."""
        layout.addRow(self.level_row)
        self._levels_of = None
        self._refresh_levels()

    def _refresh_levels(self, *_: Any) -> None:
        layer = self.selected()
        if layer is self._levels_of:  # the same layer: the user's level stays chosen
            return
        self._levels_of = layer
        count = layer_io.level_count(layer) if layer is not None else 1
        self.level_combo.clear()
        for level in range(count if count > 1 else 0):  # no choice to offer for a single level
            shape = " x ".join(str(n) for n in layer_io.spatial_shape(layer, level)[-2:])
            self.level_combo.addItem(f"{level}: {shape}")
        if self.level_row.parentWidget() is not None:
            self.level_row.setVisible(count > 1)

    def refresh(self, *_: Any) -> None:
        current = self.selected()
        self._layers = [
            la for la in self._viewer.layers if isinstance(la, Image) and not layer_io.is_preview(la)
        ]
        self.combo.blockSignals(True)
        self.combo.clear()
        self.combo.addItems([la.name for la in self._layers])
        if current in self._layers:
            self.combo.setCurrentIndex(self._layers.index(current))
        self.combo.blockSignals(False)
        self._refresh_levels()

    def _on_inserted(self, event: Any) -> None:
        event.value.events.name.connect(self.refresh)
        self.refresh()
