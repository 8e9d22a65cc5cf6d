"""Progress records: what the history stores, reading it back (old histories too), the scores."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest

from napari_deepseg.training import Trainer, TrainingProgress, ValidationMetrics

from ..conftest import fast_config

VALIDATION = ValidationMetrics(
    loss=0.25,
    error_rate=0.125,
    iou=(0.5, math.nan, 0.75),
    dice=(0.6, math.nan, 0.8),
    uncertain_fraction=0.3,
    changed_fraction=math.nan,
)
RECORD = TrainingProgress(
    iteration=7,
    last_iteration=100,
    loss=0.5,
    error_rate=0.25,
    learning_rate=1e-3,
    elapsed_seconds=2.5,
    samples_per_second=12.0,
    validation=VALIDATION,
    fraction_done=0.07,
    painted_pixels=(30, 40, 5),
    finished=False,
)


def test_to_dict_stores_the_model_facts_as_json():
    stored = RECORD.to_dict()
    assert stored == {
        "iteration": 7,
        "loss": 0.5,
        "error_rate": 0.25,
        "learning_rate": 1e-3,
        "elapsed_seconds": 2.5,
        "samples_per_second": 12.0,
        "validation": {
            "loss": 0.25,
            "error_rate": 0.125,
            "iou": [0.5, None, 0.75],
            "dice": [0.6, None, 0.8],
            "uncertain_fraction": 0.3,
            "changed_fraction": None,
        },
        "painted_pixels": [30, 40, 5],
    }
    assert json.loads(json.dumps(stored, allow_nan=False)) == stored


def test_from_dict_round_trips():
    stored = RECORD.to_dict()
    back = TrainingProgress.from_dict(stored)
    assert back.to_dict() == stored
    # what is not stored (about the run, not the model) reads as the defaults
    assert (back.last_iteration, math.isnan(back.fraction_done), back.finished) == (None, True, False)
    assert back.validation.iou[:1] == (0.5,) and math.isnan(back.validation.iou[1])
    assert back.validation.mean_iou == pytest.approx(0.625) and back.painted_pixels == (30, 40, 5)
    finite = replace(RECORD, last_iteration=None, fraction_done=math.nan, validation=None)
    assert replace(TrainingProgress.from_dict(finite.to_dict()), fraction_done=0.0) == replace(
        finite, fraction_done=0.0
    )  # nan != nan: compare the rest exactly


def test_from_dict_reads_an_older_history():
    old = {
        "iteration": 3,
        "loss": 0.4,
        "error_rate": 0.2,
        "learning_rate": 0.001,
        "elapsed_seconds": 1.0,
        "samples_per_second": 8.0,
        "validation": {"loss": 0.3, "error_rate": 0.1, "iou": [0.5, None], "dice": [0.6, None]},
    }
    record = TrainingProgress.from_dict(old)
    assert record.iteration == 3 and record.loss == 0.4 and record.painted_pixels == ()
    assert math.isnan(record.validation.uncertain_fraction) and math.isnan(record.validation.changed_fraction)
    assert record.validation.mean_iou == 0.5
    minimal = TrainingProgress.from_dict({"iteration": 1, "loss": None})
    assert minimal.validation is None and math.isnan(minimal.loss) and math.isnan(minimal.learning_rate)


def test_a_trained_history_reads_back_as_the_yielded_records(fluo_crop):
    image, labels = (np.tile(a, (3, 3)) for a in fluo_crop)  # big enough for held-out blocks
    config = fast_config(iterations=4, validation_fraction=0.25, validation_interval=2)
    trainer = Trainer(image, labels, config)
    yielded = list(trainer.run())
    read = [TrainingProgress.from_dict(d) for d in trainer.history]
    assert [r.to_dict() for r in read] == [r.to_dict() for r in yielded] == trainer.history
    validated = [r for r in read if r.validation is not None]
    assert [r.iteration for r in validated] == [2, 4]
    assert validated[-1].validation.mean_iou == yielded[-1].validation.mean_iou
