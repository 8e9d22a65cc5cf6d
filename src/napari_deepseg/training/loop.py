"""The training loop: a generator that yields one progress record per finished iteration.

Pausing is simply not asking for the next record; closing the generator stops at once and
leaves ``trainer.model`` as it was after the last finished iteration.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from .._device import autocast, eval_mode, resolve_device, resolve_precision, use_channels_last
from ..config import Loss, Optimizer, Schedule, TrainingConfig
from ..data import (
    Augmenter,
    PatchSampler,
    compute_normalisation,
    split_validation,
    training_slices,
    validate_label_set,
    validation_crops,
)
from ..models import build_model
from ..segmentation_model import SegmentationModel
from .events import TrainingProgress, ValidationMetrics
from .losses import class_balancing_weights, labelled_error_rate, sparse_cross_entropy, sparse_dice_loss


class Trainer:
    """Train a segmentation network on images with sparse labels.

    Parameters
    ----------
    images, labels
        One array each, or sequences of pairs (sizes may differ between pairs). Labels: 0 is
        unlabelled and ignored, 1..K are classes. Stacks (Z, H, W) or (T, Z, H, W) train on their
        labelled slices. The arrays are copied once here; later changes to them do not affect the run.
    config
        :class:`TrainingConfig`; ``None`` for the defaults.
    channel_axis
        Axis of the image holding channels, when it cannot be inferred from the labels' shape.
    class_names
        Optional names for classes 1..K.
    model
        A :class:`SegmentationModel` to continue training (its architecture, classes and
        normalisation are kept; iterations continue its history).
    weights_path
        Local file with pretrained encoder weights (else the torch hub cache is looked at).
    """

    def __init__(
        self,
        images: Any,
        labels: Any,
        config: TrainingConfig | None = None,
        *,
        channel_axis: int | None = None,
        class_names: Sequence[str] | None = None,
        model: SegmentationModel | None = None,
        weights_path: str | None = None,
    ) -> None:
        self.config = config = config or TrainingConfig()
        image_list, label_list = _as_pairs(images, labels)
        slices: list[np.ndarray] = []
        slice_labels: list[np.ndarray] = []
        for index, (image, label) in enumerate(zip(image_list, label_list)):
            try:
                ims, labs = training_slices(image, label, channel_axis=channel_axis)
            except (ValueError, TypeError) as err:
                raise type(err)(f"pair {index + 1}: {err}" if len(image_list) > 1 else str(err)) from None
            slices += ims
            slice_labels += labs
        channels = {s.shape[0] for s in slices}
        if len(channels) > 1:
            raise ValueError(f"all images must have the same number of channels, got {sorted(channels)}")
        num_classes = validate_label_set(slice_labels, num_classes=model.num_classes if model else None)
        if model is not None:
            if model.in_channels != slices[0].shape[0]:
                raise ValueError(f"the model expects {model.in_channels} channel(s) but the images have "
                                 f"{slices[0].shape[0]}")
            num_classes = model.num_classes
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(
                f"{len(class_names)} class names given but the labels have {num_classes} classes")

        torch.manual_seed(config.seed)
        self._rng = np.random.default_rng(config.seed)
        self.device = resolve_device(config.device)
        self._dtype = resolve_precision(config.precision, self.device)
        normalisation = model.normalisation if model else compute_normalisation(slices, rng=self._rng)
        images_n = [normalisation.apply(s) for s in slices]
        train_x, train_y, val_x, val_y = split_validation(
            images_n, slice_labels, fraction=config.validation_fraction, rng=self._rng)
        self._sampler = PatchSampler(train_x, train_y, patch_size=config.patch_size,
                                     labelled_fraction=config.labelled_patch_fraction, rng=self._rng)
        self._validation = validation_crops(val_x, val_y, patch_size=config.patch_size) if val_x else []
        self._augmenter = Augmenter(config.augmentation, rgb=slices[0].shape[0] == 3)
        self._class_weights = (class_balancing_weights(train_y, num_classes).to(self.device)
                               if config.class_balancing else None)

        if model is None:
            encoder = config.encoder or _default_encoder(config.architecture)
            module = build_model(config.architecture, num_classes=num_classes, in_channels=slices[0].shape[0],
                                 encoder=encoder, pretrained=config.pretrained, weights_path=weights_path)
            model = SegmentationModel(module, architecture=config.architecture, encoder=encoder,
                                      num_classes=num_classes, normalisation=normalisation,
                                      class_names=class_names, config=config)
        else:
            if class_names is not None:
                model.class_names = tuple(class_names)
            model.config = config.replace(architecture=model.architecture, encoder=model.encoder)
        self.model = model
        self.num_classes = num_classes
        self.training_pixels = int(sum(int((y > 0).sum()) for y in train_y))
        self.validation_pixels = int(sum(int((y > 0).sum()) for _, y in self._validation))

    @property
    def history(self) -> list[dict[str, Any]]:
        return self.model.history

    def run(self) -> Iterator[TrainingProgress]:
        """Train for ``config.iterations`` iterations, yielding after each one."""
        config = self.config
        module = self.model.module.to(self.device)
        channels_last = use_channels_last(self.device, self._dtype)
        if channels_last:
            module.to(memory_format=torch.channels_last)
        optimizer = _make_optimizer(module, config, effective_learning_rate(config, self.model.architecture))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(config))
        scaler = torch.amp.GradScaler("cuda", enabled=self._dtype == torch.float16)
        first = self.model.iterations_trained
        last = first + config.iterations
        start = time.perf_counter()
        module.train()
        try:
            for step in range(config.iterations):
                x, y = self._batch(channels_last)
                with autocast(self.device, self._dtype):
                    logits = module(x)
                loss = sparse_cross_entropy(logits, y, self._class_weights)
                if config.loss is Loss.CROSS_ENTROPY_DICE:
                    loss = loss + config.dice_weight * sparse_dice_loss(logits, y)
                loss_value = float(loss.detach())
                if not math.isfinite(loss_value):
                    raise FloatingPointError(
                        f"training diverged at iteration {first + step + 1} (loss is {loss_value}); "
                        "lower the learning rate or check the image for extreme values")
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                learning_rate = optimizer.param_groups[0]["lr"]
                scheduler.step()
                iteration = first + step + 1
                elapsed = time.perf_counter() - start
                validation = None
                if self._validation and ((step + 1) % config.validation_interval == 0
                                         or step + 1 == config.iterations):
                    validation = self.validate()
                record = TrainingProgress(
                    iteration=iteration, last_iteration=last, loss=loss_value,
                    error_rate=labelled_error_rate(logits.detach(), y), learning_rate=learning_rate,
                    elapsed_seconds=elapsed, samples_per_second=(step + 1) * config.batch_size / elapsed,
                    validation=validation)
                self.model.history.append(record.to_dict())
                yield record
        finally:
            module.eval()
            if channels_last:
                module.to(memory_format=torch.contiguous_format)

    def _batch(self, channels_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
        x_np, y_np = self._sampler.sample(self.config.batch_size)
        x, y = self._augmenter(torch.from_numpy(x_np), torch.from_numpy(y_np))
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        return x.to(self.device, memory_format=memory_format), y.to(self.device)

    def validate(self) -> ValidationMetrics | None:
        """Loss, error rate and per-class IoU/Dice on the held-out labelled pixels."""
        if not self._validation:
            return None
        module = self.model.module
        k = self.num_classes
        confusion = torch.zeros(k, k, dtype=torch.int64)  # rows: truth, columns: prediction
        losses: list[tuple[float, int]] = []
        with eval_mode(module), torch.inference_mode():
            for image, labels in self._validation:
                x = torch.from_numpy(image)[None].to(self.device)
                y = torch.from_numpy(labels)[None].to(self.device)
                with autocast(self.device, self._dtype):
                    logits = module(x)
                n = int((y > 0).sum())
                losses.append((float(sparse_cross_entropy(logits, y)), n))
                mask = y > 0
                truth = (y[mask] - 1).cpu()
                predicted = logits.argmax(dim=1)[mask].cpu()
                confusion += torch.bincount(truth * k + predicted, minlength=k * k).reshape(k, k)
        total = int(confusion.sum())
        tp = confusion.diag().double()
        fp = confusion.sum(0).double() - tp
        fn = confusion.sum(1).double() - tp
        union = tp + fp + fn
        iou = tuple(float(v) if d > 0 else math.nan for v, d in zip(tp / union.clamp(min=1), union))
        dice = tuple(float(v) if d > 0 else math.nan
                     for v, d in zip(2 * tp / (2 * tp + fp + fn).clamp(min=1), 2 * tp + fp + fn))
        return ValidationMetrics(
            loss=sum(loss * n for loss, n in losses) / max(total, 1),
            error_rate=1.0 - float(tp.sum()) / total if total else math.nan,
            iou=iou, dice=dice)


def _as_pairs(images: Any, labels: Any) -> tuple[list[Any], list[Any]]:
    if isinstance(images, (list, tuple)) != isinstance(labels, (list, tuple)):
        raise TypeError("pass one image and one labels array, or two sequences of the same length")
    if isinstance(images, (list, tuple)):
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels arrays")
        if not images:
            raise ValueError("no images were given")
        return list(images), list(labels)
    return [images], [labels]


def _default_encoder(architecture: str) -> str:
    from ..models import architecture_spec

    return architecture_spec(architecture).default_encoder


def effective_learning_rate(config: TrainingConfig, architecture: str) -> float:
    """The configured learning rate, or the architecture's default when it is ``None``."""
    from ..models import architecture_spec

    return config.learning_rate or architecture_spec(architecture).default_learning_rate


def _make_optimizer(module: torch.nn.Module, config: TrainingConfig, lr: float) -> torch.optim.Optimizer:
    params = [p for p in module.parameters() if p.requires_grad]
    if config.optimizer is Optimizer.ADAMW:
        return torch.optim.AdamW(params, lr=lr, weight_decay=config.weight_decay)
    if config.optimizer is Optimizer.SGD:
        return torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=config.weight_decay)
    return torch.optim.Adam(params, lr=lr, weight_decay=config.weight_decay)


def _schedule(config: TrainingConfig):  # -> Callable[[int], float]
    total = config.iterations
    warmup = min(20, total // 10)

    def factor(step: int) -> float:
        if step < warmup:  # a short warm-up keeps Adam from wrecking pretrained features
            return (step + 1) / (warmup + 1)
        if config.schedule is Schedule.COSINE:
            progress = (step - warmup) / max(total - warmup, 1)
            return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
        if config.schedule is Schedule.STEP:
            return 0.1 if step >= 2 * total // 3 else 1.0
        return 1.0

    return factor
