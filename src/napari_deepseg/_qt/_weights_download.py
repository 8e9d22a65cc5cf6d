"""The Train form's "Download ImageNet weights" button: fetches torchvision's file for the chosen
encoder in a worker (the only download the plugin makes, and only on this click), with a progress bar.

The worker writes byte counts into a plain object that a timer shows, and its results reach bound
methods of a QObject owned by the form only, so closing the dock mid-download neither crashes nor
blocks: the download completes into the cache in the background, and nothing is shown.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from magicgui.widgets import ProgressBar, PushButton
from napari.utils import notifications
from qtpy.QtCore import QObject, QTimer
from superqt.utils import create_worker

from ..models import download_pretrained

DOWNLOAD, CANCEL = "Download ImageNet weights", "Cancel download"


class ByteCount:
    """Bytes fetched so far, written by the worker (``count(done, total)``), read by a timer; a set
    ``stop`` ends the download at its next chunk."""

    def __init__(self, stop: threading.Event) -> None:
        self.done: int = 0
        self.total: int | None = None
        self.stop = stop

    def __call__(self, done: int, total: int | None) -> None:
        if self.stop.is_set():
            raise InterruptedError("download cancelled")
        self.done, self.total = done, total


class WeightsDownload(QObject):
    """``button`` (shown while the chosen encoder has no weights in the cache) and ``progress_bar``.

    Parameters
    ----------
    on_done
        Called in the GUI thread when a download ends, with the encoder whose file is now in the
        cache, or ``None`` after a failure or a cancel.
    parent
        The form holding the widgets: when it goes, the worker's results go nowhere.
    """

    def __init__(self, on_done: Callable[[str | None], None], parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._on_done = on_done
        self.encoder: str | None = None
        self.worker: Any = None
        self._downloaded: str | None = None
        self.button = PushButton(text=DOWNLOAD)
        self.progress_bar = ProgressBar(value=0, min=0, max=0, label=" ", visible=False)
        self._stop = threading.Event()
        self._count = ByteCount(self._stop)
        self._timer = QTimer(self, interval=100)
        self._timer.timeout.connect(self._show_progress)
        self.button.changed.connect(self._on_clicked)

    @property
    def running(self) -> bool:
        return self.worker is not None

    def set_encoder(self, encoder: str | None, available: bool) -> None:
        """Offer the download for ``encoder`` when its weights are not ``available``."""
        if self.running:
            return
        self.encoder = encoder
        self.button.visible = encoder is not None and not available
        self.button.tooltip = (
            f"Fetch torchvision's ImageNet weights of {encoder} into the torch hub cache (hash checked)"
            if encoder
            else ""
        )

    def start(self) -> None:
        """Download the chosen encoder's weights in a worker; errors become a notification."""
        if self.running or self.encoder is None:
            return
        self._stop.clear()
        self._count = count = ByteCount(self._stop)
        self.worker = create_worker(
            download_pretrained,
            self.encoder,
            count,
            _start_thread=False,
            _connect={"errored": self._on_errored, "finished": self._on_finished},
        )
        self.worker.returned.connect(self._on_returned)
        self.button.text = CANCEL
        self.progress_bar.max = 0  # busy until the size is known
        self.progress_bar.visible = True
        self._timer.start()
        self.worker.start()

    def cancel(self) -> None:
        """Stop the download at its next chunk; nothing is kept."""
        self._stop.set()

    def _on_clicked(self, *_: Any) -> None:
        if self.running:
            self.cancel()
        else:
            self.start()

    def _show_progress(self) -> None:
        count = self._count
        if count.total:  # in KiB: a Qt progress bar counts in 32-bit integers
            self.progress_bar.max = count.total // 1024
            self.progress_bar.value = min(count.done // 1024, self.progress_bar.max)

    def _on_returned(self, path: Path) -> None:
        notifications.show_info(f"ImageNet weights of {self.encoder} saved to {path}")
        self._downloaded = self.encoder

    def _on_errored(self, error: BaseException) -> None:
        if isinstance(error, InterruptedError):
            notifications.show_info("Download cancelled; nothing was kept.")
        else:
            notifications.show_error(f"Could not download the ImageNet weights of {self.encoder}: {error}")

    def _on_finished(self) -> None:
        self.worker = None
        self._timer.stop()
        self.button.text = DOWNLOAD
        self.progress_bar.visible = False
        downloaded, self._downloaded = self._downloaded, None
        self._on_done(downloaded)
