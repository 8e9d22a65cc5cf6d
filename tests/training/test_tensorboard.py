"""TensorBoardLogger: the event file read back holds the progress records' numbers and previews."""

import io
import math
import sys

import numpy as np
import pytest

from napari_deepseg import Trainer
from napari_deepseg.training.tensorboard import (
    PALETTE,
    TensorBoardLogger,
    class_colours,
    display_image,
    new_run_folder,
)

from ..conftest import fast_config

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def read_events(folder):
    events = EventAccumulator(str(folder))
    events.Reload()
    return events


@pytest.fixture(scope="module")
def logged_run(fluo_crop, tmp_path_factory):
    image, labels = (np.tile(a, (3, 3)) for a in fluo_crop)  # 192 px: big enough for held-out blocks
    config = fast_config(iterations=4, validation_fraction=0.25, validation_interval=2)
    trainer = Trainer(image, labels, config, class_names=["background", "nucleus"])
    folder = tmp_path_factory.mktemp("runs") / "cells"
    with TensorBoardLogger(folder, preview_every=3, preview_image=image, preview_size=64) as logger:
        records = list(logger.follow(trainer.run(), trainer))
    return records, read_events(folder)


def scalars(events, tag):
    return [e.step for e in events.Scalars(tag)], [e.value for e in events.Scalars(tag)]


def test_the_training_scalars_are_the_records_numbers_by_iteration(logged_run):
    records, events = logged_run
    for tag, field in [
        ("train/loss", "loss"),
        ("train/error_rate", "error_rate"),
        ("train/learning_rate", "learning_rate"),
        ("train/samples_per_second", "samples_per_second"),
    ]:
        steps, values = scalars(events, tag)
        assert steps == [1, 2, 3, 4]
        assert values == pytest.approx([getattr(r, field) for r in records], rel=1e-6)  # stored as float32


def test_validation_scalars_per_class_name_at_the_validated_iterations(logged_run):
    records, events = logged_run
    validated = [r for r in records if r.validation is not None]
    assert [r.iteration for r in validated] == [2, 4]
    for tag, value in [
        ("validation/loss", lambda v: v.loss),
        ("validation/error_rate", lambda v: v.error_rate),
        ("validation/mean_iou", lambda v: v.mean_iou),
        ("validation/mean_dice", lambda v: v.mean_dice),
        ("validation/iou/background", lambda v: v.iou[0]),
        ("validation/iou/nucleus", lambda v: v.iou[1]),
        ("validation/dice/nucleus", lambda v: v.dice[1]),
        ("validation/uncertain_fraction", lambda v: v.uncertain_fraction),
    ]:
        steps, values = scalars(events, tag)
        assert steps == [2, 4], tag
        assert values == pytest.approx([value(r.validation) for r in validated], rel=1e-6), tag
    # nan the first time (nothing to compare with): left out, not written as nan
    assert math.isnan(validated[0].validation.changed_fraction)
    steps, values = scalars(events, "validation/changed_fraction")
    assert steps == [4] and values == pytest.approx([validated[1].validation.changed_fraction], rel=1e-6)


def test_previews_every_n_iterations_and_at_the_end(logged_run):
    imageio = pytest.importorskip("imageio.v3")
    _, events = logged_run
    tags = events.Tags()["images"]
    assert set(tags) == {"preview/image", "preview/prediction", "preview/uncertainty"}
    assert [e.step for e in events.Images("preview/prediction")] == [3, 4]  # every 3 and the last one
    assert [e.step for e in events.Images("preview/image")] == [3]  # the fixed crop, once
    prediction = imageio.imread(io.BytesIO(events.Images("preview/prediction")[-1].encoded_image_string))
    assert prediction.shape == (64, 64, 3)
    colours = {tuple(c) for c in prediction.reshape(-1, 3)}
    assert colours <= {tuple(c) for c in PALETTE[:2]}  # two classes, in their colours
    steps, fractions = scalars(events, "preview/uncertain_fraction")
    assert steps == [3, 4] and all(0.0 <= f <= 1.0 for f in fractions)


def test_nothing_is_written_before_the_first_record(tmp_path):
    TensorBoardLogger(tmp_path / "run").close()
    assert not (tmp_path / "run").exists()


def test_a_missing_tensorboard_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import now fails
    with pytest.raises(ImportError, match=r'pip install "napari-deepseg\[tensorboard\]"'):
        TensorBoardLogger(tmp_path)


def test_class_colours_and_display_scaling():
    classes = np.array([[0, 1], [2, 11]])
    colours = class_colours(classes)
    assert colours.dtype == np.uint8 and colours.shape == (2, 2, 3)
    assert colours[0, 0].tolist() == [0, 0, 0] and colours[0, 1].tolist() == PALETTE[0].tolist()
    assert colours[1, 0].tolist() == PALETTE[1].tolist() and colours[1, 1].tolist() == PALETTE[0].tolist()
    grey = display_image(np.linspace(0, 1000, 100, dtype=np.float32).reshape(1, 10, 10))
    assert (
        grey.shape == (10, 10, 3) and grey[0, 0].tolist() == [0, 0, 0] and grey[-1, -1].tolist() == [255] * 3
    )
    assert (grey[..., 0] == grey[..., 2]).all()
    rgb = display_image(np.stack([np.zeros((4, 4)), np.full((4, 4), 5.0), np.arange(16.0).reshape(4, 4)]))
    assert rgb[..., 0].max() == 0 and rgb[-1, -1, 2] == 255


def test_bad_preview_settings_are_refused(tmp_path):
    with pytest.raises(ValueError, match="preview_every"):
        TensorBoardLogger(tmp_path, preview_every=-1)


def test_each_run_gets_its_own_folder(tmp_path):
    first = new_run_folder(tmp_path)
    assert first.parent == tmp_path and first.name.startswith("run-") and not first.exists()
    first.mkdir()
    second = new_run_folder(tmp_path)
    assert second != first and not second.exists()
