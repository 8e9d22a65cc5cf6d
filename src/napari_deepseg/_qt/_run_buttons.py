"""The Train widget's buttons (Start, Pause, Stop / Continue, Save, Load) and which of them a run's
state enables."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qtpy.QtWidgets import QGridLayout, QPushButton, QWidget


class RunButtons(QWidget):
    """Two rows of three buttons, each calling the slot passed for it."""

    def __init__(
        self,
        *,
        start: Callable[[], Any],
        pause: Callable[[], Any],
        stop: Callable[[], Any],
        resume_training: Callable[[], Any],
        save: Callable[[], Any],
        load: Callable[[], Any],
    ) -> None:
        super().__init__()
        self.start = _button("Start", start, "Train a new model on the pairs above")
        self.pause = _button("Pause", pause)
        self.stop = _button("Stop", stop, "Stop after this iteration; the model so far is kept")
        self.continue_ = _button(
            "Continue", resume_training, "Train the current model further, until 'Stop after' says"
        )
        self.save = _button("Save…", save)
        self.load = _button("Load…", load, "Load a saved model to continue training it")
        grid = QGridLayout(self)
        grid.setContentsMargins(0, 0, 0, 0)
        for i, button in enumerate((self.start, self.pause, self.stop, self.continue_, self.save, self.load)):
            grid.addWidget(button, i // 3, i % 3)

    def set_running(self, running: bool, has_model: bool) -> None:
        """Idle: everything but Pause / Stop (Continue and Save need a model); running: only those two."""
        idle = not running
        for button in (self.start, self.load):
            button.setEnabled(idle)
        for button in (self.continue_, self.save):
            button.setEnabled(idle and has_model)
        self.pause.setEnabled(running)
        self.pause.setText("Pause")
        self.stop.setEnabled(running)

    def pausing(self) -> None:
        self.pause.setEnabled(False)  # until the worker confirms
        self.pause.setText("Pausing…")

    def paused(self, has_model: bool) -> None:
        self.pause.setText("Resume")
        self.pause.setEnabled(True)
        self.save.setEnabled(has_model)  # a paused model can be saved

    def resumed(self) -> None:
        self.pause.setText("Pause")
        self.pause.setEnabled(True)
        self.save.setEnabled(False)

    def stopping(self) -> None:
        self.stop.setEnabled(False)
        self.pause.setEnabled(False)


def _button(text: str, slot: Callable[[], Any], tooltip: str = "") -> QPushButton:
    button = QPushButton(text)
    button.setToolTip(tooltip)
    button.clicked.connect(slot)
    return button
