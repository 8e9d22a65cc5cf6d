"""GUI-side bookkeeping of one training run: its worker, progress bar, live strokes, outcome, and
the status line it shows."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from napari.utils import notifications
from qtpy.QtCore import QEvent, QRect, Qt
from qtpy.QtWidgets import QLabel, QProgressBar

from .. import TrainingConfig, TrainingProgress
from .._device import worker_thread_count
from ._live_labels import LiveLabels
from ._preview_job import Preview, PreviewSettings
from ._train_job import TrainingError, wait_until

_log = logging.getLogger(__name__)
PROGRESS_INTERVAL_S = 0.25


class RunProgress:
    """A run's steps on the dock's own progress bar: iterations, percent of a time budget, or a
    busy indicator (``total`` 0) for a run without a limit.

    Not napari's ``progress``: its activity-dock bar runs ``processEvents`` when it is created and
    each time it moves, so whatever was pending (a canvas draw, a layer's first paint) ran nested
    inside Start or inside a record's handler, one long stall instead of several short ones.
    """

    def __init__(self, bar: QProgressBar, total: int, *, percent: bool = False) -> None:
        self.bar, self.total, self.n = bar, total, 0
        bar.setRange(0, total)  # (0, 0): Qt's busy indicator
        bar.setValue(0)
        bar.setFormat("%p %" if percent else "%v / %m")
        bar.setTextVisible(bool(total))

    def update(self, steps: int) -> None:
        self.n += steps
        # QProgressBar.setValue repaints synchronously when its text changes, and a synchronous
        # repaint paints the whole window (the viewer's canvas too, if it waits for a draw)
        # inside the record's handler: with updates off it only posts an ordinary update.
        self.bar.setUpdatesEnabled(False)
        self.bar.setValue(self.n)
        self.bar.setUpdatesEnabled(True)  # (which calls update())

    def close(self) -> None:
        if not self.total:  # the busy indicator stops
            self.bar.setRange(0, 1)
            self.bar.setValue(0)


def progress_bar() -> QProgressBar:
    """The Train widget's bar; always shown, so that a run's start or end never changes the height
    left to the loss plot (a resize lays the figure out again: ~100 ms)."""
    bar = QProgressBar()
    bar.setRange(0, 1)
    bar.setValue(0)
    bar.setTextVisible(False)
    return bar


class StatusLabel(QLabel):
    """The status line: word-wrapped, and never shorter than two lines (a record's text), so that
    the first record of a run does not shrink the loss plot below it: a resize lays the figure
    out and draws it again (~100 ms on a busy CPU)."""

    LINES = 2

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.setWordWrap(True)
        self._fit_lines()

    def changeEvent(self, event: Any) -> None:  # noqa: N802 (Qt's name)
        super().changeEvent(event)
        if event.type() in (QEvent.FontChange, QEvent.StyleChange):  # napari's stylesheet, a theme
            self._fit_lines()

    def _fit_lines(self) -> None:
        margins = self.contentsMargins()
        text = "\n".join(["x"] * self.LINES)  # measured as QLabel measures its text
        lines = self.fontMetrics().boundingRect(QRect(0, 0, 10_000, 10_000), Qt.AlignLeft, text).height()
        self.setMinimumHeight(lines + margins.top() + margins.bottom())


@dataclass
class TrainingRun:
    """Everything one run needs on the GUI side."""

    worker: Any  # a PooledGeneratorWorker (superqt's GeneratorWorker on our pool) driving ``job``
    job: Any  # the generator from ``training_job``
    name: str  # the name the model is published under
    preview: PreviewSettings  # shared with the worker
    config: TrainingConfig
    live_labels: LiveLabels  # strokes painted during the run go to the trainer
    progress: RunProgress | None = None
    trainer: Any = None  # once the worker has built it: Stop reaches into its iteration
    error: BaseException | None = None
    stopped: bool = False
    _last_progress: float = 0.0

    @property
    def progress_total(self) -> int:
        """Steps of the progress bar: iterations, percent of a time budget, 0 (busy) until stopped."""
        config = self.config
        if config.iterations is None and config.max_minutes is None:
            return 0
        return 100 if config.iterations is None or config.max_minutes is not None else config.iterations

    def advance_progress(self, record: TrainingProgress) -> None:
        """Move the progress bar, at most a few times a second (each move repaints it)."""
        if self.progress is None:
            return
        total, now = self.progress.total, time.monotonic()
        if not total or math.isnan(record.fraction_done):
            return
        if record.finished or now - self._last_progress >= PROGRESS_INTERVAL_S:
            target = total if record.finished else min(total, round(record.fraction_done * total))
            if target > self.progress.n:
                self.progress.update(target - self.progress.n)
            self._last_progress = now

    def request_stop(self) -> None:
        """End the run within a second, even mid-iteration; the last finished weights are kept."""
        self.stopped = True
        self.preview.stop.set()
        if self.trainer is not None:
            self.trainer.request_stop()  # abandons the iteration under way, between two layers
        self.worker.quit()  # and the generator at its next yield

    def close(self) -> None:
        """Release the progress bar and, once the worker has left it, the job (the trainer's state)."""
        self.live_labels.close()
        if not self.worker.is_running:  # else it stops at its next yield and the job is collected
            self.job.close()
        if self.progress is not None:
            self.progress.close()


class RunHolder:
    """The active run, reachable from the widget's ``destroyed`` callback without the widget."""

    run: TrainingRun | None = None


def drive(job: Any) -> Any:
    # On a PooledGeneratorWorker: its thread is already at a lower priority, so torch's OpenMP
    # threads, created by this one, are too.
    torch.set_num_threads(worker_thread_count())
    yield from job  # a generator function, as superqt's create_worker requires to make a GeneratorWorker


def shutdown(holder: RunHolder, *_: Any) -> None:
    """Stop a run whose widget (or viewer) is going away; wait briefly for the thread to leave."""
    run, holder.run = holder.run, None
    if run is not None:
        run.request_stop()
        wait_until(lambda: not run.worker.is_running, 5.0)
        run.close()


def report_error(error: BaseException) -> None:
    """Notify the user of a failed run."""
    # ImportError: an optional extra (the TensorBoard folder without tensorboard); its message
    # names what to install.
    if isinstance(error, (ValueError, TypeError, FloatingPointError, TrainingError, ImportError)):
        notifications.show_error(f"Training failed: {error}")
    else:  # a bug rather than bad input: keep the traceback in the log
        _log.error("training failed", exc_info=error)
        notifications.show_error(f"Training failed with {type(error).__name__}: {error}")


def show_warning(warning: tuple) -> None:
    """Show napari-deepseg's warnings from the worker thread (e.g. no pretrained weights offline)."""
    message, _category, filename = warning[:3]
    if "napari_deepseg" in str(filename):
        notifications.show_warning(str(message))


def status_text(
    record: TrainingProgress,
    config: TrainingConfig,
    class_names: Sequence[str],
    preview: Preview | None = None,
) -> str:
    """The status line: iteration, loss, time, painted pixels per class, the preview's doubt."""
    iteration = f"Iteration {record.iteration}" + (
        f" / {record.last_iteration}" if record.last_iteration else ""
    )
    elapsed = _clock(record.elapsed_seconds) + (
        f" / {_clock(60 * config.max_minutes)}" if config.max_minutes else ""
    )
    painted = " · ".join(f"{name} {count}" for name, count in zip(class_names, record.painted_pixels))
    text = f"{iteration} · loss {record.loss:.3g} · {elapsed}\npainted: {painted or '–'}"
    if preview is not None:
        text += f" · uncertain: {100 * preview.uncertain_fraction:.0f} % of the view"
    return text


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"
