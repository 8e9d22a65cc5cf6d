"""Progress records yielded by the training loop, one per iteration."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass(frozen=True)
class ValidationMetrics:
    """Scores of the model you get (the averaged weights) on the held-out blocks.

    ``loss``, ``error_rate``, ``iou`` and ``dice`` are measured on the held-out strokes (per-class
    tuples ordered class 1..K; ``nan`` for a class with no held-out pixel and no prediction).
    Strokes are painted where the answer is clear, so these saturate early. Two numbers look at
    every pixel around the held-out strokes, painted or not: ``uncertain_fraction``, the share whose
    :func:`napari_deepseg.uncertainty` exceeds 0.5, and ``changed_fraction``, the share whose
    predicted class changed since the previous validation (``nan`` the first time). Both falling
    to near 0 means more training will not change the result; a high uncertain share says more
    strokes are needed. Both are counted over the validation crops (patch-sized crops around
    the held-out strokes).
    """

    loss: float
    error_rate: float
    iou: tuple[float, ...]
    dice: tuple[float, ...]
    uncertain_fraction: float = math.nan
    changed_fraction: float = math.nan

    @property
    def mean_iou(self) -> float:
        values = [v for v in self.iou if not math.isnan(v)]
        return sum(values) / len(values) if values else math.nan

    @property
    def mean_dice(self) -> float:
        values = [v for v in self.dice if not math.isnan(v)]
        return sum(values) / len(values) if values else math.nan

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly (NaN becomes ``None``) record; the means are not stored, they follow."""
        return {k: _json_number(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ValidationMetrics:
        """The record of :meth:`to_dict`; missing numbers (older histories) read as ``nan``."""
        return cls(
            loss=_number(data.get("loss")),
            error_rate=_number(data.get("error_rate")),
            iou=_numbers(data.get("iou")),
            dice=_numbers(data.get("dice")),
            uncertain_fraction=_number(data.get("uncertain_fraction")),
            changed_fraction=_number(data.get("changed_fraction")),
        )


@dataclass(frozen=True)
class TrainingProgress:
    """State after one finished iteration.

    ``iteration`` counts from 1 and keeps counting when training continues from a saved model;
    ``error_rate`` is the share of labelled pixels in the batch that were misclassified.
    ``last_iteration`` is the iteration the run ends at when an iteration count decides it,
    else ``None``; ``fraction_done`` (0..1) is the share of whichever limit applies (``nan``
    for a run that goes on until it is stopped). ``painted_pixels``: labelled pixels per class
    1..K at this iteration (they change when the user paints during the run). ``finished``:
    the run reached its own limit with this iteration.
    """

    iteration: int
    last_iteration: int | None
    loss: float
    error_rate: float
    learning_rate: float
    elapsed_seconds: float
    samples_per_second: float
    validation: ValidationMetrics | None = None
    fraction_done: float = math.nan
    painted_pixels: tuple[int, ...] = ()
    finished: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly (NaN becomes ``None``) record for the model's training history."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _TRANSIENT}
        out["validation"] = None if self.validation is None else self.validation.to_dict()
        return {k: _json_number(v) for k, v in out.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainingProgress:
        """The record of :meth:`to_dict` (``TrainingProgress.from_dict(r.to_dict()).to_dict() ==
        r.to_dict()``). What the history does not store reads as its default: ``last_iteration``
        ``None``, ``fraction_done`` ``nan``, ``finished`` ``False``; so do fields an older history
        lacks (numbers ``nan``, ``painted_pixels`` empty)."""
        validation = data.get("validation")
        return cls(
            iteration=int(data["iteration"]),
            last_iteration=None,
            loss=_number(data.get("loss")),
            error_rate=_number(data.get("error_rate")),
            learning_rate=_number(data.get("learning_rate")),
            elapsed_seconds=_number(data.get("elapsed_seconds")),
            samples_per_second=_number(data.get("samples_per_second")),
            validation=None if validation is None else ValidationMetrics.from_dict(validation),
            painted_pixels=tuple(int(n) for n in data.get("painted_pixels") or ()),
        )


_TRANSIENT = ("last_iteration", "fraction_done", "finished")  # about the run, not the model: not stored


def _number(value: Any) -> float:
    return math.nan if value is None else float(value)


def _numbers(values: Any) -> tuple[float, ...]:
    return tuple(_number(v) for v in values or ())


def _json_number(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (tuple, list)):
        return [_json_number(v) for v in value]
    return value
