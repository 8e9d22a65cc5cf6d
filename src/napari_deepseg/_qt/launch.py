"""napari on a bundled sample with the Train and Predict widgets docked (``napari-deepseg demo``)."""

from __future__ import annotations

from typing import Any

import napari
from qtpy.QtCore import QTimer

# Load torch (and triton, which it imports) before napari creates its OpenGL context: with Mesa's
# LLVM-based drivers a later triton import crashes on clashing LLVM symbols.
from . import predict_widget, train_widget  # noqa: F401

SAMPLES = {"fluorescence": "fluorescence_tile", "he": "he_tile"}  # CLI name -> napari.yaml sample key


def show_demo(sample: str, **training: Any) -> int:
    """Open a viewer on ``sample`` (image + strokes) with the Train widget set to ``training``
    (``TrainingConfig`` fields) and run napari until it is closed; nothing trains until Start."""
    set_up_demo(napari.Viewer(title="napari-deepseg demo"), sample, **training)
    print(
        "Press Start in the Train tab; when training ends, Predict in the Predict tab and move the "
        "minimum-probability slider."
    )
    napari.run()
    return 0


def set_up_demo(viewer: napari.Viewer, sample: str, **training: Any) -> Any:
    """Add the sample and the docked widgets to ``viewer``; returns the Train widget."""
    image, strokes = viewer.open_sample("napari-deepseg", SAMPLES[sample])
    train_dock, train = viewer.window.add_plugin_dock_widget("napari-deepseg", "Train")
    viewer.window.add_plugin_dock_widget("napari-deepseg", "Predict", tabify=True)
    train.set_pairs([(image, strokes)])
    train.set_config(**training)
    viewer.layers.selection.active = strokes  # ready to paint more strokes
    QTimer.singleShot(0, train_dock.raise_)  # start on the Train tab (once the tab bar exists)
    QTimer.singleShot(0, viewer.reset_view)  # fit the image once the docks have taken their space
    return train
