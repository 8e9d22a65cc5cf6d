"""Time budgets, the learning-rate schedule, averaged weights and labels that change mid-run."""

import math
import threading
import time

import numpy as np
import pytest
import torch

from napari_deepseg import Trainer
from napari_deepseg.config import TrainingConfig
from napari_deepseg.training.setup import FINAL_LR_FACTOR, LearningRateSchedule, ema_update

from ..conftest import fast_config


def test_a_time_budget_ends_the_run_within_one_iteration(fluo_crop):
    image, labels = fluo_crop
    budget_s = 1.5
    # Without the CRF term: the schedule's checks need the most iterations 1.5 s can give.
    config = fast_config(iterations=None, max_minutes=budget_s / 60, regularisation_weight=0.0)
    trainer = Trainer(image, labels, config)
    start = time.perf_counter()
    records = list(trainer.run())
    took = time.perf_counter() - start
    steps = [b.elapsed_seconds - a.elapsed_seconds for a, b in zip(records, records[1:])]
    assert records[-1].finished and records[-1].fraction_done == 1.0
    assert records[-1].last_iteration is None
    assert records[-2].elapsed_seconds < budget_s <= records[-1].elapsed_seconds
    assert records[-1].elapsed_seconds <= budget_s + max(steps)  # at most one iteration late
    assert took < budget_s + 2 * max(steps) + 1.0
    fractions = [r.fraction_done for r in records]
    assert fractions == sorted(fractions) and 0 < fractions[0] < 0.5
    # The cosine schedule follows the elapsed time and ends near its final value.
    peak = 1e-3
    assert records[-1].learning_rate == pytest.approx(peak * FINAL_LR_FACTOR, rel=0.5)
    assert max(r.learning_rate for r in records) > 0.5 * peak


def test_the_first_limit_wins(fluo_crop):
    image, labels = fluo_crop
    records = list(Trainer(image, labels, fast_config(iterations=3, max_minutes=10.0)).run())
    assert [r.iteration for r in records] == [1, 2, 3] and records[-1].finished
    # Which limit comes first is unknown in advance: no promised last iteration.
    assert records[-1].fraction_done == 1.0 and records[-1].last_iteration is None


def test_schedule_reaches_its_final_value_and_until_stopped_stays_constant():
    cosine = LearningRateSchedule(TrainingConfig(iterations=None, max_minutes=1.0))
    assert cosine(0, 0.0) < 0.1  # warm-up
    assert cosine(100, 1.0) == pytest.approx(FINAL_LR_FACTOR)
    assert cosine(100, 0.5) == pytest.approx(0.51)
    forever = LearningRateSchedule(TrainingConfig(iterations=None, max_minutes=None))
    assert [forever(s, math.nan) for s in (25, 1000, 10**6)] == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="max_minutes"):
        TrainingConfig(max_minutes=0)


def test_until_stopped_runs_until_the_generator_is_closed(fluo_crop):
    image, labels = fluo_crop
    trainer = Trainer(image, labels, fast_config(iterations=None, max_minutes=None))
    run = trainer.run()
    records = [next(run) for _ in range(4)]
    run.close()
    assert all(math.isnan(r.fraction_done) and not r.finished for r in records)
    assert trainer.model.iterations_trained == 4


def test_the_model_holds_an_average_of_the_weights():
    torch.manual_seed(0)
    averaged = [torch.zeros(3), torch.zeros(2, dtype=torch.int64)]
    update = ema_update(0.5)
    update(averaged[:1], [torch.ones(3)], torch.tensor(1))  # decay min(0.5, 2/11)
    np.testing.assert_allclose(averaged[0], 9 / 11, rtol=1e-6)
    update(averaged[1:], [torch.tensor([4, 5])], torch.tensor(1))  # integer buffers are copied
    assert averaged[1].tolist() == [4, 5]


def test_prediction_uses_the_averaged_weights(fluo_crop):
    image, labels = fluo_crop
    trainer = Trainer(image, labels, fast_config(iterations=6, ema_decay=0.9))
    list(trainer.run())
    trained = dict(trainer._weights.trained.named_parameters())
    got = dict(trainer.model.module.named_parameters())
    assert trainer.model.module is not trainer._weights.trained and not trainer.model.module.training
    assert any(not torch.equal(trained[k], got[k]) for k in trained)
    plain = Trainer(image, labels, fast_config(iterations=6, ema_decay=0.0))
    assert plain.model.module is plain._weights.trained


def _strokes(shape, rows, value):
    out = np.zeros(shape, np.uint8)
    for r in rows:
        out[r, 5:60] = value
    return out


def test_strokes_added_mid_run_reach_the_sampler_before_the_next_iteration():
    rng = np.random.default_rng(0)
    image = rng.random((64, 64)).astype(np.float32)
    labels = _strokes((64, 64), [5], 1) + _strokes((64, 64), [10], 2)
    config = fast_config(iterations=None, patch_size=32, labelled_patch_fraction=1.0)
    trainer = Trainer(image, labels, config)
    run = trainer.run()
    first = next(run)
    assert first.painted_pixels == (55, 55)
    painted = labels.copy()
    painted[50, 5:60] = 2  # a new stroke far from the others
    trainer.update_labels(painted)
    assert trainer.painted_pixels == (55, 110)  # counted at once
    assert not trainer.data.sampler._labels[0][50].any()  # not yet in: the loop brings it in
    record = next(run)
    assert record.painted_pixels == (55, 110)
    sampled = np.concatenate([trainer.data.sampler.sample(8)[1].ravel() for _ in range(20)])
    assert trainer.data.sampler._labels[0][50, 5:60].tolist() == [2] * 55
    assert (sampled == 2).sum() > 0
    # Erasing works too.
    erased = painted.copy()
    erased[10] = 0
    trainer.update_labels(erased)
    record = next(run)
    assert record.painted_pixels == (55, 55)
    assert not (trainer.data.sampler._labels[0][10] > 0).any()
    run.close()
    np.testing.assert_array_equal(labels, _strokes((64, 64), [5], 1) + _strokes((64, 64), [10], 2))


def test_bad_label_updates_are_refused_and_the_run_goes_on(fluo_crop):
    image, labels = fluo_crop
    trainer = Trainer(image, labels, fast_config(iterations=None))
    run = trainer.run()
    next(run)
    with pytest.raises(ValueError, match="shape"):
        trainer.update_labels(labels[:10])
    new_class = labels.copy()
    new_class[0, 0] = 3
    with pytest.raises(ValueError, match="class 3 was not painted when training started"):
        trainer.update_labels(new_class)
    with pytest.raises(TypeError, match="integers"):
        trainer.update_labels(labels.astype(np.float32))
    with pytest.raises(ValueError, match="no painted pixel"):
        trainer.update_labels(np.zeros_like(labels))
    with pytest.raises(ValueError, match="pair"):
        trainer.update_labels(labels, pair=1)
    before = trainer.painted_pixels
    record = next(run)
    assert record.iteration == 2 and record.painted_pixels == before
    run.close()


def test_update_labels_is_thread_safe(fluo_crop):
    image, labels = fluo_crop
    trainer = Trainer(image, labels, fast_config(iterations=None, patch_size=32, batch_size=1))
    run = trainer.run()
    errors = []

    def paint() -> None:
        try:
            for i in range(30):
                new = labels.copy()
                new[i % 64, :] = 1 + i % 2
                trainer.update_labels(new)
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    thread = threading.Thread(target=paint)
    thread.start()
    for _ in range(6):
        next(run)
    thread.join()
    next(run)
    run.close()
    assert not errors
    expected = labels.copy()
    expected[29, :] = 2
    np.testing.assert_array_equal(trainer.data._pairs[0].labels[0], expected)


def test_new_strokes_go_to_validation_by_block_not_by_pixel():
    rng = np.random.default_rng(0)
    image = rng.random((256, 256)).astype(np.float32)
    labels = np.zeros((256, 256), np.uint8)
    labels[::4, :128] = 1
    labels[2::4, :128] = 2
    trainer = Trainer(image, labels, fast_config(iterations=None, validation_fraction=0.3, seed=3))
    held_before = trainer.data.validation_pixels
    more = labels.copy()
    more[::4, 128:] = 1
    more[2::4, 128:] = 2
    trainer.update_labels(more)
    trainer.data.apply_updates()
    again = Trainer(image, more, fast_config(iterations=None, validation_fraction=0.3, seed=3))
    # Updating gives exactly the split a fresh start on the same strokes gives.
    assert trainer.data.validation_pixels == again.data.validation_pixels >= held_before
    assert trainer.data.training_pixels == again.data.training_pixels


def test_validation_reports_uncertainty_and_stability(fluo_crop):
    image, labels = fluo_crop
    big, big_labels = np.tile(image, (4, 4)), np.tile(labels, (4, 4))
    trainer = Trainer(
        big, big_labels, fast_config(iterations=8, validation_fraction=0.3, validation_interval=4)
    )
    records = [r for r in trainer.run() if r.validation is not None]
    assert len(records) == 2 and trainer.validation_pixels > 0
    first, second = records[0].validation, records[1].validation
    assert math.isnan(first.changed_fraction) and 0 <= second.changed_fraction <= 1
    assert 0 <= first.uncertain_fraction <= 1 and 0 <= second.uncertain_fraction <= 1
    assert trainer.history[-1]["validation"]["uncertain_fraction"] == second.uncertain_fraction


def test_time_outside_the_loop_does_not_spend_the_budget(fluo_crop):
    image, labels = fluo_crop
    trainer = Trainer(image, labels, fast_config(iterations=None, max_minutes=1.0 / 60))
    run = trainer.run()
    first = next(run)
    time.sleep(1.2)  # a paused widget, or a preview being computed
    second = next(run)
    assert second.elapsed_seconds - first.elapsed_seconds < 1.0 and not second.finished
    run.close()


def test_the_model_says_while_it_is_being_trained(fluo_crop):
    image, labels = fluo_crop
    trainer = Trainer(image, labels, fast_config(iterations=2))
    assert not trainer.model.training_in_progress
    run = trainer.run()
    next(run)
    assert trainer.model.training_in_progress  # the Predict widget then predicts from a copy
    list(run)
    assert not trainer.model.training_in_progress


def test_partial_configs_get_todays_defaults():
    config = TrainingConfig.from_dict({"iterations": 100})
    assert config.normalisation == "per_image" and config.ema_decay == 0.99
