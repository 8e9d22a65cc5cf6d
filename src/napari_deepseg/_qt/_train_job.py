"""What the Train widget runs: its inputs, read once from layers, and the worker's generator.

The generator wraps :meth:`Trainer.run` so a napari worker can pause, resume and quit it at each
yield; between iterations it computes the live preview (``_preview_job``). Nothing here touches Qt
or the viewer: the worker thread only sees private copies.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import SegmentationModel, Trainer, TrainingConfig, TrainingProgress
from ..errors import DeviceOutOfMemoryError
from ..training.tensorboard import TensorBoardLogger, new_run_folder
from . import layers as layer_io
from ._preview_job import PlanePreviewer, Preview, PreviewSchedule, PreviewSettings


@dataclass
class TrainingInputs:
    """Private copies of the chosen pairs; the user's layers are not read again, but for large
    images, handed over read-only and lazily (the trainer reads the regions around the strokes)."""

    images: list[Any]  # numpy copies, or read-only views / dask arrays of large layers
    labels: list[Any]  # numpy copies, or SparseLabels snapshots of large layers
    channels: bool
    image_copies: list[layer_io.ImageCopy]
    names: list[str]  # image layer names, for the model and preview names
    num_classes: int  # the largest painted class (or the continued model's class count)
    class_names: list[str] | None = None

    @property
    def channel_axis(self) -> int | None:
        return -1 if self.channels else None


def parse_class_names(text: str) -> list[str] | None:
    """``"background, nucleus"`` -> ``["background", "nucleus"]``; ``None`` when nothing is named."""
    names = [name.strip() for name in text.split(",")]
    return names if any(names) else None


def _class_names(named: Sequence[str] | None, k: int) -> list[str] | None:
    """Names for classes 1..k: the first k of ``named``, unnamed ones as "class i"."""
    if not named:
        return None
    names = [name or f"class {i}" for i, name in enumerate(named[:k], start=1)]
    return names + [f"class {i}" for i in range(len(names) + 1, k + 1)]


def gather_inputs(
    pairs: Sequence[tuple[Any, Any]],
    *,
    channel_axis: int | None = None,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
) -> TrainingInputs:
    """Copy the (image layer, labels layer) pairs once and check what the layers alone can tell
    (large layers: see :func:`layers.copy_image` and :func:`layers.copy_labels`).

    ``class_names`` name classes 1, 2, ... (the user's names); without them the labels layers'
    ``metadata["class_names"]`` are used, if any.

    Raises
    ------
    ValueError
        With a message naming the layer and saying what to do.
    """
    from napari.layers import Image, Labels

    if not pairs:
        raise ValueError(
            "No training data: choose an image layer and the labels layer with its strokes "
            "under 'Training pairs'."
        )
    copies, labels, names = [], [], []
    for image_layer, labels_layer in pairs:
        if image_layer is None or labels_layer is None:
            raise ValueError(
                "A training pair has no image or no labels layer: choose both, or remove the row."
            )
        if not isinstance(image_layer, Image):
            raise ValueError(
                f"'{image_layer.name}' is not an image layer; choose the image to segment "
                "as the image and the painted strokes as the labels."
            )
        if not isinstance(labels_layer, Labels):
            raise ValueError(
                f"'{labels_layer.name}' is not a labels layer; paint strokes on a labels layer "
                "(Layers > New Labels Layer) and choose it as the labels."
            )
        label = layer_io.copy_labels(labels_layer)
        image = layer_io.copy_image(image_layer, labels_shape=label.shape, channel_axis=channel_axis)
        if image.spatial_shape != label.shape:
            raise ValueError(
                f"'{image_layer.name}' has shape {image.spatial_shape} but '{labels_layer.name}' has shape "
                f"{label.shape}: paint on a labels layer of the image's size, or pick the matching pair."
            )
        if not np.any(label):
            raise ValueError(
                f"'{labels_layer.name}' has no painted pixel: paint strokes of at least two "
                "classes (1, 2, ...; 0 is unlabelled) before training."
            )
        if copies and image.num_channels != copies[0].num_channels:
            raise ValueError(
                f"'{image_layer.name}' has {image.num_channels} channel(s) but '{names[0]}' has "
                f"{copies[0].num_channels}; all training images need the same channels."
            )
        copies.append(image)
        labels.append(label)
        names.append(image_layer.name)
    k = num_classes or max(int(np.max(lab)) for lab in labels)
    metadata_names = next((n for n in (layer_io.class_names(lab) for _, lab in pairs) if n), None)
    return TrainingInputs(
        images=[c.data for c in copies],
        labels=labels,
        channels=copies[0].channels,
        image_copies=copies,
        names=names,
        num_classes=k,
        class_names=_class_names(class_names or metadata_names, k),
    )


@dataclass(frozen=True)
class Started:
    """First item of a job: the trainer (and so the model) exists."""

    trainer: Trainer


@dataclass(frozen=True)
class Step:
    """One finished iteration, with a preview every so often."""

    record: TrainingProgress
    preview: Preview | None = None


class TrainingError(Exception):
    """A failure of the run. superqt treats a ``RuntimeError`` from a generator as a deleted worker
    and emits neither ``errored`` nor ``finished``, so runtime errors travel as this instead."""


def training_job(
    inputs: TrainingInputs,
    config: TrainingConfig,
    *,
    model: SegmentationModel | None = None,
    preview: PreviewSettings | None = None,
    log_dir: Path | None = None,
) -> Iterator[Started | Step]:
    """Build the trainer, then yield one :class:`Step` per iteration of :meth:`Trainer.run`;
    with a ``log_dir``, the worker thread logs each record there for TensorBoard (a new run folder)."""
    try:
        trainer = Trainer(
            inputs.images,
            inputs.labels,
            config,
            channel_axis=inputs.channel_axis,
            class_names=inputs.class_names,
            model=model,
        )
        yield Started(trainer)
        run = trainer.run()
        if log_dir is not None:
            logger = TensorBoardLogger(
                new_run_folder(log_dir), preview_image=inputs.images[0], channel_axis=inputs.channel_axis
            )
            run = logger.follow(run, trainer)  # closing the job closes the run and the event file
        # A full garbage collection of a viewer's heap holds the GIL, so the GUI thread, for
        # ~0.3 s on 2 cores; frozen, what exists now is not traversed again during the run.
        gc.freeze()
        try:
            yield from _steps(trainer, run, preview)
        finally:
            gc.unfreeze()
            run.close()  # module back to eval mode at once, also after quit
    except RuntimeError as err:
        raise TrainingError(describe_error(err)) from err


def _steps(
    trainer: Trainer, run: Iterator[TrainingProgress], preview: PreviewSettings | None
) -> Iterator[Step]:
    schedule = PreviewSchedule(preview.interval, preview.seconds) if preview else None
    previewer = PlanePreviewer(preview) if preview else None
    train_seconds, steps = 0.0, 0
    while True:
        start = time.perf_counter()
        record = next(run, None)
        if record is None:
            return
        train_seconds += time.perf_counter() - start
        steps += 1
        frame = None
        if (
            previewer is not None
            and schedule is not None
            and previewer.settings.enabled
            and (record.finished or schedule.due(steps))
        ):
            start = time.perf_counter()
            frame = previewer(trainer.model)
            schedule.done(steps, time.perf_counter() - start, train_seconds / steps)
        yield Step(record, frame)


def describe_error(err: BaseException) -> str:
    """A message that says what went wrong and what to do about it."""
    text = str(err) or type(err).__name__
    if isinstance(err, DeviceOutOfMemoryError):  # the trainer's own message says what to lower
        return text[:1].upper() + text[1:]
    if "out of memory" in text.lower():
        return (
            "Out of memory while training: lower the batch size or the patch size, or choose the CPU "
            f"as device (Advanced). ({text.splitlines()[0]})"
        )
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
