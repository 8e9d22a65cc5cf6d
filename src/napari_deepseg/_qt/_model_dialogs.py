"""Model files from the widgets: the file dialogs and save / load with a notification on failure
(the Train and Predict widgets share them, so both say the same thing about the same file)."""

from __future__ import annotations

from pathlib import Path

from napari.utils import notifications
from qtpy.QtWidgets import QFileDialog, QWidget

from ..model_file import ModelFileError
from ..segmentation_model import SegmentationModel

FILE_FILTER = "napari-deepseg models (*.safetensors);;All files (*)"


def ask_save_path(parent: QWidget) -> str:
    """A path chosen in a save dialog, ``""`` when cancelled."""
    path, _ = QFileDialog.getSaveFileName(parent, "Save model", "model.safetensors", FILE_FILTER)
    return str(path)


def ask_load_path(parent: QWidget) -> str:
    """A model file chosen in an open dialog, ``""`` when cancelled."""
    path, _ = QFileDialog.getOpenFileName(parent, "Load a napari-deepseg model", "", FILE_FILTER)
    return str(path)


def save_model_file(model: SegmentationModel, path: str | Path) -> Path | None:
    """Write ``model`` to ``path`` (atomically); ``None`` and an error notification when that fails."""
    try:
        saved = model.save(path)
    except (OSError, ValueError) as err:
        text = str(err) if str(path) in str(err) else f"could not save the model to '{path}': {err}"
        notifications.show_error(text[:1].upper() + text[1:])
        return None
    notifications.show_info(f"Model saved to {saved}")
    return saved


def load_model_file(path: str | Path) -> SegmentationModel | None:
    """The model in ``path``; ``None`` and an error notification when the file cannot be used."""
    try:
        return SegmentationModel.load(path)
    except (ModelFileError, OSError, ValueError) as err:
        notifications.show_error(
            f"Could not load the model: {err}. Choose a .safetensors file saved by "
            "napari-deepseg (Train widget or `napari-deepseg train`)."
        )
        return None
