"""A combo box of a viewer's image layers (the Train widget's previews left out), kept in sync with
the layer list: added, removed, moved and renamed layers; the chosen layer stays chosen."""

from __future__ import annotations

from typing import Any

from napari.layers import Image
from qtpy.QtWidgets import QComboBox

from . import layers as layer_io


class ImagePicker:
    """``combo`` lists the viewer's image layers; ``selected()`` is the chosen one or ``None``."""

    def __init__(self, viewer: Any) -> None:
        self._viewer = viewer
        self._layers: list[Image] = []
        self.combo = QComboBox()
        self.combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.combo.setMinimumContentsLength(12)  # long layer names must not widen the dock
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

    def _on_inserted(self, event: Any) -> None:
        event.value.events.name.connect(self.refresh)
        self.refresh()
