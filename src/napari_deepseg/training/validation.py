"""Scores of the model on the held-out labelled pixels, and how much its answer moved since the
last look."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from .._device import autocast, eval_mode
from .events import ValidationMetrics
from .losses import confusion_matrix, iou_and_dice, sparse_cross_entropy

# The data version a list of per-crop predicted classes was made at.
Predictions = tuple[int, list[torch.Tensor]]


def validation_metrics(
    module: torch.nn.Module,
    crops: Sequence[tuple[np.ndarray, np.ndarray]],
    num_classes: int,
    dtype: torch.dtype,
    *,
    version: int,
    previous: Predictions | None,
) -> tuple[ValidationMetrics, Predictions]:
    """Loss, error rate and per-class IoU/Dice of ``module`` on the (image, labels) ``crops``, and
    its predictions, which the next call (as ``previous``) compares with when ``version`` (the
    labels' version) is the same."""
    device = next(module.parameters()).device
    k = num_classes
    confusion = torch.zeros(k, k, dtype=torch.int64)  # rows: truth, columns: prediction
    losses: list[tuple[float, int]] = []
    predictions, uncertain, pixels = [], 0, 0
    with eval_mode(module), torch.inference_mode():
        for image, labels in crops:
            x = torch.from_numpy(image)[None].to(device)
            y = torch.from_numpy(labels)[None].to(device)
            with autocast(device, dtype):
                logits = module(x)
            losses.append((float(sparse_cross_entropy(logits, y)), int((y > 0).sum())))
            top, best = logits.float().softmax(dim=1).max(dim=1)
            confusion += confusion_matrix(y, best, k)
            uncertain += int(((1 - top) * k / max(k - 1, 1) > 0.5).sum())
            pixels += top.numel()
            predictions.append(best.cpu())
    total = int(confusion.sum())
    iou, dice = iou_and_dice(confusion)
    changed = math.nan
    if previous is not None and previous[0] == version:  # same crops as last time
        changed = sum(int((a != b).sum()) for a, b in zip(previous[1], predictions)) / max(pixels, 1)
    metrics = ValidationMetrics(
        loss=sum(loss * n for loss, n in losses) / max(total, 1),
        error_rate=1.0 - float(confusion.diag().sum()) / total if total else math.nan,
        iou=iou,
        dice=dice,
        uncertain_fraction=uncertain / max(pixels, 1),
        changed_fraction=changed,
    )
    return metrics, (version, predictions)
