"""Odd and bad layers in the widgets: each either works or gets one error notification that names
the problem, the widget stays usable, and the layers' data are byte-for-byte as they were."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from napari_deepseg._qt.train_widget import TrainWidget

from .conftest import FAST, TIMEOUT

RNG = np.random.default_rng(0)


def _strokes(shape, dtype=np.uint8):
    labels = np.zeros(shape, dtype)
    labels[..., 4:10, 4:30] = 1
    labels[..., 40:46, 4:30] = 2
    return labels


IMAGE = RNG.random((64, 64), dtype=np.float32)
NAN = IMAGE.copy()
NAN[3:5, 3:5] = np.nan
# (image data, rgb, labels data, None when training works else a phrase of the error)
CASES = {
    "uint16 image": ((IMAGE * 60000).astype(np.uint16), False, _strokes((64, 64)), None),
    "float64 image": (IMAGE.astype(np.float64), False, _strokes((64, 64)), None),
    "bool image": (IMAGE > 0.5, False, _strokes((64, 64)), None),
    "int32 image, negative": ((IMAGE * 2000 - 1000).astype(np.int32), False, _strokes((64, 64)), None),
    "constant image": (np.zeros((64, 64), np.float32), False, _strokes((64, 64)), None),
    "NaN in the image": (NAN, False, _strokes((64, 64)), "NaN"),
    "RGBA image": ((RNG.random((64, 64, 4)) * 255).astype(np.uint8), True, _strokes((64, 64)), None),
    "labels smaller than the image": (IMAGE, False, _strokes((32, 64)), "shape"),
    "one class painted": (IMAGE, False, (_strokes((64, 64)) == 1).astype(np.uint8), "class"),
    "nothing painted": (IMAGE, False, np.zeros((64, 64), np.uint8), "painted"),
    "class 300 in uint16 labels": (IMAGE, False, _strokes((64, 64), np.uint16) * 150, None),
    "negative label": (IMAGE, False, _strokes((64, 64), np.int16) - 1, ">= 0"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_train_widget_on_odd_layers(make_napari_viewer, qtbot, errors, case):
    data, rgb, strokes, problem = CASES[case]
    viewer = make_napari_viewer()
    image = viewer.add_image(data, rgb=rgb, name="image")
    labels = viewer.add_labels(strokes, name="strokes")
    before = [np.array(layer.data, copy=True) for layer in (image, labels)]
    widget = TrainWidget(viewer)
    widget.set_pairs([(image, labels)])
    widget.set_config(**{**FAST, "iterations": 2}, preview=False)
    widget.start_button.click()  # bad pairs are refused at once, bad data by the worker
    qtbot.waitUntil(lambda: widget.worker is None, timeout=TIMEOUT)
    for layer, copy in zip((image, labels), before, strict=True):
        assert layer.data.dtype == copy.dtype and layer.data.tobytes() == copy.tobytes()
    assert widget.worker is None and widget.start_button.isEnabled()
    if problem is None:
        assert errors == [] and widget.model is not None and widget.model.iterations_trained == 2
    else:
        assert len(errors) == 1 and problem.lower() in errors[0].lower(), errors


@pytest.fixture(scope="module")
def grey_model():
    from napari_deepseg import Trainer, TrainingConfig

    trainer = Trainer(IMAGE, _strokes((64, 64)), TrainingConfig(**{**FAST, "iterations": 1}))
    for _ in trainer.run():
        pass
    return trainer.model


# (image data, rgb, None when prediction works else a phrase of the error)
PREDICT_CASES = {
    "uint16 image": ((IMAGE * 60000).astype(np.uint16), False, None),
    "bool image": (IMAGE > 0.5, False, None),
    "int32 image": ((IMAGE * 2000 - 1000).astype(np.int32), False, None),
    "one pixel": (IMAGE[:1, :1], False, None),
    "8 x 700 strip": (RNG.random((8, 700), dtype=np.float32), False, None),
    "stack of 3": (RNG.random((3, 40, 40), dtype=np.float32), False, None),
    "NaN in the image": (NAN, False, "nan"),
    "RGBA image, grey model": ((RNG.random((64, 64, 4)) * 255).astype(np.uint8), True, "channel"),
}


@pytest.mark.parametrize("case", list(PREDICT_CASES))
def test_predict_widget_on_odd_images(make_napari_viewer, qtbot, grey_model, case):
    from unittest.mock import patch

    from napari.utils import notifications

    from napari_deepseg._qt._session import model_store
    from napari_deepseg._qt.predict_widget import PredictWidget

    data, rgb, problem = PREDICT_CASES[case]
    viewer = make_napari_viewer()
    image = viewer.add_image(data, rgb=rgb, name="image")
    before = np.array(image.data, copy=True)
    widget = PredictWidget(viewer)
    model_store().publish("grey", grey_model)
    with patch.object(notifications, "show_error") as show_error:
        signal = widget.prediction_finished if problem is None else widget.prediction_failed
        with qtbot.waitSignal(signal, timeout=TIMEOUT):
            widget.predict(image_layer=image)
    assert image.data.dtype == before.dtype and image.data.tobytes() == before.tobytes()
    assert widget.predict_button.isEnabled()
    if problem is None:
        assert show_error.call_count == 0
        result = widget.result_layer.data
        assert result.shape == data.shape[: data.ndim - rgb] and result.max() <= grey_model.num_classes
    else:
        assert show_error.call_count == 1 and problem in show_error.call_args.args[0].lower()
