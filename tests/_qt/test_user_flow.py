"""The whole flow as a user does it: sample from the menu, both widgets from the Plugins menu,
train 10 iterations, predict into a new Labels layer, move the threshold slider."""

from __future__ import annotations

from unittest.mock import patch

import numpy as np
import pytest

pytest.importorskip("napari")

from qtpy.QtCore import Qt

from napari_deepseg import AugmentationConfig
from napari_deepseg._qt._session import model_store

TIMEOUT = 180_000


@pytest.fixture(autouse=True)
def _empty_model_store():
    model_store().clear()
    yield
    model_store().clear()


def test_train_then_predict_then_threshold(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-deepseg", "fluorescence_tile")
    image, strokes = viewer.layers
    before = [np.array(layer.data, copy=True) for layer in (image, strokes)]
    _, train = viewer.window.add_plugin_dock_widget("napari-deepseg", "Train")
    _, predict = viewer.window.add_plugin_dock_widget("napari-deepseg", "Predict")

    train.set_pairs([(image, strokes)])
    train.set_config(
        iterations=10,
        patch_size=64,
        batch_size=2,
        pretrained=False,
        validation_fraction=0.0,
        device="cpu",
        augmentation=AugmentationConfig.disabled(),
    )
    with qtbot.waitSignal(train.training_finished, timeout=TIMEOUT) as finished:
        qtbot.mouseClick(train.start_button, Qt.LeftButton)
    model = finished.args[0]
    train.plot.flush()
    assert train.plot.point_count == 10
    assert model.iterations_trained == 10
    assert train.start_button.isEnabled()

    predict.image_combo.setCurrentText(image.name)
    assert predict.model is model
    with qtbot.waitSignal(predict.prediction_finished, timeout=TIMEOUT) as done:
        qtbot.mouseClick(predict.predict_button, Qt.LeftButton)
    result = done.args[0]
    assert result is predict.result_layer and result in viewer.layers
    assert result.data.shape == image.data.shape
    assert set(np.unique(result.data)) <= {1, 2}  # 0 % threshold: every pixel classified

    zeros_at = {}
    with (
        patch.object(model, "predict_compact", wraps=model.predict_compact) as network_spy,
        patch.object(model.module, "forward", wraps=model.module.forward) as forward_spy,
    ):
        for percent in (0, 60, 95):
            predict.threshold_slider.setValue(percent)
            zeros_at[percent] = int((result.data == 0).sum())
    network_spy.assert_not_called()
    forward_spy.assert_not_called()
    assert zeros_at[0] == 0 < zeros_at[95]
    assert zeros_at[60] <= zeros_at[95]

    for layer, copy in zip((image, strokes), before, strict=True):
        np.testing.assert_array_equal(layer.data, copy)
