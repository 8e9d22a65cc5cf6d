"""Layers backed by dask or zarr and multiscale layers in the Train and Predict widgets: read tile by
tile (never converted whole), predicted on the level the user picks, large labels written to zarr."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import torch

from napari_deepseg import Trainer, TrainingConfig, sample_data
from napari_deepseg._qt import layers as layer_io

from .conftest import FAST, TIMEOUT, predict_widget_with

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
    for viewer, widget in predict_widget_with(make_napari_viewer, "tiny", tiny_model):
        yield viewer, widget, tiny_model


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


class Virtual:
    """A lazy grey image of any size, made on demand (nothing stored); counts the pixels read."""

    dtype, ndim = np.dtype(np.uint8), 2

    def __init__(self, shape: tuple[int, int]) -> None:
        self.shape, self.pixels_read = shape, 0

    def __getitem__(self, key):
        rows, cols = (np.asarray(range(n)[k]) for k, n in zip(key, self.shape))
        # uint8 sums (wrapping at 256): cheap enough for napari's own look at the whole level 0
        out = np.atleast_1d(rows).astype(np.uint8)[:, None] + np.atleast_1d(cols * 3).astype(np.uint8)
        self.pixels_read += out.size
        return out.reshape(np.shape(rows) + np.shape(cols))


def test_a_dask_slide_beyond_the_old_limit_trains_from_its_strokes_and_live_paint(
    trainer_setup, qtbot, errors
):
    viewer, widget, _, _ = trainer_setup
    height, width = 16384, 16640  # 272 M pixels: the Train widget refused more than 256 M
    virtual = Virtual((height, width))
    base = da.from_array(virtual, chunks=4096)
    slide = viewer.add_image([base[:: 2**k, :: 2**k] for k in range(6)], multiscale=True, name="slide")
    strokes = np.zeros((height, width), np.uint8)
    strokes[100:110, 100:400] = 1
    strokes[16000:16050, 16300:16310] = 2
    layer = viewer.add_labels(strokes, name="slide strokes")
    qtbot.wait(50)
    widget.set_pairs([(slide, layer)])
    widget.set_config(iterations=None, preview=False)  # until stopped
    read = virtual.pixels_read
    widget.start_button.click()
    qtbot.waitUntil(lambda: widget.last_record is not None, timeout=TIMEOUT)
    data = widget.trainer.data._pairs[0]
    assert [b.area for b in data.regions.boxes] == [192 * 512, 192 * 192]
    layer.paint((8000, 8000), 2)  # far from both: a third region, read alone
    qtbot.waitUntil(lambda: len(data.regions.boxes) == 3, timeout=TIMEOUT)
    with qtbot.waitSignal(widget.training_finished, timeout=TIMEOUT) as blocker:
        widget.stop()
    assert errors == [] and blocker.args[0].iterations_trained >= 1
    # The strided sample of the normalisation (every 9th pixel, ~3.4 M) and the three regions, not
    # 272 M pixels (napari's own reads of the coarse levels are counted too).
    assert virtual.pixels_read - read < height * width / 50
    assert slide.data[0] is base and layer.data is strokes and strokes.flags.writeable
    assert np.count_nonzero(strokes) == 3000 + 500 + np.count_nonzero(strokes[7990:8010, 7990:8010])


def test_a_plane_too_large_for_the_preview_trains_without_one_and_says_so(
    trainer_setup, qtbot, errors, monkeypatch
):
    from napari.utils import notifications

    from napari_deepseg._qt import _preview_job

    viewer, widget, _, _ = trainer_setup
    shown: list[str] = []
    monkeypatch.setattr(notifications, "show_info", shown.append)
    monkeypatch.setattr(_preview_job, "PREVIEW_MAX_PIXELS", 128 * 128)  # the 256 x 256 sample is "large"
    widget.set_config(iterations=3, preview=True, preview_interval=1)
    model = _train(qtbot, widget)
    assert errors == [] and model.iterations_trained == 3
    assert [m for m in shown if m.startswith("No live preview for this image")]
    assert "(256 x 256)" in shown[0]
    assert not any(layer_io.is_preview(layer) for layer in viewer.layers)
