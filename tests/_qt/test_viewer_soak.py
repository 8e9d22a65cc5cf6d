"""A session in one viewer: 20 train / predict / threshold cycles leave no layer, thread or memory
behind (RSS after the warm-up cycles grows < 5 %)."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import threading
from pathlib import Path

import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from qtpy.QtCore import QThreadPool

from napari_deepseg._qt._worker_pool import training_pool
from napari_deepseg._qt.predict_widget import PredictWidget
from napari_deepseg._qt.train_widget import TrainWidget
from napari_deepseg.sample_data import fluorescence_sample_layers

from .conftest import FAST, TIMEOUT

CYCLES, WARM_UP = 12, 4  # 8 cycles measured after the warm-up (20 took 46 s of CI)


def _rss_mb() -> float:
    # Freed memory the C allocator keeps for reuse is not a leak: hand it back first, so that a
    # jump in the allocator's high-water mark (other tests in the same process move it) does not
    # read as growth.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def _os_threads() -> int:
    return len(list(Path("/proc/self/task").iterdir()))


def _python_threads() -> int:
    return sum(not isinstance(t, threading._DummyThread) for t in threading.enumerate())


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc/self (Linux)")
def test_train_predict_threshold_cycles_grow_nothing(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    image, labels = [viewer._add_layer_from_data(*item)[0] for item in fluorescence_sample_layers()]
    train, predict = TrainWidget(viewer), PredictWidget(viewer)
    viewer.window.add_dock_widget(train, name="Train")
    viewer.window.add_dock_widget(predict, name="Predict", tabify=True)
    train.set_pairs([(image, labels)])
    train.set_config(**{**FAST, "iterations": 3}, preview=True, preview_interval=2)
    samples = []
    for cycle in range(CYCLES):
        with qtbot.waitSignal(train.training_finished, timeout=TIMEOUT):
            train.start_button.click()
        predict.image_combo.setCurrentText(image.name)
        with qtbot.waitSignal(predict.prediction_finished, timeout=TIMEOUT):
            predict.predict()
        for percent in (30, 60, 0):
            predict.threshold_slider.setValue(percent)
        qtbot.waitUntil(  # the Train widget's worker runs on a pool of its own
            lambda: (
                QThreadPool.globalInstance().activeThreadCount() + training_pool().activeThreadCount() == 0
            ),
            timeout=10_000,
        )
        gc.collect()
        samples.append((len(viewer.layers), _python_threads(), _os_threads(), _rss_mb()))
        if cycle == WARM_UP - 1:
            warm = samples[-1]
    end = samples[-1]
    assert end[0] == warm[0], samples  # predictions replace their layers, previews are reused
    assert end[1] <= warm[1] and end[2] <= warm[2] + 2, samples  # Qt's pool may park a thread or two
    growth = 100 * (end[3] - warm[3]) / warm[3]
    assert growth < 5.0, f"RSS grew {growth:.1f} % after the warm-up: {samples}"
