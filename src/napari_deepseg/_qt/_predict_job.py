"""What the Predict widget runs in its worker, and how it describes a model; no Qt here."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..prediction import CompactProbabilities
from ..segmentation_model import SegmentationModel


def predict_image(model: SegmentationModel, data: Any, channel_axis: int | None, with_probabilities: bool,
                  progress: Any, should_stop: Any) -> tuple[CompactProbabilities, np.ndarray | None]:
    """The compact result (and the float probabilities when asked for) of one image."""
    options = dict(channel_axis=channel_axis, progress=progress, should_stop=should_stop)
    if with_probabilities:
        probabilities = model.predict_proba(data, **options)
        return CompactProbabilities.from_probabilities(probabilities), probabilities
    return model.predict_compact(data, **options), None


def model_text(model: SegmentationModel) -> str:
    """Architecture, classes, channels and how far it was trained, for the widget's info label."""
    classes = ", ".join(f"{k} {name}" for k, name in enumerate(model.class_names, start=1))
    last = model.history[-1] if model.history else {}
    training = f"{model.iterations_trained} iterations" if last else "not trained yet"
    if last.get("loss") is not None:
        training += f", last loss {last['loss']:.3g}"
    validation = next((r["validation"] for r in reversed(model.history) if r.get("validation")), {})
    ious = [v for v in validation.get("iou") or [] if v is not None and math.isfinite(v)]
    if ious:  # the history stores per-class IoU (None for a class without held-out pixels)
        training += f", validation mIoU {sum(ious) / len(ious):.2f}"
    return (f"Architecture: {model.architecture} (encoder {model.encoder})\nClasses: {classes}\n"
            f"Input channels: {model.in_channels}\nTraining: {training}")
