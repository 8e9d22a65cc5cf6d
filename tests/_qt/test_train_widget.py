"""The Train widget end to end: tiny trainings on the bundled fluorescence tile in a real viewer."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from napari.layers import Labels
from qtpy.QtCore import Qt

from napari_deepseg import AugmentationConfig, SegmentationModel, Trainer, TrainingConfig, uncertainty
from napari_deepseg._qt import _train_job
from napari_deepseg._qt._session import model_store
from napari_deepseg._qt.train_widget import TrainWidget
from napari_deepseg.sample_data import fluorescence_sample_layers, load_he_sample

from .conftest import FAST, TIMEOUT


def _copies(*layers) -> list[np.ndarray]:
    return [np.array(layer.data, copy=True) for layer in layers]


def _assert_unchanged(layers, copies) -> None:
    for layer, copy in zip(layers, copies, strict=True):
        assert layer.data.dtype == copy.dtype
        np.testing.assert_array_equal(layer.data, copy)


def _assert_idle(widget: TrainWidget) -> None:
    assert widget.worker is None and widget.trainer is None
    assert widget.start_button.isEnabled() and widget.load_button.isEnabled()
    assert not widget.stop_button.isEnabled() and not widget.pause_button.isEnabled()
    assert widget.pairs_editor.enabled and widget.controls.iterations_spin.enabled


def _train(qtbot, widget: TrainWidget, button) -> SegmentationModel:
    with qtbot.waitSignal(widget.training_finished, timeout=TIMEOUT) as blocker:
        qtbot.mouseClick(button, Qt.LeftButton)
        assert not widget.start_button.isEnabled() and widget.stop_button.isEnabled()
        assert not widget.controls.iterations_spin.enabled and not widget.pairs_editor.enabled
    return blocker.args[0]


def test_train_preview_continue_save_load(trainer_setup, qtbot, errors, tmp_path):
    viewer, widget, image, labels = trainer_setup
    copies = _copies(image, labels)
    widget.set_config(preview_interval=5)

    model = _train(qtbot, widget, widget.start_button)
    assert model is widget.model and model.iterations_trained == 10
    assert widget.plot.point_count == 10
    _assert_idle(widget)
    assert widget.continue_button.isEnabled() and widget.save_button.isEnabled()
    name = f"trained: unet on {image.name}"
    assert model_store().get(name) is model

    preview = viewer.layers[f"{image.name} preview"]
    assert isinstance(preview, Labels) and preview.data.shape == image.data.shape
    assert set(np.unique(preview.data)) <= {1, 2}
    assert preview.opacity == pytest.approx(0.5)
    assert viewer.layers.index(preview) < viewer.layers.index(labels)  # strokes stay on top
    assert viewer.layers.selection.active is labels  # the user keeps painting on the strokes
    assert widget.pairs_editor.pairs() == [(image, labels)]  # the preview is not offered as labels

    widget.set_config(iterations=5)
    continued = _train(qtbot, widget, widget.continue_button)
    assert continued is model and model.iterations_trained == 15
    assert [h["iteration"] for h in model.history] == list(range(1, 16))
    assert widget.plot.point_count == 15 and widget.plot.iterations[-1] == 15
    assert len([la for la in viewer.layers if la.name.endswith("preview")]) == 1  # created once

    path = widget.save_model(tmp_path / "model.safetensors")
    assert path is not None and path.exists()
    loaded = widget.load_model(path)
    assert loaded is widget.model and loaded is not model and loaded.iterations_trained == 15
    assert widget.plot.point_count == 15 and widget.continue_button.isEnabled()
    _assert_unchanged((image, labels), copies)
    assert errors == []


def test_class_names_typed_in_the_widget_reach_the_model(trainer_setup, qtbot, errors, tmp_path):
    _viewer, widget, _image, labels = trainer_setup
    assert labels.metadata["class_names"] == ["background", "nucleus"]  # the sample names them ...
    widget.set_config(iterations=3, preview=False)
    widget.controls.class_names_edit.value = " cytoplasm,nucleus "  # ... the user's names win
    assert widget.controls.class_names == ["cytoplasm", "nucleus"]
    model = _train(qtbot, widget, widget.start_button)
    assert errors == [] and model.iterations_trained == 3
    assert model.class_names == ("cytoplasm", "nucleus")
    path = widget.save_model(tmp_path / "named.safetensors")
    assert SegmentationModel.load(path).class_names == ("cytoplasm", "nucleus")  # they travel in the file

    widget.set_config(class_names=None)
    assert widget.controls.class_names_edit.value == "" and widget.controls.class_names is None
    widget.load_model(path)  # Load shows the model's names, so Continue keeps them
    assert widget.controls.class_names_edit.value == "cytoplasm, nucleus"
    widget.set_config(class_names=["", "cell"], iterations=1)  # an empty name keeps a default
    continued = _train(qtbot, widget, widget.continue_button)
    assert continued.class_names == ("class 1", "cell") and continued.iterations_trained == 4


def test_pair_pickers_follow_the_viewer(trainer_setup):
    viewer, widget, image, labels = trainer_setup
    editor = widget.pairs_editor
    row = editor.rows[0]
    image.name = "renamed"
    assert row.image_combo.value is image and row.image_combo.current_choice == "renamed"
    other = viewer.add_labels(np.zeros_like(labels.data), name="more strokes")
    assert other in row.labels_combo.choices and row.labels_combo.value is labels
    assert image not in row.labels_combo.choices and labels not in row.image_combo.choices
    assert not row.remove_button.enabled  # the last pair cannot be removed
    editor.add_button.native.click()
    assert len(editor.rows) == 2 and all(r.remove_button.enabled for r in editor.rows)
    assert editor.pairs()[1] == (image, labels)  # the only image, and the labels that fit it
    editor.rows[1].remove_button.native.click()
    assert editor.pairs() == [(image, labels)] and not row.remove_button.enabled
    viewer.layers.remove(labels)
    assert row.labels_combo.value is other  # the remaining labels layer of the image's size


def test_stop_keeps_a_usable_model(trainer_setup, qtbot, errors):
    _viewer, widget, image, _labels = trainer_setup
    widget.set_config(iterations=500, preview=False)
    with qtbot.waitSignal(widget.training_finished, timeout=TIMEOUT) as blocker:
        widget.start_button.click()
        qtbot.waitUntil(lambda: widget.plot.point_count >= 2, timeout=TIMEOUT)
        qtbot.mouseClick(widget.stop_button, Qt.LeftButton)
    model = blocker.args[0]
    assert 2 <= model.iterations_trained < 500 and widget.plot.point_count == model.iterations_trained
    _assert_idle(widget)
    assert widget.continue_button.isEnabled() and "stopped" in widget.status_label.text()
    prediction = model.predict(image.data)
    assert prediction.shape == image.data.shape and set(np.unique(prediction)) <= {1, 2}
    assert errors == []


def test_pause_resume_continues_from_the_same_iteration(trainer_setup, qtbot, tmp_path):
    _viewer, widget, _image, _labels = trainer_setup
    widget.set_config(iterations=500, preview=False)
    widget.start_button.click()
    qtbot.waitUntil(lambda: widget.plot.point_count >= 1, timeout=TIMEOUT)
    worker = widget.worker
    with qtbot.waitSignal(worker.paused, timeout=TIMEOUT):
        widget.pause_button.click()
    assert widget.pause_button.text() == "Resume" and widget.pause_button.isEnabled()
    last = widget.plot.iterations[-1]
    assert widget.model.iterations_trained == last
    qtbot.wait(1500)  # longer than an iteration: nothing may happen while paused
    assert widget.plot.iterations[-1] == last and widget.model.iterations_trained == last
    assert widget.save_model(tmp_path / "paused.safetensors") is not None  # saving is safe while paused

    records = []
    worker.yielded.connect(records.append)
    with qtbot.waitSignal(worker.resumed, timeout=TIMEOUT):
        widget.pause_button.click()
    assert widget.pause_button.text() == "Pause"
    qtbot.waitUntil(lambda: bool(records), timeout=TIMEOUT)
    assert records[0].record.iteration == last + 1
    with qtbot.waitSignal(widget.training_finished, timeout=TIMEOUT):
        widget.stop()


def test_deleting_and_editing_layers_does_not_change_the_run(trainer_setup, qtbot, errors):
    viewer, widget, image, labels = trainer_setup
    original_image, original_labels = _copies(image, labels)
    widget.set_config(iterations=4, preview_interval=1)
    with qtbot.waitSignal(widget.training_finished, timeout=TIMEOUT) as blocker:
        widget.start_button.click()
        labels.data[:] = 0  # erased in place, as painting does, while the worker starts
        image.data[:] = 0
        qtbot.waitUntil(lambda: widget.plot.point_count >= 1 or widget.worker is None, timeout=TIMEOUT)
        viewer.layers.remove(image)
        viewer.layers.remove(labels)
    model = blocker.args[0]
    assert errors == [] and model.iterations_trained == 4
    reference = Trainer(original_image, original_labels, TrainingConfig(**{**FAST, "iterations": 4}))
    expected = [record.loss for record in reference.run()]
    # The same run as on the original data (up to float summation order across threads).
    np.testing.assert_allclose([h["loss"] for h in model.history], expected, rtol=1e-2)


@pytest.mark.parametrize("case", ["no strokes", "shape mismatch", "labels as image", "no image"])
def test_bad_pairs_are_reported_and_leave_the_widget_usable(trainer_setup, errors, case):
    viewer, widget, image, labels = trainer_setup
    if case == "no strokes":
        other = viewer.add_labels(np.zeros_like(labels.data), name="empty")
        pair, expected = (image, other), "no painted pixel"
    elif case == "shape mismatch":
        other = viewer.add_labels(np.ones((100, 120), np.uint8), name="small")
        pair, expected = (image, other), "has shape (256, 256)"
    elif case == "labels as image":
        other = labels
        pair, expected = (labels, labels), "is not an image layer"
    else:
        other = labels
        viewer.layers.remove(image)
        pair, expected = (None, labels), "no image"
    copies = _copies(image, labels, other)
    widget.set_pairs([pair])
    widget.start_button.click()
    assert len(errors) == 1 and expected in errors[0], errors
    _assert_idle(widget)
    assert widget.model is None
    _assert_unchanged((image, labels, other), copies)


def _train_expecting_error(qtbot, widget: TrainWidget, button) -> SegmentationModel | None:
    with qtbot.waitSignal(widget.training_finished, timeout=TIMEOUT) as blocker:
        button.click()
    _assert_idle(widget)
    return blocker.args[0]


def test_single_class_is_reported(trainer_setup, qtbot, errors):
    viewer, widget, image, labels = trainer_setup
    one = viewer.add_labels((labels.data > 0).astype(np.uint8), name="one class")
    copies = _copies(image, one)
    widget.set_pairs([(image, one)])
    assert _train_expecting_error(qtbot, widget, widget.start_button) is None
    assert len(errors) == 1 and "only class 1 is painted" in errors[0]
    assert "failed" in widget.status_label.text()
    _assert_unchanged((image, one), copies)


def test_out_of_memory_is_reported(trainer_setup, qtbot, errors, monkeypatch):
    # superqt drops RuntimeErrors raised by a generator without any signal; the job must not.
    _viewer, widget, _image, _labels = trainer_setup

    def run(self):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        yield

    monkeypatch.setattr(_train_job.Trainer, "run", run)
    _train_expecting_error(qtbot, widget, widget.start_button)
    assert len(errors) == 1 and "Out of memory" in errors[0] and "batch size" in errors[0]


def test_out_of_memory_inside_an_iteration_says_what_to_lower(trainer_setup, qtbot, errors, monkeypatch):
    import torch

    _viewer, widget, _image, _labels = trainer_setup

    def no_memory(self, x):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(torch.nn.Conv2d, "forward", no_memory)
    _train_expecting_error(qtbot, widget, widget.start_button)
    assert len(errors) == 1 and errors[0].count("Out of memory") == 1, errors  # one message, not two
    assert "lower the batch size or the patch size" in errors[0] and "2.00 GiB" in errors[0]


def test_model_that_does_not_fit_and_corrupt_file(trainer_setup, qtbot, errors, tmp_path):
    _viewer, widget, image, labels = trainer_setup
    rgb, strokes = load_he_sample()
    rgb_trainer = Trainer(rgb, strokes, TrainingConfig(**{**FAST, "iterations": 1}))
    list(rgb_trainer.run())
    path = rgb_trainer.model.save(tmp_path / "rgb.safetensors")
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(path.read_bytes()[:200])

    assert widget.load_model(corrupt) is None
    assert len(errors) == 1 and "Could not load" in errors[0] and "corrupt.safetensors" in errors[0]
    assert widget.model is None and not widget.continue_button.isEnabled()
    _assert_idle(widget)

    assert widget.load_model(path) is not None and widget.continue_button.isEnabled()
    model = _train_expecting_error(qtbot, widget, widget.continue_button)
    assert model is widget.model and model.iterations_trained == 1  # the model is left as it was
    assert len(errors) == 2 and "3 channel(s)" in errors[1]


@pytest.mark.parametrize("kind", ["stack", "rgb", "multichannel"])
def test_stacks_rgb_and_multichannel_images(make_napari_viewer, qtbot, errors, kind):
    viewer = make_napari_viewer()
    grey, strokes = [item[0] for item in fluorescence_sample_layers()]
    if kind == "stack":  # three slices, strokes on the middle one only; the viewer shows the last
        image_data = np.stack([grey, grey[::-1], 255 - grey[:, ::-1]])
        labels_data = np.zeros(image_data.shape, np.uint8)
        labels_data[1] = strokes[::-1]
    elif kind == "rgb":
        image_data, labels_data = load_he_sample()
    else:  # channels first, as napari keeps a multichannel layer it did not split
        image_data, labels_data = np.stack([grey, 255 - grey]), strokes
    image = viewer.add_image(image_data, name=kind, rgb=kind == "rgb")
    labels = viewer.add_labels(labels_data, name=f"{kind} strokes")
    copies = _copies(image, labels)
    if kind == "stack":
        viewer.dims.set_current_step(0, 2)
    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Train")
    widget.set_pairs([(image, labels)])
    iterations = 4 if kind == "stack" else 2
    widget.set_config(**{**FAST, "iterations": iterations}, preview_interval=1)
    # After 4 fast iterations the network may still give every slice one class, so which slice
    # the preview shows is read from its uncertainty, which differs between slices regardless.
    widget.uncertainty_checkbox.setChecked(kind == "stack")
    model = _train(qtbot, widget, widget.start_button)
    assert errors == [] and model.iterations_trained == iterations
    assert model.in_channels == {"stack": 1, "rgb": 3, "multichannel": 2}[kind]
    preview = viewer.layers[f"{kind} preview"].data
    plane = {
        "stack": lambda: image_data[2],
        "rgb": lambda: image_data,
        "multichannel": lambda: np.moveaxis(image_data, 0, -1),
    }[kind]()
    assert preview.shape == labels_data.shape[-2:]
    expected = model.predict(plane, channel_axis=-1 if kind != "stack" else None)
    mismatch = np.mean(preview != expected)
    assert mismatch < 0.01  # the preview shows the plane at the viewer's step ...
    if kind == "stack":  # ... not the first slice
        shown = viewer.layers[f"{kind} uncertainty"].data
        here, first = (np.abs(shown - uncertainty(model.predict_proba(image_data[i]))).mean() for i in (2, 0))
        assert first > max(2 * here, 1e-3), (here, first)  # slice 0 would swap the two
    _assert_unchanged((image, labels), copies)


def test_settings_round_trip_and_architecture_hints(make_napari_viewer, monkeypatch):
    from napari_deepseg._qt import _train_controls
    from napari_deepseg.models import architecture_spec, pretrained_weights_status

    widget = TrainWidget(make_napari_viewer())
    config = TrainingConfig(
        architecture="deeplabv3plus",
        encoder="resnet34",
        pretrained=False,
        iterations=123,
        batch_size=3,
        patch_size=96,
        learning_rate=2e-4,
        optimizer="sgd",
        weight_decay=5e-4,
        schedule="step",
        loss="ce_dice",
        dice_weight=1.5,
        class_balancing=True,
        labelled_patch_fraction=0.75,
        validation_fraction=0.2,
        validation_interval=20,
        seed=7,
        device="cpu",
        precision="bf16",
        normalisation="dataset",
        ema_decay=0.5,
        regularisation_weight=0.1,  # not in the form: kept
        augmentation=AugmentationConfig(
            flips=False,
            rot90=True,
            rotation_degrees=30,
            scale=0.2,
            brightness=0.1,
            contrast=0.25,
            hue=0.05,
            saturation=0.3,
            noise_std=0.05,
        ),
    )
    widget.set_config(config)
    assert widget.config() == config
    for limits in (dict(iterations=None, max_minutes=2.5), dict(iterations=None, max_minutes=None)):
        widget.set_config(config.replace(**limits))
        assert widget.config() == config.replace(**limits)
    widget.set_config(config)
    controls = widget.controls
    assert controls.architecture_combo.current_choice == "DeepLabv3+"
    assert controls.hint_label.value == architecture_spec("deeplabv3plus").hint

    widget.set_config(architecture="fcn8s", learning_rate=None)
    encoders = list(controls.encoder_combo.choices)
    assert encoders == list(architecture_spec("fcn8s").encoders) and widget.config().encoder == "vgg16"
    default = architecture_spec("fcn8s").default_learning_rate
    spin = controls.learning_rate_spin.native  # the Qt spin box behind the magicgui widget
    assert spin.text() == f"default ({default:g})"  # FCN-8s' own default
    assert widget.config().learning_rate is None
    spin.stepBy(1)  # from "default" to the default's value, then along 1-2-5
    assert spin.value() == pytest.approx(default)
    spin.stepBy(1)
    assert spin.value() == pytest.approx(5e-4)
    spin.stepBy(-2)
    assert spin.value() == pytest.approx(1e-4)
    spin.setValue(3e-4)
    spin.stepBy(-1)
    assert spin.value() == pytest.approx(2e-4)
    spin.lineEdit().setText("3e-5")
    spin.interpretText()
    assert widget.config().learning_rate == pytest.approx(3e-5)

    def only_resnet50_cached(name):
        status = pretrained_weights_status(name)
        return dataclasses.replace(status, found=status.expected_path if name == "resnet50" else None)

    monkeypatch.setattr(_train_controls, "pretrained_weights_status", only_resnet50_cached)
    widget.set_config(architecture="unet", pretrained=True)  # its default encoder: no weights offline here
    box, default = controls.pretrained_checkbox, architecture_spec("unet").default_encoder
    assert default != "resnet50" and widget.config().encoder == default
    assert not box.enabled and default in box.tooltip and not widget.config().pretrained
    assert "save it as" in box.tooltip  # says where to put the weights file
    controls.encoder_combo.value = "resnet50"
    assert box.enabled and box.value and widget.config().pretrained
