"""A model's training history read as records, its one CSV layout and its one smoothing.

``SegmentationModel.history`` is a list of :meth:`TrainingProgress.to_dict` dicts (that is what a
model file stores); everything that reads it goes through :func:`records`. The CLI's ``loss.csv``
and the loss plot's *Export → CSV* are both :func:`write_csv`, and the plot's smoothed curve is
:class:`Smoother`, so the three agree.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .events import TrainingProgress, ValidationMetrics

__all__ = [
    "COLUMNS",
    "SMOOTHING",
    "Smoother",
    "describe",
    "last_validation",
    "records",
    "smooth",
    "write_csv",
]

SMOOTHING = 0.9
"""Weight of the past in the exponential moving average (TensorBoard's default): the smoothed value
averages roughly the last 1 / (1 - 0.9) = 10 iterations."""

COLUMNS = (
    "iteration",
    "loss",
    "loss_smoothed",
    "error_rate",
    "error_rate_smoothed",
    "learning_rate",
    "elapsed_seconds",
    "samples_per_second",
    "val_loss",
    "val_error_rate",
    "val_mean_iou",
    "val_mean_dice",
    "val_uncertain_fraction",
    "val_changed_fraction",
)
"""Header of the history CSV, one row per iteration; ``val_*`` cells are empty where the iteration
was not validated, and every cell is empty where the value is not a finite number."""


class Smoother:
    """Debiased exponential moving average, one value at a time.

    Debiased as in Adam and TensorBoard: the average is divided by ``1 - factor**n`` so the curve
    starts on the first value instead of rising from 0. Non-finite values (a NaN loss) are
    skipped, so one of them does not blank the rest of the curve; before the first finite value
    the result is ``nan``.
    """

    def __init__(self, factor: float = SMOOTHING) -> None:
        self.factor = factor
        self._ema, self._count = 0.0, 0

    def add(self, value: float) -> float:
        """Take the next value and return the smoothed value at it."""
        if math.isfinite(value):
            self._ema = self.factor * self._ema + (1 - self.factor) * value
            self._count += 1
        return self._ema / (1 - self.factor**self._count) if self._count else math.nan


def smooth(values: Iterable[float], factor: float = SMOOTHING) -> list[float]:
    """Every value of ``values`` smoothed by one :class:`Smoother`."""
    smoother = Smoother(factor)
    return [smoother.add(v) for v in values]


def records(history: Iterable[Mapping[str, Any] | TrainingProgress]) -> list[TrainingProgress]:
    """The history as records (dicts of :meth:`TrainingProgress.to_dict`, records pass through)."""
    return [r if isinstance(r, TrainingProgress) else TrainingProgress.from_dict(r) for r in history]


def last_validation(history: Sequence[TrainingProgress]) -> ValidationMetrics | None:
    """The latest validation in ``history``, or ``None``."""
    return next((r.validation for r in reversed(history) if r.validation is not None), None)


def describe(history: Iterable[Mapping[str, Any] | TrainingProgress]) -> str:
    """How far a model was trained, for people: "300 iterations, last loss 0.123, validation mIoU
    0.81 (4% of the pixels around the held-out strokes uncertain)" (the latest validation), or
    "untrained". The held-out strokes alone read ~1.00 early; the uncertain share says more."""
    items = records(history)
    if not items:
        return "untrained"
    text = f"{items[-1].iteration} iterations"
    if math.isfinite(items[-1].loss):
        text += f", last loss {items[-1].loss:.3g}"
    validation = last_validation(items)
    if validation is not None and math.isfinite(validation.mean_iou):
        text += f", validation mIoU {validation.mean_iou:.2f}"
        if math.isfinite(validation.uncertain_fraction):
            text += (
                f" ({validation.uncertain_fraction:.0%} of the pixels around the held-out strokes uncertain)"
            )
    return text


def write_csv(path: str | Path, history: Iterable[Mapping[str, Any] | TrainingProgress]) -> Path:
    """Write the history as CSV with the header :data:`COLUMNS`; returns the path."""
    items = records(history)
    loss = smooth(r.loss for r in items)
    error_rate = smooth(r.error_rate for r in items)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        for r, loss_smoothed, error_smoothed in zip(items, loss, error_rate):
            values = [
                r.loss,
                loss_smoothed,
                r.error_rate,
                error_smoothed,
                r.learning_rate,
                r.elapsed_seconds,
                r.samples_per_second,
            ]
            v = r.validation
            values += (
                [math.nan] * 6
                if v is None
                else [v.loss, v.error_rate, v.mean_iou, v.mean_dice, v.uncertain_fraction, v.changed_fraction]
            )
            writer.writerow([r.iteration, *map(_cell, values)])
    return Path(path)


def _cell(value: float) -> Any:
    return value if math.isfinite(value) else ""
