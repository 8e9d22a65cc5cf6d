"""The Train form's "Download ImageNet weights" button against a local server, and its TensorBoard
folder reaching the training job (logged in the worker thread)."""

from __future__ import annotations

import threading

import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from napari.utils import notifications

from napari_deepseg._qt._train_controls import TrainControls
from napari_deepseg._qt._weights_download import CANCEL, DOWNLOAD

from ..models.weights_server import fake_encoder, weights_server  # noqa: F401 (fixtures)
from .conftest import TIMEOUT


@pytest.fixture
def controls(qtbot, fake_encoder, weights_server, monkeypatch):  # noqa: F811
    monkeypatch.setenv("NAPARI_DEEPSEG_WEIGHTS_URL", weights_server.url())
    monkeypatch.setattr(notifications, "show_info", lambda message: None)
    form = TrainControls()
    qtbot.addWidget(form)
    form.set_options(architecture="unet", encoder=fake_encoder.name, pretrained=True)
    return form


def _download(qtbot, form: TrainControls) -> None:
    download = form.weights_download
    download.button.native.click()
    assert download.running and download.button.text == CANCEL and not download.progress_bar.native.isHidden()
    qtbot.waitUntil(lambda: not download.running, timeout=TIMEOUT)


def test_the_button_downloads_the_weights_and_enables_pretrained(
    qtbot,
    controls,
    fake_encoder,  # noqa: F811
    weights_server,  # noqa: F811
    errors,
):
    weights_server.files[fake_encoder.filename] = fake_encoder.content
    box, download = controls.pretrained_checkbox, controls.weights_download
    assert not box.enabled and not controls.config().pretrained  # nothing in the cache yet
    assert not download.button.native.isHidden() and download.progress_bar.native.isHidden()
    assert weights_server.requests == []  # nothing downloads until the click
    _download(qtbot, controls)
    assert errors == []
    assert fake_encoder.cached.read_bytes() == fake_encoder.content
    assert box.enabled and box.value and controls.config().pretrained
    assert download.button.native.isHidden() and download.progress_bar.native.isHidden()


def test_a_failed_download_is_one_notification_and_keeps_pretrained_off(
    qtbot,
    controls,
    fake_encoder,  # noqa: F811
    weights_server,  # noqa: F811
    errors,
):
    weights_server.files[fake_encoder.filename] = b"not the weights"
    _download(qtbot, controls)
    assert len(errors) == 1
    assert errors[0].startswith("Could not download the ImageNet weights of resnet18: the file from")
    assert "damaged" in errors[0] and not fake_encoder.cached.exists()
    download = controls.weights_download
    assert not controls.pretrained_checkbox.enabled and not controls.config().pretrained
    assert not download.button.native.isHidden() and download.button.text == DOWNLOAD  # try again


def test_closing_the_form_mid_download_neither_crashes_nor_blocks_and_the_file_completes(
    qtbot,
    fake_encoder,  # noqa: F811
    weights_server,  # noqa: F811
    errors,
    monkeypatch,
):
    from qtpy.QtWidgets import QApplication

    monkeypatch.setenv("NAPARI_DEEPSEG_WEIGHTS_URL", weights_server.url())
    shown: list[str] = []
    monkeypatch.setattr(notifications, "show_info", shown.append)
    weights_server.files[fake_encoder.filename] = fake_encoder.content
    weights_server.gate = threading.Event()
    form = TrainControls()  # not given to qtbot: this test deletes it
    form.set_options(architecture="unet", encoder=fake_encoder.name, pretrained=True)
    download = form.weights_download
    download.button.native.click()
    qtbot.waitUntil(lambda: download._count.done > 0, timeout=TIMEOUT)  # half the file is in
    worker = download.worker
    form.close()
    form.deleteLater()
    QApplication.processEvents()
    weights_server.gate.set()  # the rest arrives after the form is gone
    qtbot.waitUntil(lambda: fake_encoder.cached.exists(), timeout=TIMEOUT)
    qtbot.waitUntil(lambda: not worker.is_running, timeout=TIMEOUT)
    for _ in range(5):
        QApplication.processEvents()
    assert fake_encoder.cached.read_bytes() == fake_encoder.content  # hash-checked, whole
    assert errors == [] and shown == []  # nothing shown for a form that is gone
    assert [p.name for p in fake_encoder.cache.iterdir()] == [fake_encoder.filename]  # no partial file


def test_an_encoder_with_cached_weights_offers_no_download(qtbot, controls, fake_encoder):  # noqa: F811
    fake_encoder.cache.mkdir(parents=True)
    fake_encoder.cached.write_bytes(fake_encoder.content)
    controls.set_options(encoder="resnet34")  # another encoder (nothing cached) ...
    assert not controls.weights_download.button.native.isHidden()
    controls.set_options(encoder=fake_encoder.name)  # ... and back: its file is there now
    assert controls.weights_download.button.native.isHidden() and controls.pretrained_checkbox.enabled


def test_the_tensorboard_folder_reaches_the_job_and_logs_in_the_worker(
    trainer_setup, qtbot, errors, tmp_path, monkeypatch
):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from napari_deepseg.training.tensorboard import TensorBoardLogger

    _viewer, widget, _image, _labels = trainer_setup
    assert widget.controls.tensorboard is None  # off unless a folder is chosen
    threads = []
    log = TensorBoardLogger.log

    def spy(self, progress, trainer):
        threads.append(threading.current_thread())
        log(self, progress, trainer)

    monkeypatch.setattr(TensorBoardLogger, "log", spy)
    widget.set_config(iterations=3, preview=False, tensorboard=tmp_path / "tb")
    assert widget.controls.tensorboard == tmp_path / "tb"
    with qtbot.waitSignal(widget.training_finished, timeout=TIMEOUT):
        widget.start()
    assert errors == []
    runs = list((tmp_path / "tb").iterdir())
    assert len(runs) == 1 and runs[0].name.startswith("run-")
    events = EventAccumulator(str(runs[0]))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3]
    assert [e.value for e in events.Scalars("train/loss")] == pytest.approx(
        [h["loss"] for h in widget.model.history], rel=1e-6
    )
    assert len(threads) == 3 and threading.main_thread() not in threads
