"""The Predict widget's "Export…" row: a format, a file dialog, the export in a worker thread.

The export itself (and its check against the engine) is :func:`napari_deepseg.export.export_model`;
this row only asks where, runs it off the GUI thread and tells the user how it went.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

from napari.utils import notifications
from qtpy.QtCore import Signal
from qtpy.QtWidgets import QComboBox, QFileDialog, QHBoxLayout, QPushButton, QWidget
from superqt.utils import FunctionWorker, create_worker

from ..segmentation_model import SegmentationModel

# Format -> (combo text, file dialog filter, default file name).
CHOICES: dict[str, tuple[str, str, str]] = {
    "bioimageio": ("bioimage.io package", "bioimage.io model packages (*.zip)", "model.zip"),
    "torchscript": ("TorchScript", "TorchScript (*.pt)", "model.pt"),
    "onnx": ("ONNX", "ONNX (*.onnx)", "model.onnx"),
}


class ExportRow(QWidget):
    """A format combo and an "Export…" button, enabled while ``current_model()`` gives a model.

    Signals ``exported`` (the written path) or ``failed`` (the message shown) when a run ends.
    """

    exported = Signal(object)
    failed = Signal(str)

    def __init__(self, current_model: Callable[[], SegmentationModel | None]) -> None:
        super().__init__()
        self._current_model = current_model
        self.worker: FunctionWorker | None = None
        self.format_combo = QComboBox()
        for fmt, (text, _, _) in CHOICES.items():
            self.format_combo.addItem(text, fmt)
        self.format_combo.setToolTip(
            "bioimage.io: a zip for deepImageJ, ilastik and bioimage.io (takes raw images). "
            "TorchScript / ONNX: the network alone (takes normalised images); see docs/export.md."
        )
        self.button = QPushButton("Export…")
        self.button.setToolTip("Write the selected model for other tools, checked against napari-deepseg")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.format_combo)
        layout.addWidget(self.button)
        self.button.clicked.connect(self._ask_and_export)
        self.refresh()

    @property
    def format(self) -> str:
        return str(self.format_combo.currentData())

    def refresh(self) -> None:
        """Enable the row when there is a model and no export is running."""
        self.button.setEnabled(self._current_model() is not None and self.worker is None)

    def _ask_and_export(self, *_: object) -> None:
        _, file_filter, default = CHOICES[self.format]
        path, _ = QFileDialog.getSaveFileName(self, "Export model", default, file_filter)
        if path:
            self.export(path)

    def export(self, path: str | Path) -> None:
        """Export the current model to ``path`` in the chosen format, in a worker thread."""
        model = self._current_model()
        if model is None or self.worker is not None:
            return
        if model.training_in_progress:  # the Train widget is updating it: export a snapshot
            model = copy.deepcopy(model)
        self.worker = create_worker(
            model.export,
            path,
            self.format,
            _start_thread=False,
            _connect={"returned": self._on_exported, "errored": self._on_errored},
        )
        self.worker.finished.connect(self._on_finished)
        self.refresh()
        notifications.show_info(f"Exporting the model to {path} (checked against napari-deepseg first)…")
        self.worker.start()

    def _on_finished(self) -> None:
        self.worker = None
        try:
            self.refresh()
        except RuntimeError:  # the dock was closed while the export was finishing
            return

    def _on_exported(self, path: Path) -> None:
        notifications.show_info(f"Model exported to {path}")
        self.exported.emit(path)

    def _on_errored(self, error: BaseException) -> None:
        if isinstance(error, (ValueError, ImportError, OSError)):  # ExportError, the missing extra, disk
            message = f"Could not export the model: {error}"
            notifications.show_error(message)
        else:  # unexpected: full traceback in napari's notification
            message = f"{type(error).__name__}: {error}"
            notifications.notification_manager.receive_error(type(error), error, error.__traceback__)
        self.failed.emit(message)
