"""The losses and scores against examples worked out by hand."""

import math

import pytest
import torch

from napari_deepseg.training.losses import (
    class_balancing_weights,
    confusion_matrix,
    iou_and_dice,
    labelled_error_rate,
    sparse_cross_entropy,
    sparse_dice_loss,
)

LN3 = math.log(3.0)


def _three_pixels():
    """Logits (1, 2, 1, 3): pixel A (class 1) has probabilities (0.25, 0.75), pixel B (class 2)
    (0.5, 0.5), pixel C is unlabelled with extreme logits that must not count."""
    logits = torch.tensor([[0.0, 0.0, 50.0], [LN3, 0.0, -50.0]]).reshape(1, 2, 1, 3)
    labels = torch.tensor([[1, 2, 0]]).reshape(1, 1, 3)
    return logits, labels


def test_dice_loss_by_hand():
    logits, labels = _three_pixels()
    # class 1: intersection 0.25, probabilities 0.75, one pixel; class 2: 0.5, 1.25, one pixel
    assert float(sparse_dice_loss(logits, labels, eps=0.0)) == pytest.approx(
        1 - (2 * 0.25 / 1.75 + 2 * 0.5 / 2.25) / 2
    )
    assert float(sparse_dice_loss(logits, labels)) == pytest.approx(1 - (1.5 / 2.75 + 2.0 / 3.25) / 2)


def test_dice_loss_is_zero_for_a_perfect_answer_and_without_labels():
    logits = torch.tensor([[60.0, -60.0], [-60.0, 60.0]]).reshape(1, 2, 1, 2)
    assert float(sparse_dice_loss(logits, torch.tensor([[[1, 2]]]), eps=0.0)) == pytest.approx(0.0, abs=1e-6)
    empty = sparse_dice_loss(logits.requires_grad_(), torch.zeros(1, 1, 2, dtype=torch.int64))
    assert float(empty.detach()) == 0.0 and empty.requires_grad


def test_cross_entropy_by_hand_with_and_without_class_weights():
    logits, labels = _three_pixels()
    a, b = -math.log(0.25), -math.log(0.5)
    assert float(sparse_cross_entropy(logits, labels)) == pytest.approx((a + b) / 2)
    weighted = sparse_cross_entropy(logits, labels, torch.tensor([2.0, 1.0]))
    assert float(weighted) == pytest.approx((2 * a + b) / 3)


def test_error_rate_counts_labelled_pixels_only():
    logits, labels = _three_pixels()  # A predicted class 2 (wrong); B a tie, argmax class 1 (wrong)
    assert labelled_error_rate(logits, labels) == 1.0
    assert labelled_error_rate(logits, torch.tensor([[[2, 0, 0]]])) == 0.0
    assert math.isnan(labelled_error_rate(logits, torch.zeros(1, 1, 3, dtype=torch.int64)))


def test_class_balancing_weights_by_hand():
    labels = [torch.tensor([[1, 1, 0], [2, 0, 0]]), torch.tensor([[1, 0, 0]])]
    # counts 3, 1, 0 of 4: inverse frequencies 4/3 and 4, mean 8/3 -> 0.5 and 1.5; absent class 0
    assert class_balancing_weights(labels, 3).tolist() == pytest.approx([0.5, 1.5, 0.0])
    assert class_balancing_weights([torch.tensor([1, 2, 2, 1])], 2).tolist() == pytest.approx([1.0, 1.0])


def test_confusion_matrix_and_scores_by_hand():
    labels = torch.tensor([[1, 1, 2], [2, 0, 3]])
    predicted = torch.tensor([[0, 1, 1], [2, 2, 0]])  # the unlabelled pixel's guess must not count
    confusion = confusion_matrix(labels, predicted, 4)
    assert confusion.tolist() == [[1, 1, 0, 0], [0, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
    iou, dice = iou_and_dice(confusion)
    # tp (1, 1, 0, 0), fp (1, 1, 1, 0), fn (1, 1, 1, 0); class 4 neither painted nor predicted
    assert iou[:3] == pytest.approx((1 / 3, 1 / 3, 0.0)) and math.isnan(iou[3])
    assert dice[:3] == pytest.approx((0.5, 0.5, 0.0)) and math.isnan(dice[3])


def test_a_perfect_prediction_scores_one():
    labels = torch.tensor([1, 2, 2, 3])
    iou, dice = iou_and_dice(confusion_matrix(labels, labels - 1, 3))
    assert iou == (1.0, 1.0, 1.0) and dice == (1.0, 1.0, 1.0)
