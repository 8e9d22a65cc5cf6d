"""Progress records yielded by the training loop, one per iteration."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
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
        out = asdict(self)
        for transient in ("last_iteration", "fraction_done", "finished"):
            del out[transient]
        if self.validation is not None:
            out["validation"] = {k: _json_number(v) for k, v in asdict(self.validation).items()}
        return {k: _json_number(v) for k, v in out.items()}


def _json_number(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (tuple, list)):
        return [_json_number(v) for v in value]
    return value
