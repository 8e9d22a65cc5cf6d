"""Layers backed by dask or zarr and multiscale layers in the Train and Predict widgets: read tile by
tile (never converted whole), predicted on the level the user picks, large labels written to zarr."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import torch

from napari_deepseg import Trainer, TrainingConfig, apply_threshold, sample_data
from napari_deepseg._qt import _large_labels
from napari_deepseg._qt import layers as layer_io
from napari_deepseg._qt._session import model_store
from napari_deepseg._qt.predict_widget import PredictWidget

from .conftest import FAST, TIMEOUT

zarr = pytest.importorskip("zarr")

CLASS_NAMES = ("background", "nucleus")


@pytest.fixture(scope="module")
def tiny_model():
    image, strokes = sample_data.load_fluorescence_sample()
    config = TrainingConfig(**{**FAST, "iterations": 2})
    trainer = Trainer(image, strokes, config, class_names=CLASS_NAMES)
    for _ in trainer.run():
        pass
    return trainer.model


@pytest.fixture
def predict_setup(make_napari_viewer, tiny_model):
    store = model_store()
    store.clear()
    store.publish("tiny", tiny_model)
    viewer = make_napari_viewer()
    widget = PredictWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Predict")
    yield viewer, widget, tiny_model
    store.clear()


@pytest.fixture
def full_conversions(monkeypatch):
    """Shapes of the dask and zarr arrays converted whole with ``np.asarray`` (``__array__``)."""
    calls: list[tuple[str, tuple[int, ...]]] = []
    for cls in (da.Array, zarr.Array):
        original = cls.__array__

        def counting(self, *args, original=original, name=cls.__module__, **kwargs):
            calls.append((name, tuple(self.shape)))
            return original(self, *args, **kwargs)

        monkeypatch.setattr(cls, "__array__", counting)
    return calls


def _predict(qtbot, widget, layer):
    widget.image_combo.setCurrentIndex(widget.images._layers.index(layer))
    with qtbot.waitSignal(widget.prediction_finished, timeout=TIMEOUT) as blocker:
        widget.predict()
    return blocker.args[0]


def _memory_zarr(data: np.ndarray):
    array = zarr.create_array(store={}, shape=data.shape, chunks=(64, 64), dtype=data.dtype)
    array[:] = data
    return array


def test_dask_and_zarr_layers_predict_like_numpy_without_a_whole_copy(qtbot, predict_setup, full_conversions):
    viewer, widget, model = predict_setup
    image, _ = sample_data.load_fluorescence_sample()
    expected = _predict(qtbot, widget, viewer.add_image(image, name="numpy")).data.copy()
    lazy = da.from_array(image, chunks=64)
    stored = _memory_zarr(image)
    layers = [viewer.add_image(lazy, name="dask"), viewer.add_image(stored, name="zarr")]
    for layer in layers:
        qtbot.wait(50)  # napari's own slicing of the new layer is done
        full_conversions.clear()
        result = _predict(qtbot, widget, layer)
        assert [shape for _, shape in full_conversions if shape == image.shape] == []
        np.testing.assert_array_equal(result.data, expected)
    assert layers[0].data is lazy and layers[1].data is stored  # the user's data, unchanged
    np.testing.assert_array_equal(stored[:], image)


def test_multiscale_layer_predicts_the_chosen_level_and_overlays_it(qtbot, predict_setup):
    viewer, widget, model = predict_setup
    image, _ = sample_data.load_fluorescence_sample()
    plain = viewer.add_image(image, name="plain")
    assert not widget.images.level_row.isVisibleTo(widget) and widget.images.level() == 0
    pyramid = [image, image[::2, ::2]]
    layer = viewer.add_image(pyramid, multiscale=True, name="pyramid", scale=(0.5, 0.5), translate=(3, 4))
    widget.image_combo.setCurrentIndex(widget.images._layers.index(layer))
    assert widget.images.level_row.isVisibleTo(widget) and widget.images.level_combo.count() == 2
    assert widget.images.level_combo.itemText(1) == "1: 128 x 128"
    widget.images.level_combo.setCurrentIndex(1)
    result = _predict(qtbot, widget, layer)
    assert result.data.shape == (128, 128)
    np.testing.assert_array_equal(result.data, model.predict(image[::2, ::2]))
    np.testing.assert_allclose(result.scale, (1.0, 1.0))
    np.testing.assert_allclose(result.translate, (3, 4))
    # Pixel (10, 20) of the result lies where pixel (20, 40) of level 0 lies.
    np.testing.assert_allclose(result.data_to_world((10, 20)), layer.data_to_world((20, 40)))
    widget.image_combo.setCurrentIndex(widget.images._layers.index(plain))
    assert not widget.images.level_row.isVisibleTo(widget) and widget.images.level() == 0


def test_large_image_labels_go_to_zarr_and_equal_the_in_memory_labels(qtbot, predict_setup, monkeypatch):
    viewer, widget, model = predict_setup
    image, _ = sample_data.load_fluorescence_sample()
    layer = viewer.add_image(image, name="big")
    widget.threshold_slider.setValue(60)
    in_memory = _predict(qtbot, widget, layer).data.copy()
    assert widget.compact is not None
    monkeypatch.setattr(_large_labels, "LARGE_PIXELS", 128 * 128)  # 256 x 256 is "large" now
    result = _predict(qtbot, widget, layer)
    assert isinstance(result.data, zarr.Array) and result.data.chunks == (1024, 1024)
    assert widget.compact is None and "on disk" in widget.status_label.text()
    np.testing.assert_array_equal(result.data[:], model.predict(image, min_probability=0.6))
    # The compact result is quantised to 1/255: the two paths agree but for pixels at the threshold.
    assert np.mean(result.data[:] != in_memory) < 1e-3
    np.testing.assert_array_equal(in_memory, apply_threshold(model.predict_compact(image), 0.6))
    before = result.data[:]
    widget.threshold_slider.setValue(10)  # no compact result: the labels on disk stay as they are
    np.testing.assert_array_equal(result.data[:], before)


def _train(qtbot, widget):
    with qtbot.waitSignal(widget.training_finished, timeout=TIMEOUT) as blocker:
        widget.start_button.click()
    return blocker.args[0]


def test_dask_layer_trains_like_its_numpy_copy(trainer_setup, qtbot, errors):
    viewer, widget, image, labels = trainer_setup
    widget.set_config(iterations=2)
    numpy_model = _train(qtbot, widget)
    lazy = da.from_array(image.data, chunks=64)
    dask_layer = viewer.add_image(lazy, name="lazy")
    widget.set_pairs([(dask_layer, labels)])
    dask_model = _train(qtbot, widget)
    assert errors == [] and dask_model.iterations_trained == 2 and dask_layer.data is lazy
    for a, b in zip(numpy_model.module.state_dict().values(), dask_model.module.state_dict().values()):
        torch.testing.assert_close(a, b)


def test_multiscale_layer_trains_on_the_level_its_strokes_were_painted_on(trainer_setup, qtbot, errors):
    viewer, widget, image, labels = trainer_setup
    widget.set_config(iterations=1)
    pyramid = viewer.add_image([image.data, image.data[::2, ::2]], multiscale=True, name="pyramid")
    small = viewer.add_labels(labels.data[::2, ::2], name="strokes level 1")
    widget.set_pairs([(pyramid, None)])
    assert widget.pairs_editor.pairs()[0][1] is not None  # a labels layer of some level is proposed
    widget.set_pairs([(pyramid, small)])
    copy = layer_io.copy_image(pyramid, labels_shape=small.data.shape)
    assert copy.data.shape == (128, 128)
    np.testing.assert_array_equal(copy.data, image.data[::2, ::2])
    model = _train(qtbot, widget)
    assert errors == [] and model is not None and model.iterations_trained == 1


def test_a_layer_too_large_to_train_on_says_what_to_do(trainer_setup, errors, monkeypatch):
    viewer, widget, image, labels = trainer_setup
    monkeypatch.setattr(layer_io, "TRAIN_MAX_PIXELS", 100 * 100)
    widget.start_button.click()
    assert len(errors) == 1 and "training copies its image and labels whole" in errors[0], errors
    assert widget.model is None and widget.start_button.isEnabled()


def test_large_labels_fall_back_to_a_memory_map_without_zarr_and_leave_nothing_when_stopped(monkeypatch):
    import sys

    import torch

    from napari_deepseg import SegmentationModel
    from napari_deepseg._qt import _large_labels
    from napari_deepseg.data.normalisation import DATASET, Normalisation

    torch.manual_seed(0)
    model = SegmentationModel(
        torch.nn.Conv2d(1, 2, 1).eval(),
        architecture="unet",
        encoder="resnet34",
        num_classes=2,
        normalisation=Normalisation((0.0,), (1.0,), mode=DATASET),
    )
    image = np.random.default_rng(0).random((300, 200)).astype(np.float32)
    monkeypatch.setitem(sys.modules, "zarr", None)  # `import zarr` now fails
    result = _large_labels.predict_to_zarr(model, image, None, 0.0, None, None)
    assert result.path.suffix == ".npy" and isinstance(result.labels, np.memmap)
    np.testing.assert_array_equal(result.labels, model.predict(image))
    stores = result.path.parent.parent.glob
    before = set(stores("napari-deepseg-labels-*"))
    with pytest.raises(InterruptedError):
        _large_labels.predict_to_zarr(model, image, None, 0.0, None, lambda: True)
    assert set(stores("napari-deepseg-labels-*")) == before  # the stopped one left no store
