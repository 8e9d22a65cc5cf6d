"""Models shared between the Train and Predict widgets within one napari session.

The Train widget publishes the model it is training (no save/load round trip needed); the
Predict widget lists what has been published plus what was loaded from files.
"""

from __future__ import annotations

from qtpy.QtCore import QObject, Signal

from ..segmentation_model import SegmentationModel


class ModelStore(QObject):
    """Named models, newest last; ``changed`` fires whenever one is added, replaced or updated."""

    changed = Signal()

    def __init__(self) -> None:
        super().__init__()
        self._models: dict[str, SegmentationModel] = {}

    def publish(self, name: str, model: SegmentationModel) -> None:
        self._models.pop(name, None)
        self._models[name] = model
        self.changed.emit()

    def names(self) -> list[str]:
        return list(self._models)

    def get(self, name: str) -> SegmentationModel | None:
        return self._models.get(name)

    def latest(self) -> tuple[str, SegmentationModel] | None:
        if not self._models:
            return None
        name = next(reversed(self._models))
        return name, self._models[name]

    def clear(self) -> None:
        self._models.clear()
        self.changed.emit()


_STORE: ModelStore | None = None


def model_store() -> ModelStore:
    """The process-wide store (created on first use, after a QApplication may exist)."""
    global _STORE
    if _STORE is None:
        _STORE = ModelStore()
    return _STORE
