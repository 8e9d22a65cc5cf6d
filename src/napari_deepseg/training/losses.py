"""Losses on sparse labels.

Label 0 is unlabelled and contributes nothing; classes 1..K map to logits 0..K-1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sparse_cross_entropy(logits: torch.Tensor, labels: torch.Tensor,
                         class_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean cross-entropy over labelled pixels; exactly 0 (with a graph) when none is labelled."""
    target = labels - 1  # unlabelled -> -1, ignored
    if not bool((target >= 0).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float(), target, weight=class_weights, ignore_index=-1)


def sparse_dice_loss(logits: torch.Tensor, labels: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Soft Dice (1 - mean over classes) computed on labelled pixels only."""
    num_classes = logits.shape[1]
    mask = labels > 0
    if not bool(mask.any()):
        return logits.sum() * 0.0
    probs = logits.float().softmax(dim=1).permute(0, 2, 3, 1)[mask]  # (P, K)
    onehot = F.one_hot(labels[mask] - 1, num_classes).to(probs.dtype)
    intersection = (probs * onehot).sum(0)
    denominator = probs.sum(0) + onehot.sum(0)
    return 1.0 - ((2 * intersection + eps) / (denominator + eps)).mean()


def labelled_error_rate(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of labelled pixels whose most probable class is wrong (nan when none is labelled)."""
    mask = labels > 0
    total = int(mask.sum())
    if total == 0:
        return float("nan")
    wrong = (logits.argmax(dim=1) + 1 != labels) & mask
    return int(wrong.sum()) / total


def class_balancing_weights(labels: list, num_classes: int) -> torch.Tensor:
    """Inverse-frequency class weights over the labelled pixels, normalised to mean 1."""
    counts = torch.zeros(num_classes, dtype=torch.float64)
    for lab in labels:
        binc = torch.bincount(torch.as_tensor(lab).reshape(-1), minlength=num_classes + 1)
        counts += binc[1:num_classes + 1].double()
    present = counts > 0
    weights = torch.zeros(num_classes, dtype=torch.float64)
    weights[present] = counts[present].sum() / counts[present]
    weights[present] /= weights[present].mean()
    return weights.float()
