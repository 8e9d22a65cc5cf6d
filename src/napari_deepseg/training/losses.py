"""Losses and scores on sparse labels.

Label 0 is unlabelled and contributes nothing; classes 1..K map to logits 0..K-1.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def sparse_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, class_weights: torch.Tensor | None = None
) -> torch.Tensor:
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


def confusion_matrix(labels: torch.Tensor, predicted: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(K, K)`` int64 counts over labelled pixels: rows are the painted class, columns the
    predicted one (both 1..K in ``labels``, 0..K-1 in ``predicted``, the argmax of the logits)."""
    mask = labels > 0
    truth, guess = (labels[mask] - 1).cpu().long(), predicted[mask].cpu().long()
    k = num_classes
    return torch.bincount(truth * k + guess, minlength=k * k).reshape(k, k)


def iou_and_dice(confusion: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-class IoU ``tp / (tp + fp + fn)`` and Dice ``2 tp / (2 tp + fp + fn)`` from a
    :func:`confusion_matrix`; ``nan`` for a class neither painted nor predicted."""
    tp = confusion.diag().double()
    fp = confusion.sum(0).double() - tp
    fn = confusion.sum(1).double() - tp

    def score(numerator: torch.Tensor, denominator: torch.Tensor) -> tuple[float, ...]:
        return tuple(float(n / d) if d > 0 else math.nan for n, d in zip(numerator, denominator))

    return score(tp, tp + fp + fn), score(2 * tp, 2 * tp + fp + fn)


def class_balancing_weights(labels: list, num_classes: int) -> torch.Tensor:
    """Inverse-frequency class weights over the labelled pixels, normalised to mean 1."""
    counts = torch.zeros(num_classes, dtype=torch.float64)
    for lab in labels:
        binc = torch.bincount(torch.as_tensor(lab).reshape(-1), minlength=num_classes + 1)
        counts += binc[1 : num_classes + 1].double()
    present = counts > 0
    weights = torch.zeros(num_classes, dtype=torch.float64)
    weights[present] = counts[present].sum() / counts[present]
    weights[present] /= weights[present].mean()
    return weights.float()


def crf_loss(
    logits: torch.Tensor,
    image: torch.Tensor,
    *,
    kernel: int = 5,
    dilation: int = 2,
    downsample: int = 2,
    sigma_intensity: float = 0.5,
    sigma_xy: float = 4.0,
) -> torch.Tensor:
    """Potts / CRF loss on every pixel (Tang et al., ECCV 2018; local window as in Obukhov et al.
    2019, "Gated CRF Loss"): neighbours that look alike should share a class.

    For each pixel ``i`` and each neighbour ``j`` in a ``kernel x kernel`` window (``dilation``
    apart, at 1/``downsample`` resolution) with affinity
    ``w_ij = exp(-|I_i - I_j|^2 / 2 sigma_intensity^2 - |x_i - x_j|^2 / 2 sigma_xy^2)`` on the
    network input ``I``, the loss is ``sum w_ij (1 - s_i . s_j) / sum w_ij`` with ``s`` the
    softmax: the affinity-weighted share of disagreeing neighbours, in [0, 1]. Unlabelled pixels
    get a gradient from it, so predictions follow the image's edges between the strokes.
    """
    probs = logits.float().softmax(dim=1)
    image = image.float()
    if downsample > 1:
        probs = F.avg_pool2d(probs, downsample, ceil_mode=True)
        image = F.avg_pool2d(image, downsample, ceil_mode=True)
    n, k, h, w = probs.shape
    pad = dilation * (kernel // 2)
    taps = kernel * kernel

    def neighbours(x: torch.Tensor) -> torch.Tensor:
        return F.unfold(x, kernel, dilation=dilation, padding=pad).view(n, x.shape[1], taps, h, w)

    valid = neighbours(torch.ones(n, 1, h, w, device=probs.device))[:, 0]  # 0 where a tap is padding
    offsets = torch.arange(kernel, device=probs.device, dtype=torch.float32) - kernel // 2
    distance2 = (offsets[:, None] ** 2 + offsets[None, :] ** 2).reshape(taps, 1, 1) * dilation**2
    difference2 = ((neighbours(image) - image[:, :, None]) ** 2).sum(1)
    affinity = torch.exp(-difference2 / (2 * sigma_intensity**2) - distance2 / (2 * sigma_xy**2)) * valid
    affinity[:, taps // 2] = 0  # not with itself
    agreement = (neighbours(probs) * probs[:, :, None]).sum(1)
    return (affinity * (1 - agreement)).sum() / affinity.sum().clamp(min=1e-6)
