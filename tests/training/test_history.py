"""The history CSV, the one smoothing, and the text that describes how far a model was trained."""

from __future__ import annotations

import csv
import math

import pytest

from napari_deepseg.training import TrainingProgress, ValidationMetrics
from napari_deepseg.training.history import COLUMNS, SMOOTHING, Smoother, describe, records, smooth, write_csv


def record(i: int, loss: float, *, validation: ValidationMetrics | None = None) -> TrainingProgress:
    return TrainingProgress(
        iteration=i,
        last_iteration=None,
        loss=loss,
        error_rate=loss / 10,
        learning_rate=1e-3,
        elapsed_seconds=0.5 * i,
        samples_per_second=8.0,
        validation=validation,
    )


def test_smoothing_is_a_debiased_ema_that_skips_nan():
    assert SMOOTHING == 0.9
    # by hand: weights 0.9^2, 0.9, 1 (normalised) once three finite values are in
    expected = [1.0, (0.9 + 2) / 1.9, (0.9 + 2) / 1.9, (0.81 + 1.8 + 3) / 2.71]
    assert smooth([1.0, 2.0, math.nan, 3.0]) == pytest.approx(expected)
    assert smooth([4.0] * 5) == pytest.approx([4.0] * 5)  # debiased: no rise from 0
    leading = smooth([math.nan, 2.0])
    assert math.isnan(leading[0]) and leading[1] == 2.0
    smoother = Smoother(0.5)
    assert [smoother.add(v) for v in (2.0, 4.0)] == pytest.approx([2.0, (0.5 * 2 + 4) / 1.5])


def test_csv_columns_and_cells(tmp_path):
    val = ValidationMetrics(
        loss=0.3, error_rate=0.05, iou=(0.5, math.nan, 0.7), dice=(0.6, math.nan, 0.8), uncertain_fraction=0.2
    )
    items = [record(1, 1.0), record(2, math.nan), record(3, 0.5, validation=val)]
    history = [items[0].to_dict(), items[1], items[2].to_dict()]  # dicts or records
    path = write_csv(tmp_path / "h.csv", history)
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert (
        tuple(rows[0])
        == COLUMNS
        == (
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
    )
    assert [r["iteration"] for r in rows] == ["1", "2", "3"]
    assert rows[1]["loss"] == "" and rows[1]["loss_smoothed"] == "1.0"  # NaN: empty cell, curve goes on
    assert float(rows[2]["loss_smoothed"]) == pytest.approx(smooth([1.0, math.nan, 0.5])[2])
    assert float(rows[2]["error_rate_smoothed"]) == pytest.approx(smooth([0.1, math.nan, 0.05])[2])
    assert [rows[0][c] for c in COLUMNS if c.startswith("val_")] == [""] * 6
    last = rows[2]
    assert (
        float(last["val_loss"]),
        float(last["val_mean_iou"]),
        float(last["val_mean_dice"]),
    ) == pytest.approx((0.3, 0.6, 0.7))
    assert float(last["val_uncertain_fraction"]) == 0.2 and last["val_changed_fraction"] == ""
    assert float(last["elapsed_seconds"]) == 1.5 and float(last["learning_rate"]) == 1e-3


def test_describe_and_records():
    assert describe([]) == "untrained"
    history = [
        {"iteration": 1, "loss": 0.5, "validation": {"iou": [0.5, None, 0.7]}},
        {"iteration": 2, "loss": 0.25, "validation": None},
    ]
    assert describe(history) == "2 iterations, last loss 0.25, validation mIoU 0.60"
    assert describe(history[1:]) == "2 iterations, last loss 0.25"
    history[0]["validation"]["uncertain_fraction"] = 0.042
    assert describe(history) == (
        "2 iterations, last loss 0.25, validation mIoU 0.60 "
        "(4% of the pixels around the held-out strokes uncertain)"
    )
    assert describe([{"iteration": 4, "loss": None}]) == "4 iterations"
    items = records(history)
    assert records(items) == items and [r.iteration for r in items] == [1, 2]
