"""The Predict widget's Export row: enabled with a model, exports in a worker, reports errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from qtpy.QtWidgets import QFileDialog

from napari_deepseg import SegmentationModel
from napari_deepseg._qt._session import model_store
from napari_deepseg._qt.predict_widget import PredictWidget
from napari_deepseg.data.normalisation import Normalisation
from napari_deepseg.models import build_model

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
TIMEOUT_MS = 120_000


@pytest.fixture
def store():
    torch.manual_seed(0)
    module = build_model("unet", num_classes=2, in_channels=1, encoder="resnet18").eval()
    model = SegmentationModel(
        module,
        architecture="unet",
        encoder="resnet18",
        num_classes=2,
        normalisation=Normalisation(low=(0.0,), high=(255.0,), mode="per_image"),
    )
    store = model_store()
    store.clear()
    yield store, model
    store.clear()


def test_export_torchscript_from_the_predict_widget(qtbot, make_napari_viewer, store, tmp_path, monkeypatch):
    store, model = store
    widget = PredictWidget(make_napari_viewer())
    row = widget.export_row
    assert not row.button.isEnabled()  # no model yet
    store.publish("tiny", model)
    assert row.button.isEnabled()
    row.format_combo.setCurrentIndex(row.format_combo.findData("torchscript"))
    target = tmp_path / "exported.pt"
    asked = []

    def save_dialog(parent, title, name, file_filter):
        asked.append((name, file_filter))
        return str(target), file_filter

    monkeypatch.setattr(QFileDialog, "getSaveFileName", save_dialog)
    with qtbot.waitSignal(row.exported, timeout=TIMEOUT_MS) as blocker:
        row.button.click()
        assert not row.button.isEnabled()  # one export at a time
    assert blocker.args == [target] and asked == [("model.pt", "TorchScript (*.pt)")]
    qtbot.waitUntil(lambda: row.button.isEnabled(), timeout=TIMEOUT_MS)
    image = np.random.default_rng(0).integers(0, 255, (64, 96)).astype(np.uint8)
    view = model.view(image)
    x = torch.from_numpy(model.normalisation.for_image(view.data).apply(view.data))
    with torch.no_grad():
        out = torch.jit.load(target)(x).numpy()
    assert np.abs(out[0] - model.predict_proba(image, precision="fp32")).max() < 1e-4


def test_a_refused_export_is_one_error_notification(qtbot, make_napari_viewer, store, tmp_path, errors):
    store, model = store
    widget = PredictWidget(make_napari_viewer())
    store.publish("tiny", model)
    row = widget.export_row
    row.format_combo.setCurrentIndex(row.format_combo.findData("onnx"))
    with qtbot.waitSignal(row.failed, timeout=TIMEOUT_MS) as blocker:
        row.export(tmp_path / "wrong.pt")  # the suffix does not fit the format
    assert "Could not export the model: the onnx export is written to a .onnx file" in blocker.args[0]
    assert errors == [blocker.args[0]] and list(tmp_path.iterdir()) == []
