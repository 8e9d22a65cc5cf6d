"""Training while the user works: strokes painted during a run, the preview of the visible region,
uncertainty and "Where next?", and the three ways a run ends."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from napari.utils import notifications

from napari_deepseg import suggest_next_region
from napari_deepseg._qt import layers as layer_io
from napari_deepseg._qt._train_controls import MINUTES, UNTIL_STOPPED
from napari_deepseg._qt.train_widget import TrainWidget
from napari_deepseg.sample_data import fluorescence_sample_layers

from .conftest import FAST, TIMEOUT
from .test_train_widget import _assert_unchanged, _copies


def _counts(labels: np.ndarray, num_classes: int = 2) -> tuple[int, ...]:
    return tuple(int(n) for n in np.bincount(labels.ravel(), minlength=num_classes + 1)[1 : num_classes + 1])


def _wait_for_counts(qtbot, widget: TrainWidget, expected: tuple[int, ...]) -> None:
    qtbot.waitUntil(
        lambda: widget.last_record is not None and widget.last_record.painted_pixels == expected,
        timeout=TIMEOUT,
    )


def _unlabelled_spot(labels: np.ndarray, radius: int) -> tuple[int, int]:
    """A pixel whose (2 radius + 1)-square neighbourhood has no stroke."""
    h, w = labels.shape
    for y in range(radius, h - radius, 4):
        for x in range(radius, w - radius, 4):
            if not labels[y - radius : y + radius + 1, x - radius : x + radius + 1].any():
                return y, x
    raise AssertionError("no unlabelled spot")


def test_strokes_painted_during_a_run_are_learned_without_a_restart(trainer_setup, qtbot, errors):
    viewer, widget, image, labels = trainer_setup
    image_before = np.array(image.data, copy=True)
    widget.set_config(iterations=None, preview=False)  # until I stop
    assert widget.config().iterations is None and widget.config().max_minutes is None
    widget.start_button.click()
    run = widget._holder.run
    assert run.progress.total == 0  # no limit: a busy indicator
    before = _counts(labels.data)
    _wait_for_counts(qtbot, widget, before)
    worker, first = widget.worker, widget.last_record.iteration

    # Paint class 2 with the brush where nothing was painted: napari's paint event.
    y, x = _unlabelled_spot(labels.data, 6)
    labels.brush_size = 9
    labels.paint((y, x), 2)
    painted = _counts(labels.data)
    assert painted[1] > before[1]
    _wait_for_counts(qtbot, widget, painted)
    assert widget.worker is worker and widget.last_record.iteration > first  # the same run goes on
    assert widget.trainer.painted_pixels == painted
    assert f"painted: background {painted[0]} · nucleus {painted[1]}" in widget.status_label.text()

    # Erase every class-1 stroke in the top half by replacing the data: the layer's data event.
    erased = np.array(labels.data, copy=True)
    top = erased[:128]
    top[top == 1] = 0
    labels.data = erased
    _wait_for_counts(qtbot, widget, _counts(erased))
    assert widget.worker is worker

    # A class the network was not built for: a clear message, the run goes on unchanged.
    labels.paint(_unlabelled_spot(labels.data, 6), 3)
    qtbot.waitUntil(lambda: bool(errors), timeout=TIMEOUT)
    assert "not learned" in errors[0] and f"'{labels.name}'" in errors[0]
    iteration = widget.last_record.iteration
    qtbot.waitUntil(lambda: widget.last_record.iteration > iteration + 1, timeout=TIMEOUT)
    assert widget.last_record.painted_pixels == _counts(erased) and widget.worker is worker

    with qtbot.waitSignal(widget.training_finished, timeout=TIMEOUT):
        widget.stop()
    assert "stopped" in widget.status_label.text()
    labels.paint(_unlabelled_spot(labels.data, 6), 2)  # after the run: nobody listens any more
    qtbot.wait(500)
    assert len(errors) == 1
    np.testing.assert_array_equal(image.data, image_before)  # training never writes to the layers


def test_minutes_budget_goes_to_the_config_and_ends_the_run(trainer_setup, qtbot, errors):
    _viewer, widget, image, labels = trainer_setup
    copies = _copies(image, labels)
    controls = widget.controls
    controls.stop_combo.value = MINUTES
    controls.minutes_spin.value = 0.05  # 3 s
    assert controls.minutes_spin.native.isVisibleTo(widget)
    assert not controls.iterations_spin.native.isVisibleTo(widget)
    config = widget.config()
    assert config.max_minutes == pytest.approx(0.05) and config.iterations is None
    with qtbot.waitSignal(widget.training_finished, timeout=TIMEOUT) as blocker:
        widget.start_button.click()
        assert widget._holder.run.progress.total == 100  # percent of the time budget
        qtbot.waitUntil(lambda: widget.last_record is not None, timeout=TIMEOUT)
    model, record = blocker.args[0], widget.last_record
    assert model.config.max_minutes == pytest.approx(0.05) and model.config.iterations is None
    assert record.finished and record.last_iteration is None and record.fraction_done == pytest.approx(1.0)
    assert record.elapsed_seconds >= 2.9 and "finished" in widget.status_label.text()
    assert errors == []
    _assert_unchanged((image, labels), copies)

    widget.set_config(iterations=3)  # naming one limit in a script picks that one
    assert widget.config().iterations == 3 and widget.config().max_minutes is None
    widget.controls.stop_combo.value = UNTIL_STOPPED
    assert not widget.controls.iterations_spin.native.isVisibleTo(widget)
    assert widget.config().until_stopped


def _layers_with_scale(viewer):
    (image, image_meta, _), (strokes, strokes_meta, _) = fluorescence_sample_layers()
    where = dict(scale=(2.0, 2.0), translate=(5.0, -3.0))
    return (
        viewer.add_image(image, name=image_meta["name"], **where),
        viewer.add_labels(strokes, name=strokes_meta["name"], **where),
    )


def test_uncertainty_layer_and_where_next(make_napari_viewer, qtbot, errors, monkeypatch):
    viewer = make_napari_viewer()
    image, labels = _layers_with_scale(viewer)
    copies = _copies(image, labels)
    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Train")
    widget.set_pairs([(image, labels)])
    widget.set_config(**{**FAST, "iterations": 6}, preview_interval=2)
    widget.uncertainty_checkbox.setChecked(True)
    with qtbot.waitSignal(widget.training_finished, timeout=TIMEOUT):
        widget.start_button.click()
    last = widget.preview.last
    assert last is not None and last.uncertainty.shape == labels.data.shape
    layer = viewer.layers[f"{image.name} uncertainty"]
    assert layer.data.shape == labels.data.shape and layer.data.dtype == np.float32
    np.testing.assert_array_equal(layer.data, last.uncertainty)
    assert tuple(layer.contrast_limits) == (0.0, 1.0) and layer.colormap.name == "magma"
    assert tuple(layer.scale) == (2.0, 2.0) and tuple(layer.translate) == (5.0, -3.0)
    assert 0 < last.uncertainty.max() <= 1 and 0 <= last.uncertain_fraction <= 1
    assert viewer.layers.index(layer) < viewer.layers.index(labels)  # the strokes stay on top
    assert len(widget.plot.stability_line.get_xdata()) >= 1  # previews compared with the last one
    assert "averaged weights" in widget.plot.val_line.get_label()

    widget.where_button.click()
    centre = np.asarray(layer_io.camera(viewer).center[-2:])
    row, col = np.round(labels.world_to_data(centre)).astype(int)
    window = (slice(max(row - 32, 0), row + 32), slice(max(col - 32, 0), col + 32))
    assert not labels.data[window].any()  # no stroke there yet
    free = [
        last.uncertainty[y : y + 64, x : x + 64].mean()
        for y in range(0, 193, 32)
        for x in range(0, 193, 32)
        if not labels.data[y : y + 64, x : x + 64].any()
    ]
    assert last.uncertainty[window].mean() >= max(free) - 1e-6  # and the model is the least sure there
    assert (row, col) == suggest_next_region(last.uncertainty, labels.data)

    infos: list[str] = []
    monkeypatch.setattr(notifications, "show_info", lambda message: infos.append(str(message)))
    labels.data = np.ones_like(labels.data)  # strokes everywhere: nothing to suggest
    widget.where_button.click()
    assert len(infos) == 1 and "already has strokes" in infos[0]
    assert np.allclose(layer_io.camera(viewer).center[-2:], centre)
    _assert_unchanged((image,), copies[:1])
    assert errors == []


def test_the_preview_covers_the_visible_region(trainer_setup, qtbot, errors):
    viewer, widget, image, labels = trainer_setup
    camera = layer_io.camera(viewer)
    camera.center = (0.0, 40.0, 50.0)  # the top-left part of the 256 x 256 tile, magnified
    camera.zoom = max(viewer.canvas.size) / 64
    widget.set_config(iterations=3, preview_interval=1)
    with qtbot.waitSignal(widget.training_finished, timeout=TIMEOUT):
        widget.start_button.click()
    region = layer_io.visible_region(viewer, image, layer_io.copy_image(image))
    y0, y1, x0, x1 = max(region[0], 0), region[1], max(region[2], 0), region[3]
    assert y1 - y0 < 256 and x1 - x0 < 256  # not the whole plane
    assert widget.preview.last.region == (y0, y1, x0, x1)
    preview = viewer.layers[f"{image.name} preview"].data
    assert preview[y0:y1, x0:x1].min() >= 1  # predicted where the user looks ...
    outside = np.ones(preview.shape, bool)
    outside[y0:y1, x0:x1] = False
    assert not preview[outside].any()  # ... and nowhere else
    assert errors == []
    stability = widget.plot.stability_line.get_ydata()
    # At least the first and the last of the 3 iterations (the budget may skip the middle one).
    assert len(stability) >= 1 and all(0 <= s <= 1 for s in stability)
    assert not any(math.isnan(s) for s in stability)
