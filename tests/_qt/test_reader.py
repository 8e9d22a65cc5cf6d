"""Dropping a model file on napari loads it for the Predict widget; foreign files are left to others."""

from __future__ import annotations

import numpy as np
import pytest

from napari_deepseg import TrainingConfig, sample_data
from napari_deepseg._qt._session import model_store
from napari_deepseg._qt.predict_widget import PredictWidget
from napari_deepseg._qt.reader import get_model_reader
from napari_deepseg.training import Trainer


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """An (untrained) saved model: the reader only cares about the file."""
    image, strokes = sample_data.load_fluorescence_sample()
    config = TrainingConfig(
        pretrained=False,
        iterations=1,
        patch_size=64,
        batch_size=2,
        validation_fraction=0,
        precision="fp32",
        device="cpu",
    )
    model = Trainer(image, strokes, config, class_names=("background", "nucleus")).model
    return model.save(tmp_path_factory.mktemp("models") / "nuclei.safetensors")


@pytest.fixture
def store():
    model_store().clear()
    yield model_store()
    model_store().clear()


def test_opening_a_model_file_adds_no_layer_and_selects_it(make_napari_viewer, model_file, store):
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-deepseg", "Predict")
    assert isinstance(widget, PredictWidget)
    added = viewer.open(str(model_file), plugin="napari-deepseg")
    assert added == [] and len(viewer.layers) == 0
    assert store.names() == ["nuclei.safetensors"]
    assert widget.model_combo.currentText() == "nuclei.safetensors"
    assert widget.model.class_names == ("background", "nucleus")


def test_npe2_offers_the_reader_for_model_files(model_file):
    from npe2 import PluginManager

    pm = PluginManager.instance()
    pm.discover()
    readers = [r.plugin_name for r in pm.iter_compatible_readers([str(model_file)])]
    assert "napari-deepseg" in readers


def test_foreign_and_damaged_files_are_declined(tmp_path, model_file, store):
    from safetensors.numpy import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"weight": np.zeros(3, np.float32)}, str(foreign), metadata={"format": "pt"})
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 64)
    assert get_model_reader(str(foreign)) is None
    assert get_model_reader(str(garbage)) is None
    assert get_model_reader(str(tmp_path / "missing.safetensors")) is None
    assert get_model_reader([str(model_file)]) is None
    assert callable(get_model_reader(str(model_file)))
    assert store.names() == []  # checking a file loads nothing
