"""The viewer ``napari-deepseg demo`` opens: the sample, both widgets, the short preset."""

from __future__ import annotations

from napari_deepseg._qt.launch import set_up_demo
from napari_deepseg._qt.predict_widget import PredictWidget


def test_demo_viewer_is_ready_to_train(make_napari_viewer):
    viewer = make_napari_viewer()
    train = set_up_demo(
        viewer,
        "he",
        architecture="fcn8s",
        iterations=7,
        device="cpu",
        patch_size=128,
        batch_size=4,
        validation_fraction=0.0,
    )
    image, strokes = viewer.layers
    assert (type(image).__name__, image.rgb, type(strokes).__name__) == ("Image", True, "Labels")
    assert train.pairs_editor.pairs() == [(image, strokes)]
    config = train.config()
    assert (
        config.architecture,
        config.iterations,
        config.patch_size,
        config.batch_size,
        config.validation_fraction,
        config.device,
    ) == ("fcn8s", 7, 128, 4, 0.0, "cpu")
    assert viewer.layers.selection.active == strokes
    docked = list(viewer.window.dock_widgets.values())
    assert sum(isinstance(w, PredictWidget) for w in docked) == 1 and train in docked
