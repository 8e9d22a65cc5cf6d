import math

import numpy as np
import pytest
import torch

from napari_deepseg import Trainer, TrainingProgress, available_architectures
from napari_deepseg.models import build_model
from napari_deepseg.training.losses import sparse_cross_entropy, sparse_dice_loss

from ..conftest import fast_config


def _train(trainer: Trainer) -> list[TrainingProgress]:
    return list(trainer.run())


@pytest.mark.parametrize("architecture", available_architectures())
def test_overfits_a_real_crop(architecture, fluo_crop):
    image, labels = fluo_crop
    if architecture == "fcn8s":
        # FCN-8s scores a 1/8-resolution grid, which caps it near 93 % on these 10-px nuclei at native
        # scale; at 2x magnification (nuclei ~20 px, a common objective choice) it must overfit too.
        image, labels = (np.kron(a[:48, :48], np.ones((2, 2), a.dtype)) for a in (image, labels))
    iterations = 80 if architecture == "fcn8s" else 60  # no BatchNorm in VGG16: a lower LR, more steps
    config = fast_config(architecture=architecture, iterations=iterations, batch_size=2, precision="auto")
    trainer = Trainer(image, labels, config)
    records = _train(trainer)
    assert [r.iteration for r in records] == list(range(1, iterations + 1))
    assert np.mean([r.loss for r in records[-5:]]) < 0.5 * np.mean([r.loss for r in records[:5]])
    predicted = trainer.model.predict(image, precision="fp32")
    labelled = labels > 0
    accuracy = (predicted[labelled] == labels[labelled]).mean()
    assert accuracy >= 0.95, f"{architecture}: {accuracy:.3f} on labelled pixels"


def test_same_seed_gives_the_same_run(fluo_crop):
    image, labels = fluo_crop
    config = fast_config(iterations=4, augmentation={"flips": True, "noise_std": 0.05})
    a = [r.loss for r in _train(Trainer(image, labels, config))]
    b = [r.loss for r in _train(Trainer(image, labels, config))]
    c = [r.loss for r in _train(Trainer(image, labels, config.replace(seed=1)))]
    assert a == b
    assert a != c


def test_records_carry_progress_and_history(fluo_crop):
    image, labels = fluo_crop
    trainer = Trainer(image, labels, fast_config(iterations=3))
    records = _train(trainer)
    last = records[-1]
    assert (last.iteration, last.last_iteration, last.fraction_done) == (3, 3, 1.0)
    assert last.elapsed_seconds > 0 and last.samples_per_second > 0
    assert 0 <= last.error_rate <= 1 and last.learning_rate > 0
    assert [h["iteration"] for h in trainer.history] == [1, 2, 3]


def test_closing_the_generator_stops_at_once_and_keeps_the_last_iteration(fluo_crop):
    image, labels = fluo_crop
    trainer = Trainer(image, labels, fast_config(iterations=50))
    run = trainer.run()
    next(run)
    record = next(run)
    weights = {k: v.clone() for k, v in trainer.model.module.state_dict().items()}
    run.close()
    assert record.iteration == 2 and trainer.model.iterations_trained == 2
    after = trainer.model.module.state_dict()
    assert all(torch.equal(weights[k], after[k]) for k in weights)
    assert not trainer.model.module.training


def test_continue_training_extends_the_history(fluo_crop, tmp_path):
    image, labels = fluo_crop
    first = Trainer(image, labels, fast_config(iterations=3))
    _train(first)
    path = first.model.save(tmp_path / "m.safetensors")
    from napari_deepseg import SegmentationModel

    loaded = SegmentationModel.load(path)
    second = Trainer(image, labels, fast_config(iterations=2), model=loaded)
    records = _train(second)
    assert [r.iteration for r in records] == [4, 5]
    assert [h["iteration"] for h in second.model.history] == [1, 2, 3, 4, 5]
    with pytest.raises(ValueError, match="class 3 but the model knows 2"):
        Trainer(image, np.where(labels == 2, 3, labels).astype(np.uint8), fast_config(), model=loaded)


def test_validation_metrics_are_reported(fluo_crop):
    image, labels = fluo_crop
    big_image = np.tile(image, (3, 3))
    big_labels = np.tile(labels, (3, 3))
    trainer = Trainer(
        big_image, big_labels, fast_config(iterations=4, validation_fraction=0.25, validation_interval=2)
    )
    records = _train(trainer)
    assert trainer.validation_pixels > 0
    validated = [r for r in records if r.validation is not None]
    assert [r.iteration for r in validated] == [2, 4]
    v = validated[-1].validation
    assert len(v.iou) == 2 and all(0 <= x <= 1 for x in v.iou if not math.isnan(x))
    assert 0 <= v.error_rate <= 1 and v.loss > 0


def test_unlabelled_pixels_do_not_change_the_loss():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 16, 16, requires_grad=True)
    labels = torch.zeros(2, 16, 16, dtype=torch.int64)
    labels[:, 2:5, 3:9] = 1
    labels[:, 10:12, 10:14] = 3
    changed = logits.detach().clone()
    changed[(labels == 0)[:, None].expand_as(changed)] = 100.0
    for loss_fn in (sparse_cross_entropy, sparse_dice_loss):
        assert torch.equal(loss_fn(logits, labels), loss_fn(changed, labels))
    loss = sparse_cross_entropy(logits, labels)
    loss.backward()
    assert torch.all(logits.grad[(labels == 0)[:, None].expand_as(logits)] == 0)
    assert float(sparse_cross_entropy(logits.detach(), torch.zeros_like(labels))) == 0.0


@pytest.mark.parametrize("architecture", ["unet", "fcn8s"])
def test_image_far_from_labels_has_no_influence(architecture):
    # Eval-mode networks only: in train mode BatchNorm statistics mix all pixels, and DeepLabv3+'s
    # image pooling sees every pixel by design, so there is no "outside the receptive field" for it.
    torch.manual_seed(0)
    net = build_model(architecture, num_classes=2, in_channels=1).eval()
    image = torch.randn(1, 1, 64, 1024)
    labels = torch.zeros(1, 64, 1024, dtype=torch.int64)
    labels[0, 20:40, 10:40] = 1
    labels[0, 5:10, 10:40] = 2
    changed = image.clone()
    changed[..., 700:] = torch.randn(1, 1, 64, 324) * 5

    def loss_and_grad(x):
        net.zero_grad()
        loss = sparse_cross_entropy(net(x), labels)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in net.parameters() if p.grad is not None]

    loss_a, grads_a = loss_and_grad(image)
    loss_b, grads_b = loss_and_grad(changed)
    assert torch.allclose(loss_a, loss_b, atol=1e-6)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(grads_a, grads_b))


def test_crf_loss_prefers_predictions_that_follow_the_image():
    from napari_deepseg.training.losses import crf_loss

    image = torch.zeros(1, 1, 32, 32)
    image[..., 16:] = 2.0  # a vertical edge
    follows = torch.zeros(1, 2, 32, 32)
    follows[:, 0, :, :16], follows[:, 1, :, 16:] = 8.0, 8.0
    crosses = torch.zeros(1, 2, 32, 32)
    crosses[:, 0, :16], crosses[:, 1, 16:] = 8.0, 8.0  # a horizontal split, across the edge
    assert crf_loss(follows, image) < 0.01 < crf_loss(crosses, image)
    logits = crosses.clone().requires_grad_(True)
    crf_loss(logits, image).backward()
    assert logits.grad.abs().sum() > 0


def test_the_regularised_loss_trains(fluo_crop):
    image, labels = fluo_crop
    records = list(Trainer(image, labels, fast_config(iterations=4, regularisation_weight=1.0)).run())
    assert all(math.isfinite(r.loss) for r in records)
