"""npe2 reader for model files: dropping one on napari makes it available in the Predict widget.

Only files whose safetensors metadata says ``format: napari-deepseg`` are claimed; napari hands
any other ``.safetensors`` file to the next reader. A model adds no layer: it goes into the
session's model store (name = file name), where every Predict widget lists and selects it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..model_file import ModelFileError, read_metadata

# napari's sentinel for "read successfully, nothing to add as a layer".
NO_LAYER: list[tuple[None]] = [(None,)]


def get_model_reader(path: str | list[str]) -> Callable[[str], list[tuple[Any, ...]]] | None:
    """The reader for a napari-deepseg model file, or None for anything else (napari tries other readers)."""
    if not isinstance(path, (str, Path)):
        return None
    try:
        read_metadata(path)
    except (ModelFileError, OSError):
        return None
    return read_model_file


def read_model_file(path: str | list[str]) -> list[tuple[Any, ...]]:
    """Load the model into the model store under its file name; adds no layer."""
    from napari.utils.notifications import show_info

    from ..segmentation_model import SegmentationModel
    from ._session import model_store

    path = Path(path[0] if isinstance(path, list) else path)
    model = SegmentationModel.load(path)  # a damaged file raises ModelFileError naming it
    model_store().publish(path.name, model)
    show_info(
        f"Loaded model {path.name!r} ({model.summary()}); it is selected in the Predict widget "
        "(Plugins > DeepSeg > Predict)."
    )
    return NO_LAYER
