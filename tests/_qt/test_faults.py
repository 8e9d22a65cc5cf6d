"""Faults in the middle of a run, in the viewer: the viewer or the dock closed while training or
predicting, the image layer deleted while predicting. Nothing may keep running, nothing may print
an exception, and the user's layers stay as they were."""

from __future__ import annotations

import threading

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from napari_deepseg import SegmentationModel, Trainer, TrainingConfig
from napari_deepseg._qt._session import model_store
from napari_deepseg._qt.predict_widget import PredictWidget
from napari_deepseg._qt.train_widget import TrainWidget
from napari_deepseg.sample_data import fluorescence_sample_layers

from .conftest import FAST, TIMEOUT


@pytest.fixture
def no_exceptions(monkeypatch):
    """Exceptions that reach the Qt event loop (sys.excepthook) or a thread's top (threading.excepthook)."""
    import sys

    caught: list[BaseException] = []
    monkeypatch.setattr(sys, "excepthook", lambda kind, value, tb: caught.append(value))
    monkeypatch.setattr(threading, "excepthook", lambda args: caught.append(args.exc_value))
    return caught


def _threads() -> set[threading.Thread]:
    """Python threads, less the placeholders Python makes for Qt's pool threads when they run Python."""
    return {t for t in threading.enumerate() if not isinstance(t, threading._DummyThread)}


def _busy_pool_threads() -> int:
    """Busy threads of the pools the workers run on: Qt's global one (superqt's, the Predict
    widget's) and the plugin's own (the Train widget's)."""
    from qtpy.QtCore import QThreadPool

    from napari_deepseg._qt._worker_pool import training_pool

    return QThreadPool.globalInstance().activeThreadCount() + training_pool().activeThreadCount()


@pytest.fixture(scope="module")
def fluo_model() -> SegmentationModel:
    image, labels = (item[0] for item in fluorescence_sample_layers())
    trainer = Trainer(image, labels, TrainingConfig(**{**FAST, "iterations": 2}))
    for _ in trainer.run():
        pass
    return trainer.model


def _wait_threads_gone(qtbot, before: set[threading.Thread]) -> None:
    qtbot.waitUntil(lambda: not (_threads() - before) and _busy_pool_threads() == 0, timeout=10_000)


def _training_widget(viewer, qtbot):
    image, labels = [viewer._add_layer_from_data(*item)[0] for item in fluorescence_sample_layers()]
    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Train")
    widget.set_pairs([(image, labels)])
    widget.set_config(**{**FAST, "iterations": 10_000})
    widget.start_button.click()
    qtbot.waitUntil(lambda: widget.plot.point_count >= 1, timeout=TIMEOUT)
    return widget


def test_closing_the_viewer_mid_training_leaves_no_thread(make_napari_viewer, qtbot, no_exceptions):
    before = _threads()
    viewer = make_napari_viewer()
    widget = _training_widget(viewer, qtbot)
    worker = widget.worker
    assert _busy_pool_threads() == 1, "the run should have a thread of its own while it trains"
    viewer.close()
    assert not worker.is_running
    _wait_threads_gone(qtbot, before)
    assert no_exceptions == []


def test_closing_the_dock_mid_training_stops_the_run(make_napari_viewer, qtbot, no_exceptions):
    before = _threads()
    viewer = make_napari_viewer()
    widget = _training_widget(viewer, qtbot)
    worker = widget.worker
    viewer.window.remove_dock_widget(widget)  # the dock's close button
    widget.close()
    widget.deleteLater()
    qtbot.waitUntil(lambda: not worker.is_running, timeout=10_000)
    _wait_threads_gone(qtbot, before)
    assert no_exceptions == []


def _predicting_widget(viewer, qtbot, model, size=2048):
    rng = np.random.default_rng(0)
    image = viewer.add_image(rng.random((size, size), dtype=np.float32), name="big")
    widget = PredictWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Predict")
    model_store().publish("fluo", model)  # how the widget finds models
    widget.image_combo.setCurrentText("big")
    widget.predict()
    qtbot.waitUntil(lambda: widget._tiles.done >= 1, timeout=TIMEOUT)  # tiles under way
    return widget, image


def test_closing_the_viewer_mid_prediction_leaves_no_thread(
    make_napari_viewer, qtbot, fluo_model, no_exceptions
):
    before = _threads()
    viewer = make_napari_viewer()
    widget, _ = _predicting_widget(viewer, qtbot, fluo_model)
    worker = widget.worker
    viewer.close()
    qtbot.waitUntil(lambda: not worker.is_running, timeout=10_000)
    _wait_threads_gone(qtbot, before)
    assert no_exceptions == []


def test_deleting_the_image_mid_prediction(make_napari_viewer, qtbot, fluo_model, no_exceptions):
    viewer = make_napari_viewer()
    widget, image = _predicting_widget(viewer, qtbot, fluo_model, size=1536)
    data = image.data.copy()
    assert widget.worker.is_running  # deleted mid-run
    with qtbot.waitSignal(widget.prediction_finished, timeout=TIMEOUT) as finished:
        viewer.layers.remove(image)
    result = finished.args[0]
    assert result.data.shape == data.shape  # the run went on with the array it started with
    assert np.array_equal(image.data, data)
    assert no_exceptions == []


def test_stop_ends_a_slow_iteration_within_a_second(make_napari_viewer, qtbot, no_exceptions):
    import time

    import torch

    viewer = make_napari_viewer()
    widget = _training_widget(viewer, qtbot)  # one record in: the trainer is known
    convs = [m for m in widget.trainer._weights.trained.modules() if isinstance(m, torch.nn.Conv2d)]
    delay = 4.0 / len(convs)  # every iteration from now on takes about 4 s

    def slow(forward):
        def sleepy(x):
            time.sleep(delay)
            return forward(x)

        return sleepy

    for conv in convs:
        conv.forward = slow(conv.forward)
    done = widget.model.iterations_trained
    qtbot.wait(1000)  # well inside the next iteration
    with qtbot.waitSignal(widget.training_finished, timeout=TIMEOUT) as finished:
        start = time.perf_counter()
        widget.stop_button.click()
    took = time.perf_counter() - start
    assert took < 1.5, f"Stop took {took:.2f} s"  # 1 s in the trainer, the rest is the event loop
    model = finished.args[0]
    assert model.iterations_trained in (done, done + 1)  # the iteration under way was dropped
    assert "stopped" in widget.status_label.text() and no_exceptions == []


@pytest.mark.parametrize("failures", [1, 2])
def test_prediction_out_of_memory_retries_with_smaller_tiles(
    make_napari_viewer, qtbot, fluo_model, monkeypatch, failures
):
    from unittest.mock import patch

    import torch
    from napari.utils import notifications

    from napari_deepseg import prediction

    viewer = make_napari_viewer()
    image = viewer.add_image(np.random.default_rng(0).random((300, 300), dtype=np.float32), name="img")
    widget = PredictWidget(viewer)
    model_store().publish("fluo", fluo_model)
    forward, calls = torch.nn.Conv2d.forward, []

    def short_of_memory(self, x):  # the first pass (or the first two) fail at their first tile
        calls.append(x.shape)
        if len(calls) == 1 or (failures == 2 and len(calls) == 2):
            raise RuntimeError("CUDA out of memory. Tried to allocate 8.00 GiB")
        return forward(self, x)

    monkeypatch.setattr(torch.nn.Conv2d, "forward", short_of_memory)
    # The double counts convolution calls: the probe forward of BatchNorm folding would be the first.
    monkeypatch.setattr(prediction, "inference_network", lambda module: module)
    with (
        patch.object(notifications, "show_warning") as warned,
        patch.object(notifications, "show_error") as failed,
    ):
        signal = widget.prediction_finished if failures == 1 else widget.prediction_failed
        with qtbot.waitSignal(signal, timeout=TIMEOUT):
            widget.predict(image_layer=image)
    assert warned.call_count == 1 and "predicting again with tiles of" in warned.call_args.args[0]
    if failures == 1:
        assert failed.call_count == 0 and widget.result_layer.data.shape == (300, 300)
    else:
        message = failed.call_args.args[0]
        assert failed.call_count == 1 and "Not enough memory" in message and "tile size" in message
        assert widget.predict_button.isEnabled()


def test_a_failed_save_keeps_the_previous_file_and_says_so(make_napari_viewer, fluo_model, tmp_path, errors):
    import errno
    import os
    from unittest.mock import patch

    widget = TrainWidget(make_napari_viewer())
    widget.model = fluo_model
    path = tmp_path / "model.safetensors"
    assert widget.save_model(path) == path
    previous = path.read_bytes()

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with patch("os.replace", disk_full):
        assert widget.save_model(path) is None
    assert path.read_bytes() == previous and sorted(tmp_path.iterdir()) == [path]  # no temporary left
    assert len(errors) == 1 and "No space left on device" in errors[0] and str(path) in errors[0]
    assert widget.save_model(tmp_path / "elsewhere.safetensors") is not None  # still in memory
