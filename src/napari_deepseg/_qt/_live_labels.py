"""Live strokes: what the user paints or erases in a training labels layer during a run reaches the
running trainer without a restart.

The layers' ``paint`` and ``data`` events mark a pair as changed; after a short pause in painting
(debounced) that layer alone is copied (a large one: a snapshot of its painted boxes, one banded
scan) and handed to :meth:`Trainer.update_labels`, which is thread-safe and applies it between
iterations. The user's layers are only read.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from napari.utils import notifications
from qtpy.QtCore import QObject, QTimer

from . import layers as layer_io

if TYPE_CHECKING:
    import napari

DEBOUNCE_MS = 300  # a stroke is a burst of paint events; copy once it pauses


class LiveLabels(QObject):
    """Follows the labels layers of a run's pairs (``layers[i]`` is pair ``i``).

    Changes seen before the trainer exists are handed over as soon as :meth:`set_trainer` is called.
    """

    def __init__(
        self, viewer: napari.viewer.Viewer, layers: Sequence[Any], parent: QObject | None = None
    ) -> None:
        super().__init__(parent)
        self._viewer = viewer
        self._layers = list(layers)
        self._trainer: Any = None
        self._dirty: set[int] = set()
        self._last_error = ""
        self.updates = 0  # accepted updates (tests, status)
        self._timer = QTimer(self, singleShot=True, interval=DEBOUNCE_MS, timeout=self.flush)
        self._connections: list[tuple[Any, Callable[..., None]]] = []
        for layer in {id(la): la for la in self._layers}.values():  # a layer used by two pairs: once
            pairs = [i for i, la in enumerate(self._layers) if la is layer]
            callback = self._callback(pairs)
            for emitter in (layer.events.paint, layer.events.data):
                emitter.connect(callback)
                self._connections.append((emitter, callback))

    def _callback(self, pairs: list[int]) -> Callable[..., None]:
        def changed(_event: Any = None) -> None:
            self._dirty.update(pairs)
            self._timer.start()  # restarted by every event: fires DEBOUNCE_MS after the last one

        return changed

    def set_trainer(self, trainer: Any) -> None:
        self._trainer = trainer
        if self._dirty:
            self.flush()

    def flush(self) -> None:
        """Hand every changed layer to the trainer now (when it exists)."""
        self._timer.stop()
        if self._trainer is None:
            return
        dirty, self._dirty = sorted(self._dirty), set()
        for pair in dirty:
            layer = self._layers[pair]
            if not layer_io.in_viewer(self._viewer, layer):  # deleted: the run keeps what it has
                continue
            try:
                self._trainer.update_labels(layer_io.copy_labels(layer), pair=pair)
            except (ValueError, TypeError) as err:
                self._report(layer, err)
            else:
                self.updates += 1
                self._last_error = ""

    def _report(self, layer: Any, err: Exception) -> None:
        message = (
            f"The strokes in '{layer.name}' were not learned: {err}. Training goes on with the "
            "strokes it had."
        )
        if message != self._last_error:  # not once per brush stroke
            notifications.show_error(message)
        self._last_error = message

    def close(self) -> None:
        """Stop following the layers (end of the run); pending changes are dropped."""
        self._timer.stop()
        self._dirty.clear()
        self._trainer = None
        for emitter, callback in self._connections:
            emitter.disconnect(callback)
        self._connections.clear()
