"""The training loop: a generator that yields one progress record per finished iteration.

Pausing is simply not asking for the next record; closing the generator stops at once and
leaves ``trainer.model`` as it was after the last finished iteration.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from functools import partial
from typing import Any

import torch

from .._device import autocast, resolve_device, resolve_precision, use_channels_last
from ..config import Loss, TrainingConfig
from ..data import Augmenter
from ..data.training_set import TrainingSet
from ..segmentation_model import SegmentationModel
from .distributed import Collective
from .events import TrainingProgress, ValidationMetrics
from .guard import IterationGuard
from .losses import (
    class_balancing_weights,
    crf_loss,
    labelled_error_rate,
    sparse_cross_entropy,
    sparse_dice_loss,
)
from .setup import LearningRateSchedule, WeightAverage, effective_learning_rate, make_optimizer, prepare_model
from .validation import Predictions, validation_metrics


class Trainer:
    """Train a segmentation network on images with sparse labels.

    Parameters
    ----------
    images, labels
        One array each, or sequences of pairs (sizes may differ between pairs). Labels: 0 is
        unlabelled and ignored, 1..K are classes. Stacks (Z, H, W) or (T, Z, H, W) train on their
        labelled slices. The arrays are copied once here (a large or lazy image, e.g. dask or
        zarr, only in the boxes around its strokes: see ``napari_deepseg.data.regions``); later
        changes to them do not affect the run, except through :meth:`update_labels`.
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

    Notes
    -----
    ``trainer.model.module`` holds the exponential moving average of the weights (when
    ``config.ema_decay > 0``): what previews, predictions and saved files use. The optimiser
    updates a private copy. Launched by ``torchrun``, the processes train one model together
    (DistributedDataParallel, see ``docs/distributed.md``).
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
        torch.manual_seed(config.seed)
        self._dist = Collective()  # the identity for a single process
        self.device = self._dist.device(resolve_device(config.device))
        self._dtype = resolve_precision(config.precision, self.device)
        self.data = TrainingSet(
            images,
            labels,
            config,
            channel_axis=channel_axis,
            normalisation=model.normalisation if model else None,
            num_classes=model.num_classes if model else None,
        )
        self.num_classes = self.data.num_classes
        self._augmenter = Augmenter(config.augmentation, rgb=self.data.in_channels == 3)
        self.model = prepare_model(
            self.data, config, class_names=class_names, model=model, weights_path=weights_path
        )
        self._weights = WeightAverage(self.model, config.ema_decay)  # the optimiser trains its own copy
        self._dist.seed(config.seed)
        self._data_version = -1
        self._rejections_reported = 0
        self._class_weights: torch.Tensor | None = None
        self._last_predictions: Predictions | None = None
        self._stop = threading.Event()

    @property
    def history(self) -> list[dict[str, Any]]:
        return self.model.history

    @property
    def rank(self) -> int:
        """This process's rank in a torchrun job (0 outside one): rank 0 alone should write files."""
        return self._dist.rank

    @property
    def training_pixels(self) -> int:
        return self.data.training_pixels

    @property
    def validation_pixels(self) -> int:
        return self.data.validation_pixels

    @property
    def painted_pixels(self) -> tuple[int, ...]:
        """Labelled pixels per class 1..K, queued updates included."""
        return self.data.painted_pixels

    @property
    def rejected_updates(self) -> list[str]:
        """Why label updates the running loop could not bring in were dropped (oldest first): a
        NaN in a large image near a new stroke, say. Each is also warned about (``RuntimeWarning``)
        when it happens; the run goes on with the labels it had for that pair."""
        return list(self.data.rejected_updates)

    def update_labels(self, labels: Any, pair: int = 0) -> None:
        """Replace the labels of ``pair`` while training runs (thread-safe).

        ``labels`` is the full labels array of that pair, of the shape the trainer was given.
        The running loop brings it in before its next iteration: the sampler, the class
        balance and the validation split follow (a stroke in a held-out block is validation).

        Raises
        ------
        ValueError, TypeError
            For another shape, non-integer or negative labels, a class the network was not
            built for, or no labelled pixel left. The run goes on with the labels it had.
            What only the loop finds (NaN in a large image near the new strokes) drops the
            update there instead: see :attr:`rejected_updates`.
        """
        self._dist.update_labels(self.data, labels, pair)

    def run(self) -> Iterator[TrainingProgress]:
        """Train until ``config.iterations`` or ``config.max_minutes``, whichever comes first
        (or until the generator is closed), yielding after each iteration.

        Minutes are training time: while the consumer holds the generator (paused, previewing)
        the clock stands still, and ``elapsed_seconds`` of the records counts the same way.
        """
        config = self.config
        module = self._weights.trained.to(self.device)
        self.model.module.to(self.device)
        channels_last = use_channels_last(self.device, self._dtype)
        if channels_last:
            module.to(memory_format=torch.channels_last)
            self.model.module.to(memory_format=torch.channels_last)
        peak_lr = effective_learning_rate(config, self.model.architecture)
        optimizer = make_optimizer(module, config, peak_lr)
        schedule = LearningRateSchedule(config)
        scaler = torch.amp.GradScaler("cuda", enabled=self._dtype == torch.float16)
        first = self.model.iterations_trained
        # Known in advance only when an iteration count alone decides the end.
        last = (
            first + config.iterations if config.iterations is not None and schedule.budget is None else None
        )
        # Training time counts only while the loop runs: a consumer that holds the generator
        # (a paused widget, a preview, a benchmark scoring) does not spend the budget.
        trained, resumed = 0.0, time.perf_counter()
        step = 0
        module.train()
        network = self._dist.start(module, self.model.module, self.device)  # DDP when distributed
        guard = IterationGuard(module, self._dist.stop_event(self._stop), config, self.device)
        self.model.training_in_progress = True
        try:
            while True:
                elapsed = trained + time.perf_counter() - resumed
                stop, elapsed = self._dist.agree(self._stop.is_set(), elapsed)  # rank 0's clock
                if stop:
                    break
                self._sync_data()
                # The learning rate for this step: where the run will be when it ends.
                ahead = elapsed + elapsed / step if step else 0.0
                for group in optimizer.param_groups:
                    group["lr"] = peak_lr * schedule(step, schedule.fraction(step + 1, ahead))
                x, y = self._batch(channels_last)
                number = first + step + 1
                outcome = guard.run(number, partial(self._iterate, network, optimizer, scaler, guard, x, y))
                if outcome is None:  # stopped mid-iteration
                    return
                logits, loss_value = outcome
                step += 1
                elapsed, error_rate = self._dist.after_step(
                    trained + time.perf_counter() - resumed, labelled_error_rate(logits, y)
                )
                fraction = schedule.fraction(step, elapsed)
                finished = fraction >= 1.0
                validation = None
                due = step % config.validation_interval == 0 or finished
                if self.data.validation and due and not self._stop.is_set() and self._dist.rank == 0:
                    validation = self.validate()
                record = TrainingProgress(
                    iteration=first + step,
                    last_iteration=last,
                    loss=loss_value,
                    error_rate=error_rate,
                    learning_rate=optimizer.param_groups[0]["lr"],
                    elapsed_seconds=elapsed,
                    samples_per_second=step * config.batch_size * self._dist.world_size / elapsed,
                    validation=validation,
                    fraction_done=min(fraction, 1.0),
                    painted_pixels=self.data.painted_pixels,
                    finished=finished,
                )
                self.model.history.append(record.to_dict())
                trained += time.perf_counter() - resumed
                yield record
                resumed = time.perf_counter()
                if finished:
                    return
        finally:
            guard.remove()
            self._dist.close(module)
            self._stop.clear()
            self.model.training_in_progress = False
            module.eval()
            self.model.module.eval()
            if channels_last:
                module.to(memory_format=torch.contiguous_format)
                self.model.module.to(memory_format=torch.contiguous_format)

    def request_stop(self) -> None:
        """End the run in progress within a fraction of a second; callable from any thread.

        The iteration under way is abandoned between two layers (forward or backward pass) and
        its step is not applied; :meth:`run` returns without another record, and the model keeps
        the weights of its last finished iteration. A request while no run is in progress holds
        for the next one.
        """
        self._stop.set()

    def _iterate(
        self,
        module: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler,
        guard: IterationGuard,
        x: torch.Tensor,
        y: torch.Tensor,
    ) -> tuple[torch.Tensor, float]:
        """Forward pass, loss, backward pass and optimiser step; the logits (detached) and loss."""
        with autocast(self.device, self._dtype):
            logits = module(x)
        loss = sparse_cross_entropy(logits, y, self._class_weights)
        if self.config.loss is Loss.CROSS_ENTROPY_DICE:
            loss = loss + self.config.dice_weight * sparse_dice_loss(logits, y)
        if self.config.regularisation_weight:
            loss = loss + self.config.regularisation_weight * crf_loss(logits, x)
        loss_value = guard.check_loss(self._dist.mean(loss))  # every rank decides on the same value
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if not scaler.is_enabled():  # fp16's scaler skips the steps with inf/NaN gradients itself
            guard.check_gradients()
        scaler.step(optimizer)
        scaler.update()
        self._weights.update()
        return logits.detach(), loss_value

    def _sync_data(self) -> None:
        """Bring in labels painted since the last iteration; class weights follow them."""
        self._dist.apply_updates(self.data)
        rejected = self.data.rejected_updates
        for message in rejected[self._rejections_reported :]:
            warnings.warn(message, RuntimeWarning, stacklevel=2)
        self._rejections_reported = len(rejected)
        if self.data.version != self._data_version:
            self._data_version = self.data.version
            self._class_weights = (
                class_balancing_weights(self.data.train_labels, self.num_classes).to(self.device)
                if self.config.class_balancing
                else None
            )

    def _batch(self, channels_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
        batch = self.data.sampler.sample(self.config.batch_size * self._dist.world_size)
        x_np, y_np = self._dist.share(batch)  # distributed: each rank trains on its share of the batch
        x, y = self._augmenter(torch.from_numpy(x_np), torch.from_numpy(y_np))
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        return x.to(self.device, memory_format=memory_format), y.to(self.device)

    def validate(self) -> ValidationMetrics | None:
        """Loss, error rate and per-class IoU/Dice of the model you get (the averaged weights)
        on the held-out labelled pixels."""
        if not self.data.validation:
            return None
        metrics, self._last_predictions = validation_metrics(
            self.model.module,
            self.data.validation,
            self.num_classes,
            self._dtype,
            version=self.data.version,
            previous=self._last_predictions,
        )
        return metrics
