"""Rows of (image layer, labels layer) pickers, kept in sync with the viewer's layer list.

The pickers are magicgui's layer-typed combo boxes (``create_widget(annotation=Image)``); their
choices come from this viewer (previews left out), so they work before the widget is docked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from magicgui.widgets import ComboBox, Container, Label, PushButton, create_widget
from napari.layers import Image, Labels
from qtpy.QtWidgets import QSizePolicy

from ..data.layout import channel_axis_from_labels
from . import layers as layer_io
from ._form import compact

if TYPE_CHECKING:
    import napari


def _fits(image: Any, labels: Any) -> bool:
    """Whether ``labels`` were painted on ``image`` (on any level of a multiscale image)."""
    lab = tuple(layer_io.layer_array(labels).shape)
    for level in range(layer_io.level_count(image)):
        shape = layer_io.spatial_shape(image, level)
        if lab == shape or channel_axis_from_labels(shape, lab) is not None:
            return True
    return False


class PairRow(Container):
    """One training pair: ``image_combo`` and ``labels_combo`` pickers and a remove ("−") button."""

    def __init__(self, editor: PairsEditor) -> None:
        self.image_combo = editor.layer_picker(Image, "Image to learn from")
        self.labels_combo = editor.layer_picker(
            Labels, "Labels layer with the painted strokes: 0 unlabelled, 1..K classes"
        )
        self.remove_button = PushButton(text="−", tooltip="Remove this pair")
        self.remove_button.native.setFixedWidth(28)
        super().__init__(
            widgets=[self.image_combo, self.labels_combo, self.remove_button],
            layout="horizontal",
            labels=False,
        )
        self.margins = (0, 0, 0, 0)

    def pair(self) -> tuple[Any, Any]:
        return self.image_combo.value, self.labels_combo.value


class PairsEditor(Container):
    """One :class:`PairRow` per training pair; "+" adds a row (sizes may differ between pairs)."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self._viewer = viewer
        self.rows: list[PairRow] = []
        self.add_button = PushButton(text="+", tooltip="Add another image / labels pair (sizes may differ)")
        self.add_button.native.setFixedWidth(28)
        titles = [Label(value="Image"), Label(value="Labels (strokes)")]
        for title in titles:  # halves of the row like the pickers below, text on their left edge
            policy = QSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
            policy.setHorizontalStretch(1)
            title.native.setSizePolicy(policy)
        header = Container(widgets=[*titles, self.add_button], layout="horizontal", labels=False)
        header.margins = (0, 0, 0, 0)
        super().__init__(widgets=[header], labels=False)
        self.margins = (0, 0, 0, 0)
        self.add_button.changed.connect(lambda: self.add_row())
        self.add_row()
        events = viewer.layers.events
        for emitter in (events.inserted, events.removed, events.moved, events.reordered):
            emitter.connect(self._on_layers_changed)
        for layer in viewer.layers:
            layer.events.name.connect(self._on_layers_changed)

    def layer_picker(self, layer_type: type, tooltip: str) -> ComboBox:
        """A magicgui combo box of this viewer's layers of ``layer_type``, previews excluded."""

        def choices(_widget: Any) -> list[tuple[str, Any]]:
            return [
                (la.name, la)
                for la in self._viewer.layers
                if isinstance(la, layer_type) and not layer_io.is_preview(la)
            ]

        combo = cast(ComboBox, create_widget(annotation=layer_type, options={"choices": choices}))
        combo.tooltip = tooltip
        return compact(combo, 6)

    def pairs(self) -> list[tuple[Any, Any]]:
        """The chosen (image, labels) layers, one tuple per row (``None`` where nothing is chosen)."""
        return [row.pair() for row in self.rows]

    def set_pairs(self, pairs: list[tuple[Any, Any]]) -> None:
        while self.rows:
            self._remove_row(self.rows[-1])
        for image, labels in pairs or [(None, None)]:
            self.add_row(image, labels)

    def add_row(self, image: Any = None, labels: Any = None) -> PairRow:
        used = {id(i) for i, _ in self.pairs()}
        row = PairRow(self)
        self.rows.append(row)
        self.append(row)  # first: a container that gets a parent resets its combo boxes' choices
        if image is None:  # a new row proposes an image not used yet
            image = next((la for la in row.image_combo.choices if id(la) not in used), row.image_combo.value)
        _choose(row.image_combo, image)
        if labels is not None:
            _choose(row.labels_combo, labels)
        else:
            self._match_labels(row)
        row.image_combo.changed.connect(lambda _: self._match_labels(row))
        row.remove_button.changed.connect(lambda: self._remove_row(row))
        self._refresh_remove_buttons()
        return row

    def _remove_row(self, row: PairRow) -> None:
        self.rows.remove(row)
        self.remove(row)
        self._refresh_remove_buttons()

    def _refresh_remove_buttons(self) -> None:
        for row in self.rows:
            row.remove_button.enabled = len(self.rows) > 1

    def _match_labels(self, row: PairRow) -> None:
        image, labels = row.pair()
        if image is None or (labels is not None and _fits(image, labels)):
            return
        match = next((la for la in row.labels_combo.choices if _fits(image, la)), None)
        if match is not None:
            row.labels_combo.value = match

    def _on_layers_changed(self, event: Any = None) -> None:
        if event is not None and getattr(event, "type", "") == "inserted":
            event.value.events.name.connect(self._on_layers_changed)
        for row in self.rows:
            for combo in (row.image_combo, row.labels_combo):
                current = combo.value
                combo.reset_choices()
                if current is not None and current in combo.choices:
                    combo.value = current  # a renamed layer stays chosen
            self._match_labels(row)

    def set_enabled(self, enabled: bool) -> None:
        self.enabled = enabled


def _choose(combo: ComboBox, layer: Any) -> None:
    """Choose ``layer``; one that is not a candidate is listed anyway (validation reports it)."""
    if layer is None:
        return
    if layer not in combo.choices:
        combo.set_choice(layer.name, layer)
    combo.value = layer
