"""The live preview's worker side (Qt-free): when it runs, what it predicts, what it reports."""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_deepseg import Trainer, TrainingConfig, apply_threshold, uncertainty
from napari_deepseg._qt import _preview_job
from napari_deepseg._qt._preview_job import PlanePreviewer, PreviewSchedule, PreviewSettings, clip_region
from napari_deepseg._qt.layers import ImageCopy
from napari_deepseg.sample_data import load_fluorescence_sample

TILES = dict(tile_size=128, overlap=32, batch_size=1)  # what the previewer uses for tile_size=128


@pytest.fixture(scope="module")
def model():
    image, strokes = load_fluorescence_sample()
    config = TrainingConfig(
        pretrained=False,
        iterations=1,
        patch_size=64,
        batch_size=1,
        validation_fraction=0.0,
        precision="fp32",
        device="cpu",
    )
    return Trainer(image, strokes, config).model  # untrained is enough: only shapes and places matter


def test_schedule_keeps_previews_under_the_budget(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(_preview_job.time, "monotonic", lambda: now[0])
    schedule = PreviewSchedule(interval=5, seconds=2.0)
    assert not schedule.due(4) and schedule.due(5)  # by iterations ...
    now[0] += 2.0
    assert schedule.due(1)  # ... or by time, whichever comes first
    # A preview of 1 s after steps of 0.01 s: at least 10 s (and 1000 steps) of training before the next.
    schedule.done(steps=5, cost=1.0, seconds_per_step=0.01)
    now[0] += 9.9
    assert not schedule.due(5 + 999)
    now[0] += 0.2
    assert schedule.due(6)
    schedule.done(steps=6, cost=0.001, seconds_per_step=0.01)  # cheap: the interval and seconds rule
    assert not schedule.due(10) and schedule.due(11)


def test_clip_region():
    assert clip_region(None, (10, 20)) == (0, 10, 0, 20)
    assert clip_region((-5, 4, 15, 30), (10, 20)) == (0, 4, 15, 20)
    assert clip_region((12, 15, 0, 5), (10, 20)) == (0, 10, 0, 20)  # off the plane: all of it


def test_region_stability_and_planes(model):
    image, _ = load_fluorescence_sample()
    stack = np.stack([image[:160, :160], image[::-1, :160][:160]])
    settings = PreviewSettings(ImageCopy(stack, False, None), tile_size=128)
    previewer = PlanePreviewer(settings)

    settings.index, settings.region = (1,), (10, 90, 20, 120)
    first = previewer(model)
    assert first.index == (1,) and first.region == (10, 90, 20, 120) and math.isnan(first.changed_fraction)
    inside = first.labels[10:90, 20:120]
    assert inside.min() >= 1 and first.labels.sum() == inside.sum()  # nothing outside the region
    # With context around the box, normalised by the whole stack as in training.
    stack_bounds = model.normalisation.for_image(model.view(stack).data)
    box = model.predict_compact(stack[1], region=(10, 90, 20, 120), image_normalisation=stack_bounds, **TILES)
    np.testing.assert_array_equal(inside, apply_threshold(box, 0.0))
    np.testing.assert_array_equal(first.uncertainty[10:90, 20:120], uncertainty(box))
    assert first.uncertain_fraction == pytest.approx(np.mean(first.uncertainty[10:90, 20:120] > 0.5))

    again = previewer(model)  # the same region again: compared
    assert again.changed_fraction == 0.0 and again.stability == 1.0  # same weights, same classes
    assert not np.shares_memory(again.labels, first.labels)  # each preview its own copy
    assert not np.shares_memory(again.uncertainty, first.uncertainty)
    settings.region = (50, 150, 20, 120)  # panned down: not compared (other context), the rest kept
    second = previewer(model)
    assert math.isnan(second.changed_fraction)
    np.testing.assert_array_equal(second.labels[10:50], first.labels[10:50])
    assert second.labels[150:].sum() == 0 and second.labels[50:150, 20:120].min() >= 1

    settings.index, settings.region = (0,), None  # another slice: fresh buffers, all of it
    third = previewer(model)
    assert third.region == (0, 160, 0, 160) and math.isnan(third.changed_fraction)
    expected = apply_threshold(model.predict_compact(stack[0], **TILES), 0.0)
    np.testing.assert_array_equal(third.labels, expected)

    settings.stop.set()  # Stop pressed during a preview: no preview, no error
    assert previewer(model) is None
