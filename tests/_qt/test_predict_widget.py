"""The Predict widget: prediction in a worker, live re-thresholding of the cached result, errors."""

from __future__ import annotations

import time
from unittest.mock import patch

import numpy as np
import pytest
import torch
from napari.utils import notifications

from napari_deepseg import TrainingConfig, apply_threshold, sample_data
from napari_deepseg._qt._session import model_store
from napari_deepseg._qt.predict_widget import PredictWidget
from napari_deepseg.prediction import CompactProbabilities
from napari_deepseg.training import Trainer

TIMEOUT_MS = 120_000
CLASS_NAMES = ("background", "nucleus")


@pytest.fixture(scope="module")
def tiny_model():
    """A U-Net trained for 3 iterations on the fluorescence sample: enough to be uncertain somewhere
    (its raw weights, at a higher learning rate: the default ResNet-18 is otherwise still equally
    unsure almost everywhere)."""
    image, strokes = sample_data.load_fluorescence_sample()
    config = TrainingConfig(
        pretrained=False,
        iterations=3,
        ema_decay=0.0,
        learning_rate=3e-3,
        patch_size=64,
        batch_size=2,
        validation_fraction=0,
        precision="fp32",
        device="cpu",
    )
    trainer = Trainer(image, strokes, config, class_names=CLASS_NAMES)
    for _ in trainer.run():
        pass
    return trainer.model


@pytest.fixture
def store(tiny_model):
    store = model_store()
    store.clear()
    store.publish("tiny", tiny_model)
    yield store
    store.clear()


@pytest.fixture
def viewer_and_widget(make_napari_viewer, store):
    viewer = make_napari_viewer()
    # As napari builds it from the menu: the widget sees the viewer through a PublicOnlyProxy.
    _, widget = viewer.window.add_plugin_dock_widget("napari-deepseg", "Predict")
    assert isinstance(widget, PredictWidget)
    return viewer, widget


@pytest.fixture
def errors():
    with patch.object(notifications, "show_error") as show_error:  # the widget and its dialogs
        yield show_error


def _add_sample(viewer):
    image, strokes = sample_data.load_fluorescence_sample()
    layer = viewer.add_image(image, name="fluo")
    viewer.add_labels(strokes, name="strokes", metadata={"class_names": list(CLASS_NAMES)})
    return layer


def _predict(qtbot, widget, **kwargs):
    with qtbot.waitSignal(widget.prediction_finished, timeout=TIMEOUT_MS) as blocker:
        widget.predict(**kwargs)
    return blocker.args[0]


def _result_layers(viewer):
    return [layer for layer in viewer.layers if layer.name.endswith("segmentation")]


def test_predict_then_threshold_without_the_network(qtbot, viewer_and_widget, tiny_model):
    viewer, widget = viewer_and_widget
    image_layer = _add_sample(viewer)
    original = image_layer.data.copy()
    assert [widget.image_combo.itemText(i) for i in range(widget.image_combo.count())] == ["fluo"]
    assert widget.model is tiny_model and widget.threshold_slider.value() == 0
    info = widget.model_info.text()
    assert "unet" in info and "2 nucleus" in info and "Input channels: 1" in info and "3 iterations" in info

    layer = _predict(qtbot, widget)
    assert layer == widget.result_layer and layer.name == "fluo segmentation"
    assert layer.data.shape == image_layer.data.shape
    assert layer.data.min() >= 1 and layer.data.max() <= 2
    assert layer.metadata["class_names"] == list(CLASS_NAMES)
    assert list(layer.features["class"]) == ["unclassified", *CLASS_NAMES]
    strokes = viewer.layers["strokes"]  # the result takes the training strokes' colours
    np.testing.assert_allclose(layer.colormap.map(np.arange(1, 3)), strokes.colormap.map(np.arange(1, 3)))
    assert widget.predict_button.isEnabled() and not widget.cancel_button.isEnabled()
    zeros_at_0 = int((layer.data == 0).sum())

    with (
        patch.object(tiny_model, "predict_compact", wraps=tiny_model.predict_compact) as compact_spy,
        patch.object(tiny_model.module, "forward", wraps=tiny_model.module.forward) as forward_spy,
    ):
        widget.threshold_slider.setValue(90)
        qtbot.wait(10)
    compact_spy.assert_not_called()
    forward_spy.assert_not_called()
    assert widget.threshold_label.text() == "90 %"
    assert viewer.layers[layer.name] == layer
    assert int((layer.data == 0).sum()) > zeros_at_0
    np.testing.assert_array_equal(layer.data, apply_threshold(widget.compact, 0.9))
    np.testing.assert_array_equal(image_layer.data, original)


def test_the_mirroring_checkbox_predicts_the_average_over_mirror_images(qtbot, viewer_and_widget, tiny_model):
    viewer, widget = viewer_and_widget
    image = _add_sample(viewer).data
    assert not widget.mirroring_checkbox.isChecked()  # off by default: four times the time
    _predict(qtbot, widget)
    plain = widget.compact
    widget.mirroring_checkbox.setChecked(True)
    mirrored = _predict(qtbot, widget).data
    expected = tiny_model.predict_compact(image, mirroring=True)
    np.testing.assert_array_equal(widget.compact.best_probability, expected.best_probability)
    np.testing.assert_array_equal(mirrored, expected.best_class)
    assert (expected.best_probability != plain.best_probability).mean() > 0.01  # 5 % here


def test_predicting_again_replaces_the_result_and_recreates_a_deleted_one(qtbot, viewer_and_widget):
    viewer, widget = viewer_and_widget
    _add_sample(viewer)
    first = _predict(qtbot, widget)
    widget.threshold_slider.setValue(50)
    second = _predict(qtbot, widget)
    assert second == first and _result_layers(viewer) == [first]
    np.testing.assert_array_equal(second.data, apply_threshold(widget.compact, 0.5))
    viewer.layers.remove(first)
    third = _predict(qtbot, widget)
    assert _result_layers(viewer) == [third] and third != first


def test_a_model_in_training_is_predicted_from_a_snapshot(qtbot, viewer_and_widget, tiny_model):
    viewer, widget = viewer_and_widget
    _add_sample(viewer)
    before = {k: v.clone() for k, v in tiny_model.module.state_dict().items()}
    tiny_model.training_in_progress = True  # as while the Train widget runs
    try:
        with patch.object(tiny_model.module, "forward", wraps=tiny_model.module.forward) as forward_spy:
            layer = _predict(qtbot, widget)
        forward_spy.assert_not_called()  # a snapshot was predicted, not the weights being trained
    finally:
        tiny_model.training_in_progress = False
    assert layer.data.min() >= 1
    for key, value in tiny_model.module.state_dict().items():  # BatchNorm statistics untouched
        assert torch.equal(value, before[key]), key


def test_probability_layers_and_dask_input(qtbot, viewer_and_widget):
    da = pytest.importorskip("dask.array")
    viewer, widget = viewer_and_widget
    image, _ = sample_data.load_fluorescence_sample()
    viewer.add_image(da.from_array(image, chunks=128), name="lazy")
    widget.probabilities_checkbox.setChecked(True)
    result = _predict(qtbot, widget)
    p_background, p_nucleus = viewer.layers["lazy P(background)"], viewer.layers["lazy P(nucleus)"]
    assert p_nucleus.data.dtype == np.float32 and p_nucleus.data.shape == image.shape
    assert p_background.visible and not p_nucleus.visible
    np.testing.assert_allclose(p_background.data + p_nucleus.data, 1, atol=1e-5)
    np.testing.assert_array_equal(result.data, 1 + (p_nucleus.data > p_background.data))
    _predict(qtbot, widget)
    assert len(viewer.layers) == 4  # image, result, two probability layers: replaced, not added


def test_a_stack_is_predicted_slice_by_slice(qtbot, viewer_and_widget, tiny_model):
    viewer, widget = viewer_and_widget
    image, _ = sample_data.load_fluorescence_sample()
    stack = np.stack([image[:64, :96], image[64:128, :96]])
    viewer.add_image(stack, name="stack", scale=(2, 0.5, 0.5))
    result = _predict(qtbot, widget)
    assert result.data.shape == stack.shape and tuple(result.scale) == (2, 0.5, 0.5)
    np.testing.assert_array_equal(result.data[1], tiny_model.predict(stack[1]))


def test_rgb_image_with_a_grey_model_is_refused_clearly(qtbot, viewer_and_widget, errors):
    viewer, widget = viewer_and_widget
    viewer.add_image(np.zeros((64, 64, 3), np.uint8), name="rgb", rgb=True)
    with qtbot.waitSignal(widget.prediction_failed, timeout=TIMEOUT_MS) as blocker:
        widget.predict_button.click()
    assert "channel" in blocker.args[0]
    errors.assert_called_once()
    assert "channel" in errors.call_args.args[0]
    assert widget.predict_button.isEnabled() and widget.image_combo.isEnabled()
    assert len(viewer.layers) == 1 and widget.result_layer is None


def test_labels_layer_and_missing_model_are_refused(qtbot, viewer_and_widget, errors, store):
    viewer, widget = viewer_and_widget
    strokes = viewer.add_labels(np.ones((32, 32), np.uint8), name="strokes")
    assert widget.image_combo.count() == 0  # a labels layer cannot be picked
    widget.predict(image_layer=strokes)
    assert "Labels layer" in errors.call_args.args[0]
    store.clear()
    assert widget.model is None and widget.model_combo.count() == 0
    widget.predict(image_layer=strokes)
    assert "No model" in errors.call_args.args[0]
    assert len(viewer.layers) == 1 and widget.predict_button.isEnabled()


def test_cancel_leaves_no_layer(qtbot, viewer_and_widget):
    viewer, widget = viewer_and_widget
    _add_sample(viewer)
    with qtbot.waitSignal(widget.prediction_failed, timeout=TIMEOUT_MS) as blocker:
        widget.predict()
        widget.cancel_button.click()  # the engine checks after each tile, so even one tile is enough
    assert blocker.args[0] == "cancelled"
    assert _result_layers(viewer) == [] and widget.predict_button.isEnabled()


def test_load_model_from_file(tmp_path, viewer_and_widget, tiny_model, errors):
    _, widget = viewer_and_widget
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a model at all")
    assert widget.load_model(broken) is None
    assert "broken.safetensors" in errors.call_args.args[0]
    assert widget.model_combo.currentText() == "tiny"

    good = tiny_model.save(tmp_path / "good.safetensors")
    loaded = widget.load_model(good)
    assert loaded is not None and widget.model is loaded
    assert widget.model_combo.currentText() == "good.safetensors"
    assert [widget.model_combo.itemText(i) for i in range(widget.model_combo.count())] == [
        "tiny",
        "good.safetensors",
    ]
    assert widget.model_info.toolTip() == loaded.summary()
    assert "Classes: 1 background, 2 nucleus" in widget.model_info.text()


def test_newly_published_model_is_selected(viewer_and_widget, store, tiny_model):
    _, widget = viewer_and_widget
    store.publish("other", tiny_model)
    assert widget.model_combo.currentText() == "other"
    widget.model_combo.setCurrentIndex(0)
    store.publish("tiny", tiny_model)  # an update of the model being trained: a re-publish
    assert widget.model_combo.currentText() == "tiny"


def test_threshold_slider_on_4096_squared(viewer_and_widget):
    viewer, widget = viewer_and_widget
    rng = np.random.default_rng(0)
    shape = (4096, 4096)
    compact = CompactProbabilities(
        rng.integers(1, 4, shape, dtype=np.uint8), rng.integers(85, 256, shape, dtype=np.uint8), 3
    )
    widget.compact = compact
    widget.result_layer = viewer.add_labels(apply_threshold(compact, 0.0), name="big segmentation")
    timings = []
    for value in (60, 30, 75):
        started = time.perf_counter()
        widget.threshold_slider.setValue(value)
        timings.append(time.perf_counter() - started)
        np.testing.assert_array_equal(widget.result_layer.data, apply_threshold(compact, value / 100))
    print(f"\nthreshold slider on 4096x4096, 3 classes: {', '.join(f'{t * 1e3:.1f}' for t in timings)} ms")


def test_uncertainty_layer_and_where_next_without_the_network(qtbot, viewer_and_widget, tiny_model):
    from napari_deepseg import uncertainty
    from napari_deepseg._qt.layers import camera

    viewer, widget = viewer_and_widget
    image_layer = _add_sample(viewer)
    strokes = viewer.layers["strokes"]
    before = [np.array(la.data, copy=True) for la in (image_layer, strokes)]
    _predict(qtbot, widget)
    assert "fluo uncertainty" not in viewer.layers  # only when asked for
    with (
        patch.object(tiny_model, "predict_compact", wraps=tiny_model.predict_compact) as compact_spy,
        patch.object(tiny_model.module, "forward", wraps=tiny_model.module.forward) as forward_spy,
    ):
        widget.uncertainty_checkbox.setChecked(True)
        layer = viewer.layers["fluo uncertainty"]
        widget.threshold_slider.setValue(70)
        widget.where_button.click()
    compact_spy.assert_not_called()
    forward_spy.assert_not_called()
    expected = uncertainty(widget.compact)
    assert layer.data.shape == image_layer.data.shape and layer.visible
    np.testing.assert_array_equal(layer.data, expected)
    assert widget.image_combo.findText("fluo uncertainty") < 0  # not offered as an image to segment

    row, col = np.round(strokes.world_to_data(camera(viewer).center[-2:])).astype(int)
    assert (row, col) == widget.uncertainty.where_next()
    window = (slice(max(row - 32, 0), row + 32), slice(max(col - 32, 0), col + 32))
    assert not strokes.data[window].any()
    assert expected[window].mean() > np.median(expected)  # one of the less certain parts

    widget.uncertainty_checkbox.setChecked(False)
    assert not layer.visible
    for layer_, copy in zip((image_layer, strokes), before, strict=True):
        np.testing.assert_array_equal(layer_.data, copy)


def test_model_info_of_a_model_trained_with_validation(qtbot, make_napari_viewer, store):
    image, strokes = sample_data.load_fluorescence_sample()
    config = TrainingConfig(
        pretrained=False,
        iterations=3,
        patch_size=64,
        batch_size=2,
        validation_fraction=0.25,
        precision="fp32",
        device="cpu",
    )
    trainer = Trainer(image, strokes, config, class_names=CLASS_NAMES)
    last = list(trainer.run())[-1]  # the typed record, not the stored dict the widget reads
    assert last.validation is not None and 0 <= last.validation.mean_iou <= 1
    store.publish("validated", trainer.model)
    _, widget = make_napari_viewer().window.add_plugin_dock_widget("napari-deepseg", "Predict")
    assert widget.model_combo.currentText() == "validated"
    uncertain = (
        f"{last.validation.uncertain_fraction:.0%} of the pixels around the held-out strokes uncertain"
    )
    assert widget.model_info.text() == (
        "Architecture: unet (encoder resnet18)\nClasses: 1 background, 2 nucleus\nInput channels: 1\n"
        f"Training: 3 iterations, last loss {last.loss:.3g}, "
        f"validation mIoU {last.validation.mean_iou:.2f} ({uncertain})"
    )
    assert widget.model_info.toolTip() == (
        "unet (resnet18), 2 classes [background, nucleus], 1 input channel(s), 3 iterations, "
        f"last loss {last.loss:.3g}, validation mIoU {last.validation.mean_iou:.2f} ({uncertain})"
    )


def test_a_result_hides_the_training_preview_of_its_image(qtbot, viewer_and_widget):
    from napari_deepseg._qt._train_preview import PreviewLayer

    viewer, widget = viewer_and_widget
    image_layer = _add_sample(viewer)
    other = viewer.add_image(np.zeros((32, 32), np.float32), name="other")
    previews = [PreviewLayer(viewer, layer, viewer.layers["strokes"], 2) for layer in (image_layer, other)]
    for preview in previews:  # as the Train widget makes them at Start
        preview.create_empty((32, 32))
        preview.layer.data = np.ones((32, 32), np.uint8)
    assert widget.image_combo.currentText() == "fluo" and widget.status_label.text() == ""
    _predict(qtbot, widget)
    assert not previews[0].layer.visible and previews[1].layer.visible  # another image's preview stays
    assert widget.status_label.text() == (
        "Segmented 'fluo' into 'fluo segmentation'. Hid the training preview 'fluo preview' (its eye in "
        "the layer list shows it again)."
    )
    assert widget.result_layer.visible
    _predict(qtbot, widget)  # already hidden: nothing more to say
    assert widget.status_label.text() == "Segmented 'fluo' into 'fluo segmentation'."


def test_model_text_reports_the_validation_miou():
    from types import SimpleNamespace

    from napari_deepseg._qt._predict_job import model_text

    history = [
        {"iteration": 1, "loss": 0.5, "validation": {"iou": [0.5, None, 0.7]}},
        {"iteration": 2, "loss": 0.25, "validation": None},
    ]
    model = SimpleNamespace(
        class_names=("a", "b", "c"),
        history=history,
        iterations_trained=2,
        architecture="unet",
        encoder="resnet34",
        in_channels=1,
    )
    text = model_text(model)
    assert "2 iterations, last loss 0.25, validation mIoU 0.60" in text and "Classes: 1 a, 2 b, 3 c" in text
