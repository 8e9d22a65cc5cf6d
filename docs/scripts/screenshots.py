"""Screenshots for the docs, taken the way a user works (run by hand, not in CI):

    xvfb-run -a -s "-screen 0 1600x1000x24" python docs/scripts/screenshots.py [--iterations 80]

Opens napari on the bundled fluorescence sample, docks Train and Predict from the Plugins
menu, trains for a time budget with the uncertainty shown, predicts with a 50 % minimum
probability and saves PNGs to docs/images/.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import napari
from qtpy.QtCore import QEventLoop, QTimer

OUT = Path(__file__).resolve().parents[1] / "images"


def wait_for(signal, timeout_s: float = 1800) -> list:
    loop = QEventLoop()
    received: list = []
    signal.connect(lambda *args: (received.extend(args), loop.quit()))
    QTimer.singleShot(int(timeout_s * 1000), loop.quit)
    loop.exec_()
    return received


def settle(seconds: float = 0.5) -> None:
    """Let Qt run the layout passes still pending: a grab right after a signal can catch the dock
    between a scroll bar appearing and the form being narrowed to match (a clipped right edge)."""
    loop = QEventLoop()
    QTimer.singleShot(int(seconds * 1000), loop.quit)
    loop.exec_()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=1.5, help="training time budget")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    OUT.mkdir(parents=True, exist_ok=True)
    viewer = napari.Viewer(title="napari-deepseg")
    viewer.window.resize(1500, 950)
    viewer.open_sample("napari-deepseg", "fluorescence_tile")
    image, strokes = viewer.layers
    _, train = viewer.window.add_plugin_dock_widget("napari-deepseg", "Train")
    _, predict = viewer.window.add_plugin_dock_widget("napari-deepseg", "Predict", tabify=True)
    train.set_pairs([(image, strokes)])
    train.set_config(
        iterations=None, max_minutes=args.minutes, validation_fraction=0.1, validation_interval=20
    )
    train.uncertainty_checkbox.setChecked(True)
    print("training…", flush=True)
    train.start()
    wait_for(train.training_finished)
    print("trained:", train.status_label.text(), flush=True)
    train.plot.flush()
    train.parent().raise_()  # show the Train tab
    settle()
    viewer.window._qt_window.grab().save(str(OUT / "train.png"))
    for layer in list(viewer.layers):
        if layer.name.endswith("uncertainty"):
            layer.visible = False

    predict.parent().raise_()
    predict.image_combo.setCurrentText(image.name)
    predict.predict()
    (result,) = wait_for(predict.prediction_finished)
    predict.threshold_slider.setValue(50)
    strokes.visible = False
    result.opacity = 0.45
    settle()
    viewer.window._qt_window.grab().save(str(OUT / "predict.png"))
    print(f"saved train.png and predict.png in {OUT}")
    viewer.close()


if __name__ == "__main__":
    main()
