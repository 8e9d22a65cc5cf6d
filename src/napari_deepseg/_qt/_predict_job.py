"""What the Predict widget runs in its worker, and the texts it shows; no Qt here."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import DeviceOutOfMemoryError
from ..prediction import CompactProbabilities
from ..segmentation_model import SegmentationModel
from ..training.history import describe
from . import _large_labels
from ._large_labels import LargeLabels


def predict_image(
    model: SegmentationModel,
    data: Any,
    channel_axis: int | None,
    with_probabilities: bool,
    progress: Any,
    should_stop: Any,
    mirroring: bool = False,
) -> tuple[CompactProbabilities | None, np.ndarray | LargeLabels | None]:
    """The compact result (and the float probabilities when asked for) of one image; above
    ``LARGE_PIXELS`` no compact result in memory but the :class:`LargeLabels` on disk (no
    probabilities then). ``mirroring``: ``PredictionOptions.mirroring``."""
    if _large_labels.is_large(model, data, channel_axis):
        return None, _large_labels.predict_to_zarr(
            model, data, channel_axis, progress, should_stop, mirroring=mirroring
        )
    options = dict(channel_axis=channel_axis, progress=progress, should_stop=should_stop, mirroring=mirroring)
    if with_probabilities:
        probabilities = model.predict_proba(data, **options)
        return CompactProbabilities.from_probabilities(probabilities), probabilities
    return model.predict_compact(data, **options), None


def model_text(model: SegmentationModel | None) -> str:
    """Architecture, classes, channels and how far it was trained, for the widget's info label."""
    if model is None:
        return "No model: train one in the Train widget or load a model file."
    classes = ", ".join(f"{k} {name}" for k, name in enumerate(model.class_names, start=1))
    return (
        f"Architecture: {model.architecture} (encoder {model.encoder})\nClasses: {classes}\n"
        f"Input channels: {model.in_channels}\nTraining: {describe(model.history)}"
    )


def result_text(image: str, result: str, hidden_preview: str | None, large: Any = None) -> str:
    """The status line after a prediction of layer ``image`` into layer ``result``; ``large``: the
    :class:`LargeLabels` of an image predicted to disk."""
    text = f"Segmented '{image}' into '{result}'."
    if isinstance(large, LargeLabels):
        text += (
            f" The image is too large to hold in memory: its result is on disk in {large.path}, "
            "thresholded chunk by chunk as you view it (the slider re-thresholds what is shown), "
            "without per-class probabilities or uncertainty. The layer is read-only: "
            + (
                "'Editable copy' copies it into an editable Labels layer in memory."
                if large.size <= _large_labels.EDITABLE_PIXELS
                else "it is too large to copy into memory; predict a crop or a coarser level to edit it."
            )
            + " The store is deleted when a new result replaces it, its layer is deleted, or napari exits."
        )
    if hidden_preview:
        text += f" Hid the training preview '{hidden_preview}' (its eye in the layer list shows it again)."
    return text


def error_text(error: BaseException) -> str | None:
    """What to tell the user about a failed prediction; ``None`` for an unexpected error (a bug)."""
    if isinstance(error, DeviceOutOfMemoryError):  # tiles already halved once: its message says what next
        text = str(error)
        return f"Not enough memory to predict this image: {text[:1].lower() + text[1:]}"
    if isinstance(error, MemoryError) or "out of memory" in str(error).lower():  # torch OOM too
        return (
            f"Not enough memory to predict this image ({error}). Close other programs, turn off "
            "per-class probabilities, or predict a smaller image or crop."
        )
    if isinstance(error, (ValueError, TypeError)):
        return (
            f"Cannot predict: {error}. Pick an image like the ones the model was trained on or a "
            "model trained on images like this one."
        )
    return None


class TileCount:
    """Tiles predicted so far, written by the worker thread (``count(done, total)``), read by a timer."""

    def __init__(self) -> None:
        self.done = self.total = 0

    def __call__(self, done: int, total: int) -> None:
        self.done, self.total = done, total

    def reset(self) -> None:
        self.done = self.total = 0
