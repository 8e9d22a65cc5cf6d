"""Fixtures of the widget tests: a viewer with the Train widget on the bundled tile, quiet
notifications, one torch thread."""

from __future__ import annotations

import pytest

from napari_deepseg import AugmentationConfig

FAST = dict(
    iterations=10,
    patch_size=64,
    batch_size=2,
    pretrained=False,
    validation_fraction=0.0,
    precision="fp32",
    device="cpu",
    augmentation=AugmentationConfig.disabled(),
    seed=0,
)
TIMEOUT = 120_000  # ms; the CPU is shared, a tiny run usually takes a few seconds


@pytest.fixture(autouse=True)
def _one_torch_thread():
    # Two OpenMP threads on a busy 2-core machine are several times slower than one.
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def errors(monkeypatch) -> list[str]:
    """Messages of the error notifications the widget shows."""
    from napari.utils import notifications

    messages: list[str] = []
    monkeypatch.setattr(notifications, "show_error", lambda message: messages.append(str(message)))
    return messages


@pytest.fixture
def trainer_setup(make_napari_viewer, qtbot):
    from napari_deepseg._qt.train_widget import TrainWidget
    from napari_deepseg.sample_data import fluorescence_sample_layers

    viewer = make_napari_viewer()
    image, labels = [viewer._add_layer_from_data(*item)[0] for item in fluorescence_sample_layers()]
    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Train")
    widget.set_pairs([(image, labels)])
    widget.set_config(**FAST)
    yield viewer, widget, image, labels
    if widget.worker is not None:  # a failed test must not leave a thread behind
        widget.stop()
        qtbot.waitUntil(lambda: widget.worker is None, timeout=TIMEOUT)


def predict_widget_with(make_napari_viewer, name: str, model):
    """A viewer with a docked Predict widget offering ``model`` (published as ``name``), as
    (viewer, widget); the model store is emptied afterwards. Yield from it in a fixture."""
    from napari_deepseg._qt._session import model_store
    from napari_deepseg._qt.predict_widget import PredictWidget

    store = model_store()
    store.clear()
    store.publish(name, model)
    viewer = make_napari_viewer()
    widget = PredictWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Predict")
    try:
        yield viewer, widget
    finally:
        store.clear()
