"""What the Train widget runs: its inputs, read once from layers, and the worker's generator.

The generator wraps :meth:`Trainer.run` so a napari worker can pause, resume and quit it at each
yield; between iterations it predicts one plane for the live preview. Nothing here touches Qt
or the viewer: the worker thread only sees private copies.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import SegmentationModel, Trainer, TrainingConfig, TrainingProgress, apply_threshold
from . import layers as layer_io

PREVIEW_BUDGET = 0.1  # previews may cost at most this share of the training time


@dataclass
class TrainingInputs:
    """Private copies of the chosen pairs; the user's layers are not read again."""

    images: list[np.ndarray]
    labels: list[np.ndarray]
    channels: bool
    image_copies: list[layer_io.ImageCopy]
    names: list[str]  # image layer names, for the model and preview names
    num_classes: int  # the largest painted class (or the continued model's class count)
    class_names: list[str] | None = None

    @property
    def channel_axis(self) -> int | None:
        return -1 if self.channels else None


def gather_inputs(pairs: Sequence[tuple[Any, Any]], *, channel_axis: int | None = None,
                  num_classes: int | None = None) -> TrainingInputs:
    """Copy the (image layer, labels layer) pairs once and check what the layers alone can tell.

    Raises
    ------
    ValueError
        With a message naming the layer and saying what to do.
    """
    from napari.layers import Image, Labels

    if not pairs:
        raise ValueError("No training data: choose an image layer and the labels layer with its strokes "
                         "under 'Training pairs'.")
    copies, labels, names = [], [], []
    for image_layer, labels_layer in pairs:
        if image_layer is None or labels_layer is None:
            raise ValueError("A training pair has no image or no labels layer: choose both, "
                             "or remove the row.")
        if not isinstance(image_layer, Image):
            raise ValueError(f"'{image_layer.name}' is not an image layer; choose the image to segment "
                             "as the image and the painted strokes as the labels.")
        if not isinstance(labels_layer, Labels):
            raise ValueError(f"'{labels_layer.name}' is not a labels layer; paint strokes on a labels layer "
                             "(Layers > New Labels Layer) and choose it as the labels.")
        label = layer_io.copy_labels(labels_layer)
        image = layer_io.copy_image(image_layer, labels_shape=label.shape, channel_axis=channel_axis)
        if image.spatial_shape != label.shape:
            raise ValueError(
                f"'{image_layer.name}' has shape {image.spatial_shape} but '{labels_layer.name}' has shape "
                f"{label.shape}: paint on a labels layer of the image's size, or pick the matching pair.")
        if not np.any(label):
            raise ValueError(f"'{labels_layer.name}' has no painted pixel: paint strokes of at least two "
                             "classes (1, 2, ...; 0 is unlabelled) before training.")
        if copies and image.num_channels != copies[0].num_channels:
            raise ValueError(f"'{image_layer.name}' has {image.num_channels} channel(s) but '{names[0]}' has "
                             f"{copies[0].num_channels}; all training images need the same channels.")
        copies.append(image)
        labels.append(label)
        names.append(image_layer.name)
    k = num_classes or max(int(np.max(lab)) for lab in labels)
    metadata_names = next((n for n in (layer_io.class_names(lab) for _, lab in pairs) if n), None)
    return TrainingInputs(
        images=[c.data for c in copies], labels=labels, channels=copies[0].channels,
        image_copies=copies, names=names, num_classes=k,
        class_names=metadata_names[:k] if metadata_names and len(metadata_names) >= k else None)


@dataclass(frozen=True)
class Started:
    """First item of a job: the trainer (and so the model) exists."""

    trainer: Trainer


@dataclass(frozen=True)
class Step:
    """One finished iteration, with a preview plane (labels 1..K) every so often."""

    record: TrainingProgress
    preview: np.ndarray | None = None


class TrainingError(Exception):
    """A failure of the run. superqt treats a ``RuntimeError`` from a generator as a deleted worker
    and emits neither ``errored`` nor ``finished``, so runtime errors travel as this instead."""


@dataclass
class PreviewSettings:
    """The image whose plane is previewed and how often; ``index`` and ``enabled`` may be changed
    from the GUI thread while the job runs (plain attribute writes)."""

    image: layer_io.ImageCopy
    interval: int = 25
    tile_size: int = 512
    enabled: bool = True
    index: tuple[int, ...] = ()
    stop: threading.Event = field(default_factory=threading.Event)

    def plane(self) -> np.ndarray:
        n = len(self.image.spatial_shape) - 2  # stack axes before (H, W)
        index = self.index if len(self.index) == n else (0,) * n
        return self.image.data[index] if n else self.image.data


def training_job(inputs: TrainingInputs, config: TrainingConfig, *, model: SegmentationModel | None = None,
                 preview: PreviewSettings | None = None) -> Iterator[Started | Step]:
    """Build the trainer, then yield one :class:`Step` per iteration of :meth:`Trainer.run`."""
    try:
        trainer = Trainer(inputs.images, inputs.labels, config, channel_axis=inputs.channel_axis,
                          class_names=inputs.class_names, model=model)
        yield Started(trainer)
        run = trainer.run()
        try:
            yield from _steps(trainer, run, preview)
        finally:
            run.close()  # module back to eval mode at once, also after quit
    except RuntimeError as err:
        raise TrainingError(describe_error(err)) from err


def _steps(trainer: Trainer, run: Iterator[TrainingProgress], preview: PreviewSettings | None
           ) -> Iterator[Step]:
    train_seconds, steps, next_preview = 0.0, 0, preview.interval if preview else 0
    while True:
        start = time.perf_counter()
        record = next(run, None)
        if record is None:
            return
        train_seconds += time.perf_counter() - start
        steps += 1
        plane = None
        if preview is not None and preview.enabled and (steps >= next_preview
                                                        or record.iteration == record.last_iteration):
            start = time.perf_counter()
            plane = _predict_plane(trainer.model, preview)
            cost = time.perf_counter() - start
            # Keep previews under PREVIEW_BUDGET of the training time on slow devices / big planes.
            gap = math.ceil(cost / max(PREVIEW_BUDGET * train_seconds / steps, 1e-9))
            next_preview = steps + max(preview.interval, gap)
        yield Step(record, plane)


def _predict_plane(model: SegmentationModel, preview: PreviewSettings) -> np.ndarray | None:
    try:
        compact = model.predict_compact(
            preview.plane(), channel_axis=-1 if preview.image.channels else None,
            tile_size=preview.tile_size, overlap=min(32, preview.tile_size // 4), batch_size=1,
            precision="auto", should_stop=preview.stop.is_set)
    except InterruptedError:
        return None
    return apply_threshold(compact, 0.0)


def describe_error(err: BaseException) -> str:
    """A message that says what went wrong and what to do about it."""
    text = str(err) or type(err).__name__
    if "out of memory" in text.lower():
        return ("Out of memory while training: lower the batch size or the patch size, or choose the CPU "
                f"as device (Advanced). ({text.splitlines()[0]})")
    return text


def model_name(architecture: str, names: Sequence[str]) -> str:
    """The name the model is published under, e.g. ``"trained: unet on cells"``."""
    more = f" (+{len(names) - 1})" if len(names) > 1 else ""
    return f"trained: {architecture} on {names[0]}{more}"


def wait_until(predicate: Callable[[], bool], seconds: float) -> bool:
    """Poll ``predicate`` for up to ``seconds``; whether it became true."""
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True
