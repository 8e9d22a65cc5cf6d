"""The optimiser, schedule, class-balancing and Dice paths as the loop takes them."""

import math

import numpy as np
import pytest
import torch

from napari_deepseg import Trainer
from napari_deepseg.training import loop
from napari_deepseg.training.setup import FINAL_LR_FACTOR

from ..conftest import fast_config


def _cosine(fraction: float) -> float:
    return FINAL_LR_FACTOR + (1 - FINAL_LR_FACTOR) * 0.5 * (1 + math.cos(math.pi * fraction))


def _pair(class_one: int = 300, class_two: int = 100):
    rng = np.random.default_rng(0)
    image = rng.random((64, 64)).astype(np.float32)
    labels = np.zeros((64, 64), np.uint8)
    labels.reshape(-1)[:class_one] = 1
    labels.reshape(-1)[-class_two:] = 2
    return image, labels


@pytest.fixture
def optimizers(monkeypatch):
    made = []

    def spy(*args, **kwargs):
        made.append(make(*args, **kwargs))
        return made[-1]

    make = loop.make_optimizer
    monkeypatch.setattr(loop, "make_optimizer", spy)
    return made


@pytest.mark.parametrize(
    ("name", "kind"), [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW), ("sgd", torch.optim.SGD)]
)
def test_the_configured_optimizer_trains(optimizers, fluo_crop, name, kind):
    image, labels = fluo_crop
    config = fast_config(optimizer=name, iterations=2, learning_rate=0.01, weight_decay=3e-4)
    records = list(Trainer(image, labels, config).run())
    (optimizer,) = optimizers
    assert type(optimizer) is kind
    group = optimizer.param_groups[0]
    assert group["weight_decay"] == 3e-4 and optimizer.state  # it has stepped
    if kind is torch.optim.SGD:
        assert group["momentum"] == 0.9 and group["nesterov"] is True
    assert records[-1].learning_rate == group["lr"]


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        # 20 iterations: a 2-step warm-up (0.1 of the run), then the factor for the share done at the step
        ("cosine", {1: 1 / 3, 2: _cosine(0.1), 10: _cosine(0.5), 20: FINAL_LR_FACTOR}),
        ("step", {1: 1 / 3, 2: 1.0, 13: 1.0, 14: 0.1, 20: 0.1}),
        ("constant", {1: 1 / 3, 2: 1.0, 20: 1.0}),
    ],
)
def test_the_learning_rate_follows_the_schedule(schedule, expected):
    image, labels = _pair()
    config = fast_config(
        iterations=20, batch_size=1, patch_size=32, learning_rate=0.01, schedule=schedule, ema_decay=0.0
    )
    rates = {r.iteration: r.learning_rate for r in Trainer(image, labels, config).run()}
    assert {i: rates[i] / 0.01 for i in expected} == pytest.approx(expected)


def test_class_balancing_weights_the_cross_entropy(monkeypatch):
    seen = []

    def spy(logits, labels, class_weights=None):
        seen.append(None if class_weights is None else class_weights.tolist())
        return ce(logits, labels, class_weights)

    ce = loop.sparse_cross_entropy
    monkeypatch.setattr(loop, "sparse_cross_entropy", spy)
    image, labels = _pair(class_one=300, class_two=100)  # inverse frequencies 4/3 and 4: 0.5 and 1.5
    list(Trainer(image, labels, fast_config(iterations=2, class_balancing=True)).run())
    assert seen == [pytest.approx([0.5, 1.5])] * 2
    seen.clear()
    list(Trainer(image, labels, fast_config(iterations=2)).run())
    assert seen == [None, None]


def test_the_dice_term_is_added_with_its_weight(monkeypatch):
    monkeypatch.setattr(loop, "sparse_cross_entropy", lambda logits, labels, _=None: logits.sum() * 0 + 1.0)
    monkeypatch.setattr(loop, "sparse_dice_loss", lambda logits, labels: logits.sum() * 0 + 0.25)
    image, labels = _pair()
    alone = dict(iterations=1, regularisation_weight=0.0)  # the CRF term would add its own share
    plain = list(Trainer(image, labels, fast_config(**alone)).run())
    dice = list(Trainer(image, labels, fast_config(**alone, loss="ce_dice", dice_weight=2.0)).run())
    assert plain[0].loss == pytest.approx(1.0) and dice[0].loss == pytest.approx(1.0 + 2.0 * 0.25)
