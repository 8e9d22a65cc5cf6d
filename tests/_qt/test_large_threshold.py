"""The threshold slider on a large result: the compact result is on disk, the layer shows lazy
labels that napari thresholds chunk by chunk as it reads them, and a slider move never runs the
network again."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from napari_deepseg import SegmentationModel, apply_threshold, sample_data
from napari_deepseg._qt import _large_labels
from napari_deepseg.data.normalisation import DATASET, Normalisation

from .conftest import TIMEOUT, predict_widget_with

zarr = pytest.importorskip("zarr")

FORWARDS: list[int] = []  # a global, not an attribute: the network is copied (BatchNorm folding)


class _CountingNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, 5, padding=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        FORWARDS.append(len(x))
        return self.conv(x)


@pytest.fixture
def model() -> SegmentationModel:
    torch.manual_seed(0)
    return SegmentationModel(
        _CountingNet().eval(),
        architecture="unet",
        encoder="resnet34",
        num_classes=2,
        normalisation=Normalisation((0.0,), (255.0,), mode=DATASET),
        class_names=("background", "nucleus"),
    )


@pytest.fixture
def large(monkeypatch):
    """256 x 256 is "large", cut into 32-pixel chunks, with levels of 256, 128 and 64 pixels."""
    monkeypatch.setattr(_large_labels, "LARGE_PIXELS", 128 * 128)
    monkeypatch.setattr(_large_labels, "CHUNK", 32)
    monkeypatch.setattr(_large_labels, "PYRAMID_MIN", 64)
    reads: list[tuple[int, ...]] = []  # the shapes of the parts thresholded, as napari reads them
    apply = _large_labels.apply_threshold

    def counting(compact, min_probability):
        reads.append(tuple(compact.shape))
        return apply(compact, min_probability)

    monkeypatch.setattr(_large_labels, "apply_threshold", counting)
    return reads


@pytest.fixture
def widget(make_napari_viewer, model):
    yield from predict_widget_with(make_napari_viewer, "counting", model)


def _predict(qtbot, widget):
    with qtbot.waitSignal(widget.prediction_finished, timeout=TIMEOUT) as blocker:
        widget.predict()
    return blocker.args[0]


def _draw(viewer) -> None:
    """What a draw of the (hidden) canvas does: the layer picks its level and visible corners."""
    viewer.window._qt_viewer.canvas.on_draw(None)


def _shown(layer) -> np.ndarray:
    """The labels napari has read for the canvas: the visible part of the level it shows."""
    return np.asarray(layer._slice.image.raw)


def test_slider_on_a_large_result_rethresholds_what_is_shown_without_the_network(qtbot, widget, model, large):
    viewer, widget = widget
    image, _ = sample_data.load_fluorescence_sample()
    viewer.add_image(image, name="big")
    expected = model.predict_compact(image)  # what the widget computes, in memory
    unclassified = {p: float((apply_threshold(expected, p / 100) == 0).mean()) for p in range(1, 100)}
    middle = min(unclassified, key=lambda p: abs(unclassified[p] - 0.5))  # the slider matters here
    assert 0.2 < unclassified[middle] < 0.8
    FORWARDS.clear()
    layer = _predict(qtbot, widget)
    calls = len(FORWARDS)
    assert calls > 0 and widget.compact is None and widget.large is not None
    assert layer.multiscale and [tuple(d.shape) for d in layer.data] == [(256, 256), (128, 128), (64, 64)]
    assert all(isinstance(d, _large_labels.ThresholdedLevel) for d in layer.data)
    assert "on disk" in widget.status_label.text()
    stored = widget.large.levels[0]
    assert isinstance(stored.best_class, zarr.Array) and stored.best_class.chunks == (32, 32)
    np.testing.assert_array_equal(stored.best_class[:], expected.best_class)
    np.testing.assert_array_equal(stored.best_probability[:], expected.best_probability)

    camera = viewer.scene.camera
    camera.zoom = 0.2  # far out: the coarsest level, 64 x 64
    _draw(viewer)
    assert layer.data_level == 2
    camera.center, camera.zoom = (40, 40), 8  # a corner at full resolution: 100 x 75 pixels
    _draw(viewer)
    for percent in (middle, 90, 0):
        large.clear()
        widget.threshold_slider.setValue(percent)
        labels = apply_threshold(expected, percent / 100)
        assert layer.data_level == 0
        shown = _shown(layer)
        (y0, x0), (y1, x1) = layer.corner_pixels.astype(int)
        np.testing.assert_array_equal(shown, labels[y0 : y1 + 1, x0 : x1 + 1])
        # The visible chunks (9 of the 64) and the smallest level whole (the thumbnail's).
        assert sorted(large) == [(64, 64), (96, 96)] and shown.shape == (96, 96), large
        for k, data in enumerate(layer.data):  # every level, read whole, as when saving
            np.testing.assert_array_equal(np.asarray(data), labels[:: 2**k, :: 2**k])
    assert len(FORWARDS) == calls  # the slider never ran the network

    camera.zoom = 0.2  # the whole image: the coarsest level is shown
    _draw(viewer)
    large.clear()
    widget.threshold_slider.setValue(40)
    assert layer.data_level == 2 and large == [(64, 64)], large
    step = 2**layer.data_level
    (y0, x0), (y1, x1) = layer.corner_pixels.astype(int)  # in pixels of the level shown
    np.testing.assert_array_equal(
        _shown(layer), apply_threshold(expected, 0.4)[::step, ::step][y0 : y1 + 1, x0 : x1 + 1]
    )


def test_a_small_result_after_a_large_one_replaces_the_layer_in_place(
    qtbot, widget, model, large, monkeypatch
):
    viewer, widget = widget
    image, _ = sample_data.load_fluorescence_sample()
    viewer.add_image(image, name="big")
    first = _predict(qtbot, widget)
    viewer.add_points(name="above")
    position = list(viewer.layers).index(first)
    monkeypatch.setattr(_large_labels, "LARGE_PIXELS", 2**30)
    widget.threshold_slider.setValue(70)
    second = _predict(qtbot, widget)
    assert not second.multiscale and widget.large is None and widget.compact is not None
    assert list(viewer.layers).index(second) == position and first not in viewer.layers
    np.testing.assert_array_equal(second.data, apply_threshold(model.predict_compact(image), 0.7))
    widget.threshold_slider.setValue(20)  # the in-memory slider still works on the new layer
    np.testing.assert_array_equal(second.data, apply_threshold(widget.compact, 0.2))


def test_large_result_falls_back_to_memory_maps_without_zarr_and_leaves_nothing_when_stopped(
    model, monkeypatch
):
    monkeypatch.setattr(_large_labels, "PYRAMID_MIN", 128)
    image = np.random.default_rng(0).integers(0, 256, (2, 300, 200)).astype(np.float32)
    monkeypatch.setitem(sys.modules, "zarr", None)  # `import zarr` now fails
    result = _large_labels.predict_to_zarr(model, image, None, None, None)
    assert result.path.is_dir() and all(isinstance(c.best_class, np.memmap) for c in result.levels)
    expected = model.predict_compact(image)
    views = result.labels(0.6)
    assert [tuple(v.shape) for v in views] == [(2, 300, 200), (2, 150, 100), (2, 75, 50)]
    for k, view in enumerate(views):
        np.testing.assert_array_equal(np.asarray(view), apply_threshold(expected, 0.6)[:, :: 2**k, :: 2**k])
    stores = result.path.parent.parent.glob
    before = set(stores("napari-deepseg-labels-*"))
    with pytest.raises(InterruptedError):
        _large_labels.predict_to_zarr(model, image, None, None, lambda: True)
    assert set(stores("napari-deepseg-labels-*")) == before  # the stopped one left no store


@pytest.fixture
def stores(tmp_path, monkeypatch):
    """Temporary stores go under ``tmp_path``; the stores there now."""
    monkeypatch.setattr(_large_labels, "store_root", lambda: tmp_path)
    return lambda: sorted(p.name for p in tmp_path.glob("napari-deepseg-labels-*"))


def test_a_single_level_large_result_is_read_only_and_its_editable_copy_can_be_painted(
    qtbot, widget, model, large, stores, monkeypatch
):
    viewer, widget = widget
    monkeypatch.setattr(_large_labels, "PYRAMID_MIN", 256)  # one level: napari would let it be painted
    image, _ = sample_data.load_fluorescence_sample()
    viewer.add_image(image, name="big")
    layer = _predict(qtbot, widget)
    assert not layer.multiscale and isinstance(layer.data, _large_labels.ThresholdedLevel)
    assert not layer.editable and "read-only" in widget.status_label.text()
    widget.threshold_slider.setValue(60)  # napari makes a layer editable on every data change
    assert isinstance(layer.data, _large_labels.ThresholdedLevel) and not layer.editable
    assert widget.copy_button.isVisibleTo(widget) and widget.copy_button.isEnabled()

    widget.copy_button.click()
    copy = viewer.layers[-1]
    expected = apply_threshold(model.predict_compact(image), 0.6)
    assert copy is not layer and copy.editable and not layer.visible
    assert isinstance(copy.data, np.ndarray) and "deepseg_result" not in copy.metadata
    np.testing.assert_array_equal(copy.data, expected)
    y, x = np.argwhere(expected != 1)[0]
    copy.paint((y, x), 1)  # a brush stroke
    assert copy.data[y, x] == 1 and (copy.data != expected).sum() > 0
    widget.threshold_slider.setValue(20)  # the slider still changes the result, not the copy
    assert layer.data.min_probability == 0.2 and copy.data[y, x] == 1
    np.testing.assert_array_equal(np.asarray(layer.data), apply_threshold(model.predict_compact(image), 0.2))

    monkeypatch.setattr(_large_labels, "EDITABLE_PIXELS", 100)  # too large to copy: refused, says so
    with qtbot.waitSignal(widget.prediction_failed) as failed:
        assert widget.editable_copy() is None
    assert "too many to copy" in failed.args[0] and len(viewer.layers) == 3


def test_a_new_result_or_deleting_its_layer_removes_the_temporary_store(qtbot, widget, large, stores):
    viewer, widget = widget
    image, _ = sample_data.load_fluorescence_sample()
    viewer.add_image(image, name="big")
    kept = []
    for _ in range(3):
        layer = _predict(qtbot, widget)
        kept.append(stores())
        assert widget.large.path.parent.name in kept[-1]
    assert [len(k) for k in kept] == [1, 1, 1] and len({k[0] for k in kept}) == 3  # one, a new one each time
    assert str(widget.large.path) in widget.status_label.text()
    viewer.add_points(name="other")
    viewer.layers.remove("other")  # another layer deleted: the result stays
    assert stores() == kept[-1] and widget.large is not None
    viewer.layers.remove(layer)
    assert stores() == [] and widget.large is None and not widget.copy_button.isVisibleTo(widget)


@pytest.mark.parametrize("with_zarr", [True, False])
def test_predict_to_a_given_path_refuses_a_used_folder_and_removes_only_what_it_made(
    model, tmp_path, monkeypatch, with_zarr
):
    monkeypatch.setattr(_large_labels, "PYRAMID_MIN", 128)
    if not with_zarr:
        monkeypatch.setitem(sys.modules, "zarr", None)
    image = np.random.default_rng(0).integers(0, 256, (150, 200)).astype(np.float32)
    used = tmp_path / "mine.zarr"
    folder = used if with_zarr else used.with_suffix("")  # where each writes
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="already exists"):
        _large_labels.predict_to_zarr(model, image, None, None, None, path=used)
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]

    (folder / "notes.txt").unlink()  # an empty folder is used, and emptied again when stopped
    with pytest.raises(InterruptedError):
        _large_labels.predict_to_zarr(model, image, None, None, lambda: True, path=used)
    assert folder.is_dir() and list(folder.iterdir()) == []
    new = tmp_path / "new.zarr"  # a new path: gone again when stopped
    with pytest.raises(InterruptedError):
        _large_labels.predict_to_zarr(model, image, None, None, lambda: True, path=new)
    assert sorted(p.name for p in tmp_path.iterdir()) == [folder.name]
    result = _large_labels.predict_to_zarr(model, image, None, None, None, path=used)
    assert not result.temporary and result.path == folder
    result.remove()  # a given path is never deleted
    labels = np.asarray(result.labels(0.5)[0])
    np.testing.assert_array_equal(labels, apply_threshold(model.predict_compact(image), 0.5))
