"""The Train dock fits its window: at the size a user works at (1500 x 950, Train and Predict
tabbed) no control of the settings form is cut off at the right edge, before and after a run."""

from __future__ import annotations

import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from qtpy.QtCore import QPoint

from napari_deepseg._qt._layout import FittingScrollArea
from napari_deepseg._qt.predict_widget import PredictWidget
from napari_deepseg._qt.train_widget import TrainWidget
from napari_deepseg.sample_data import fluorescence_sample_layers

from .conftest import FAST, TIMEOUT


def _overhang(widget: TrainWidget) -> dict[str, int]:
    """Pixels by which each pair button reaches past the right edge of the visible form."""
    area = widget.findChild(FittingScrollArea)
    viewport = area.viewport()
    editor = widget.pairs_editor
    buttons = {"+": editor.add_button.native, "−": editor.rows[0].remove_button.native}
    right = {k: b.mapTo(viewport, QPoint(b.width(), 0)).x() for k, b in buttons.items()}
    overhang = {k: max(0, x - viewport.width()) for k, x in right.items()}
    overhang["form"] = max(0, area.widget().width() - viewport.width())
    return overhang


def test_pair_buttons_stay_inside_the_dock(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    viewer.window.resize(1500, 950)
    image, labels = [viewer._add_layer_from_data(*item)[0] for item in fluorescence_sample_layers()]
    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Train")
    viewer.window.add_dock_widget(PredictWidget(viewer), name="Predict", tabify=True)
    widget.parent().raise_()
    widget.set_pairs([(image, labels)])
    widget.set_config(**{**FAST, "validation_fraction": 0.1, "validation_interval": 5})
    qtbot.wait(300)
    assert _overhang(widget) == {"+": 0, "−": 0, "form": 0}

    with qtbot.waitSignal(widget.training_finished, timeout=TIMEOUT):
        widget.start_button.click()
    qtbot.wait(300)  # the layout passes a user's next frame would see
    assert _overhang(widget) == {"+": 0, "−": 0, "form": 0}
    widget.controls.advanced.expand(animate=False)  # taller than the dock: the scroll bar shows
    qtbot.wait(300)
    assert widget.findChild(FittingScrollArea).verticalScrollBar().isVisible()
    assert _overhang(widget) == {"+": 0, "−": 0, "form": 0}
