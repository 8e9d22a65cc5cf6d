"""GUI-side bookkeeping of one training run: its worker, progress bar, preview layer, outcome."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from napari.utils import notifications
from napari.utils.colormaps import DirectLabelColormap

from . import layers as layer_io
from ._train_job import PreviewSettings, TrainingError, wait_until

if TYPE_CHECKING:
    import napari

_log = logging.getLogger(__name__)
PROGRESS_INTERVAL_S = 0.25


class PreviewLayer:
    """The "<image> preview" labels layer: created on the first preview (or reused), then only
    its data is replaced. One the user deletes stays deleted for the rest of the run."""

    def __init__(self, viewer: napari.viewer.Viewer, image_layer: Any, labels_layer: Any,
                 num_classes: int) -> None:
        self.viewer = viewer
        self.name = f"{image_layer.name} preview"
        self._image_layer, self._labels_layer = image_layer, labels_layer
        self._colors = layer_io.class_colors(labels_layer, num_classes)  # the strokes' colours
        self.layer: Any = None

    def create_empty(self, shape: tuple[int, ...]) -> None:
        """Add the (transparent) layer now: adding a layer costs the GUI thread far more than
        replacing its data, so it happens when Start is pressed, not in the middle of the run."""
        self.show(np.zeros(shape, np.uint8))

    def show(self, plane: np.ndarray) -> None:
        if self.layer is None:
            self.layer = next((la for la in self.viewer.layers
                               if la.name == self.name and layer_io.is_preview(la)), None) or self._add(plane)
        if layer_io.in_viewer(self.viewer, self.layer):
            self.layer.data = plane

    def _add(self, plane: np.ndarray) -> Any:
        layers = self.viewer.layers
        selected, active = list(layers.selection), layers.selection.active
        colors = {None: (0, 0, 0, 0), 0: (0, 0, 0, 0), **self._colors}
        layer = self.viewer.add_labels(
            plane, name=self.name, opacity=0.5, colormap=DirectLabelColormap(color_dict=colors),
            scale=self._image_layer.scale[-2:], translate=self._image_layer.translate[-2:],
            metadata={layer_io.PREVIEW_METADATA_KEY: True})
        if layer_io.in_viewer(self.viewer, self._labels_layer):  # strokes stay visible above the preview
            layers.move(layers.index(layer), layers.index(self._labels_layer))
        layers.selection.clear()  # keep the user painting where they were
        layers.selection.update([la for la in selected if layer_io.in_viewer(self.viewer, la)])
        if active is not None and layer_io.in_viewer(self.viewer, active):
            layers.selection.active = active
        return layer


@dataclass
class TrainingRun:
    """Everything one run needs on the GUI side."""

    worker: Any  # napari GeneratorWorker driving ``job``
    job: Any  # the generator from ``training_job``
    name: str  # the name the model is published under
    preview: PreviewSettings  # shared with the worker
    preview_layer: PreviewLayer
    image_layer: Any  # for the plane shown at the viewer's current step
    progress: Any = None  # napari.utils.progress, shown in the activity dock
    error: BaseException | None = None
    stopped: bool = False
    _pending_steps: int = 0
    _last_progress: float = 0.0

    def advance_progress(self, last: bool) -> None:
        """Move the progress bar at most a few times a second: each move repaints the activity
        dock and napari runs ``processEvents`` inside it, which stalls the GUI thread."""
        self._pending_steps += 1
        now = time.monotonic()
        if last or now - self._last_progress >= PROGRESS_INTERVAL_S:
            self.progress.update(self._pending_steps)
            self._pending_steps, self._last_progress = 0, now

    def request_stop(self) -> None:
        self.stopped = True
        self.preview.stop.set()
        self.worker.quit()

    def close(self) -> None:
        """Release the progress bar and, once the worker has left it, the job (the trainer's state)."""
        if not self.worker.is_running:  # else it stops at its next yield and the job is collected
            self.job.close()
        if self.progress is not None:
            self.progress.close()


class RunHolder:
    """The active run, reachable from the widget's ``destroyed`` callback without the widget."""

    run: TrainingRun | None = None


def worker_thread_count() -> int:
    """torch threads for the training worker: one core fewer than torch's default, left to
    napari's GUI thread. On 2 cores this halved the p99 GUI stall (50 -> 26 ms) for 7.5 % slower
    training (benchmarks/ui_latency.py). Must run inside the worker: the count is per thread."""
    return max(1, torch.get_num_threads() - 1)


def drive(job: Any) -> Any:
    torch.set_num_threads(worker_thread_count())
    yield from job  # a generator function, as napari's create_worker requires


def shutdown(holder: RunHolder, *_: Any) -> None:
    """Stop a run whose widget (or viewer) is going away; wait briefly for the thread to leave."""
    run, holder.run = holder.run, None
    if run is not None:
        run.request_stop()
        wait_until(lambda: not run.worker.is_running, 5.0)
        run.close()


def report_error(error: BaseException) -> None:
    """Notify the user of a failed run."""
    if isinstance(error, (ValueError, TypeError, FloatingPointError, TrainingError)):
        notifications.show_error(f"Training failed: {error}")
    else:  # a bug rather than bad input: keep the traceback in the log
        _log.error("training failed", exc_info=error)
        notifications.show_error(f"Training failed with {type(error).__name__}: {error}")


def show_warning(warning: tuple) -> None:
    """Show napari-deepseg's warnings from the worker thread (e.g. no pretrained weights offline)."""
    message, _category, filename = warning[:3]
    if "napari_deepseg" in str(filename):
        notifications.show_warning(str(message))
