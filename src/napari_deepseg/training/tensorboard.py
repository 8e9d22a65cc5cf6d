"""TensorBoard logging of a run: the progress records as scalars, and preview images.

The logger consumes what :meth:`Trainer.run` yields; the loop knows nothing about it. It needs the
optional ``tensorboard`` package (``pip install "napari-deepseg[tensorboard]"``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np

from ..threshold import apply_threshold
from ..uncertainty import uncertainty
from .events import TrainingProgress

if TYPE_CHECKING:
    from ..segmentation_model import SegmentationModel
    from .loop import Trainer

MISSING = (
    'TensorBoard logging needs the tensorboard package: pip install "napari-deepseg[tensorboard]" ({error})'
)
# matplotlib's tab10, the class colours of the preview (class k gets colour (k - 1) mod 10)
PALETTE = np.array(
    [
        (31, 119, 180),
        (255, 127, 14),
        (44, 160, 44),
        (214, 39, 40),
        (148, 103, 189),
        (140, 86, 75),
        (227, 119, 194),
        (127, 127, 127),
        (188, 189, 34),
        (23, 190, 207),
    ],
    dtype=np.uint8,
)


class TensorBoardLogger:
    """Write a run's :class:`TrainingProgress` records to TensorBoard event files.

    Scalars are keyed by iteration: ``train/loss``, ``train/error_rate``, ``train/learning_rate``,
    ``train/samples_per_second``; at each validation ``validation/loss``, ``validation/error_rate``,
    ``validation/mean_iou``, ``validation/mean_dice``, ``validation/iou/<class name>``,
    ``validation/dice/<class name>``, ``validation/uncertain_fraction`` and
    ``validation/changed_fraction`` (see :class:`ValidationMetrics`). A number that is ``nan`` (a
    class with nothing to score, no earlier validation to compare with) is left out.

    Every ``preview_every`` iterations, and at the run's last one, the model predicts a fixed crop
    (the centre, ``preview_size`` pixels square) of the first plane of ``preview_image``:
    ``preview/prediction`` (classes in matplotlib's tab10 colours), ``preview/uncertainty``
    (white: uncertain) and the scalar ``preview/uncertain_fraction``; ``preview/image`` (the crop,
    percentile-scaled) is written once.

    Parameters
    ----------
    log_dir
        Folder of the event files (created at the first record); point ``tensorboard --logdir`` at it
        or at its parent.
    preview_every
        Iterations between preview images; 0 for none.
    preview_image, channel_axis
        The image to preview, as given to the :class:`Trainer` (usually the first training image);
        ``None``: no preview images.
    preview_size
        Side of the previewed crop.
    flush_seconds
        How often the writer flushes to disk.

    Raises
    ------
    ImportError
        When ``tensorboard`` is not installed (the message names the extra to install).

    Examples
    --------
    >>> with TensorBoardLogger("runs/cells", preview_image=image) as logger:  # doctest: +SKIP
    ...     for record in trainer.run():
    ...         logger.log(record, trainer)
    """

    def __init__(
        self,
        log_dir: str | Path,
        *,
        preview_every: int = 100,
        preview_image: Any = None,
        channel_axis: int | None = None,
        preview_size: int = 256,
        flush_seconds: float = 10.0,
    ) -> None:
        if preview_every < 0 or preview_size < 1:
            raise ValueError(
                f"preview_every must be >= 0 and preview_size >= 1, got {preview_every} and {preview_size}"
            )
        self._writer_class = summary_writer_class()  # fails here, before any training, when missing
        self.log_dir = Path(log_dir)
        self.preview_every = preview_every
        self.preview_size = preview_size
        self._image, self._channel_axis = preview_image, channel_axis
        self._flush_seconds = flush_seconds
        self._writer: Any = None
        self._crop: tuple[np.ndarray, Any] | None = None  # (C, h, w) raw crop, its image's bounds

    # ---------------------------------------------------------------- records
    def log(self, progress: TrainingProgress, trainer: Trainer) -> None:
        """Write the scalars of ``progress`` and, when due, a preview of ``trainer.model``."""
        writer = self._open()
        step = progress.iteration
        scalars = {
            "train/loss": progress.loss,
            "train/error_rate": progress.error_rate,
            "train/learning_rate": progress.learning_rate,
            "train/samples_per_second": progress.samples_per_second,
        }
        validation = progress.validation
        if validation is not None:
            scalars.update(
                {
                    "validation/loss": validation.loss,
                    "validation/error_rate": validation.error_rate,
                    "validation/mean_iou": validation.mean_iou,
                    "validation/mean_dice": validation.mean_dice,
                    "validation/uncertain_fraction": validation.uncertain_fraction,
                    "validation/changed_fraction": validation.changed_fraction,
                }
            )
            for name, iou, dice in zip(trainer.model.class_names, validation.iou, validation.dice):
                scalars[f"validation/iou/{name}"] = iou
                scalars[f"validation/dice/{name}"] = dice
        for tag, value in scalars.items():
            if math.isfinite(value):
                writer.add_scalar(tag, value, step)
        due = self.preview_every and (step % self.preview_every == 0 or progress.finished)
        if due and self._image is not None:
            self._preview(trainer.model, step)
        if progress.finished:
            writer.flush()

    def follow(self, records: Iterator[TrainingProgress], trainer: Trainer) -> Iterator[TrainingProgress]:
        """Log each record of ``records`` (``trainer.run()``) as it passes, then close the logger.

        Closing the returned generator closes ``records`` too.
        """
        try:
            for record in records:
                self.log(record, trainer)
                yield record
        finally:
            close = getattr(records, "close", None)
            if close is not None:
                close()
            self.close()

    def close(self) -> None:
        """Flush and close the event file (a later :meth:`log` opens a new one)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> TensorBoardLogger:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    # --------------------------------------------------------------- previews
    def _open(self) -> Any:
        if self._writer is None:
            self._writer = self._writer_class(str(self.log_dir), flush_secs=self._flush_seconds)
        return self._writer

    def _preview(self, model: SegmentationModel, step: int) -> None:
        first = self._crop is None
        if self._crop is None:
            self._crop = self._fixed_crop(model)
        crop, bounds = self._crop
        compact = model.predict_compact(crop, channel_axis=0, image_normalisation=bounds, batch_size=1)
        classes = apply_threshold(compact, 0.0)
        doubt = uncertainty(compact)
        writer = self._open()
        if first:
            writer.add_image("preview/image", display_image(crop), step, dataformats="HWC")
        writer.add_image("preview/prediction", class_colours(classes), step, dataformats="HWC")
        writer.add_image("preview/uncertainty", (255 * doubt).astype(np.uint8), step, dataformats="HW")
        writer.add_scalar("preview/uncertain_fraction", float(np.mean(doubt > 0.5)), step)

    def _fixed_crop(self, model: SegmentationModel) -> tuple[np.ndarray, Any]:
        """The centre crop of the first plane, and the bounds of the whole image (per-image
        normalisation scales by the whole image, as in training)."""
        view = model.view(self._image, self._channel_axis)
        height, width = view.spatial_shape
        h, w = min(self.preview_size, height), min(self.preview_size, width)
        y, x = (height - h) // 2, (width - w) // 2
        crop = np.ascontiguousarray(view.data[0, :, y : y + h, x : x + w])
        return crop, model.normalisation.for_image(view.data)


def new_run_folder(parent: str | Path) -> Path:
    """A folder for one run under ``parent``, named by its start time (``run-20260131-142501``, then
    ``-2``, ``-3``, ... within one second): ``tensorboard --logdir parent`` shows each run apart."""
    base = Path(parent) / time.strftime("run-%Y%m%d-%H%M%S")
    folder, n = base, 1
    while folder.exists():
        n += 1
        folder = base.with_name(f"{base.name}-{n}")
    return folder


def summary_writer_class() -> Any:
    """``torch.utils.tensorboard.SummaryWriter``; an ImportError naming the extra when missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as error:  # torch raises it when the tensorboard package is absent
        raise ImportError(MISSING.format(error=error)) from error
    return SummaryWriter


def class_colours(classes: np.ndarray) -> np.ndarray:
    """(H, W) classes 1..K as (H, W, 3) uint8 colours; 0 (unclassified) black."""
    colours = PALETTE[(classes.astype(np.int64) - 1) % len(PALETTE)]
    colours[classes == 0] = 0
    return colours


def display_image(crop: np.ndarray) -> np.ndarray:
    """A (C, h, w) crop as (h, w, 3) uint8: RGB for 3 channels, else the first channel in grey,
    each channel scaled from its 1st to 99.8th percentile."""
    channels = crop if crop.shape[0] == 3 else crop[:1]
    out = np.empty((*crop.shape[1:], 3), np.uint8)
    for c, channel in enumerate(channels.astype(np.float64)):
        finite = channel[np.isfinite(channel)]
        low, high = np.percentile(finite, (1.0, 99.8)) if finite.size else (0.0, 1.0)
        scaled = np.clip((np.nan_to_num(channel) - low) / max(high - low, 1e-12), 0.0, 1.0)
        out[..., c] = np.round(255 * scaled).astype(np.uint8)
    if len(channels) == 1:
        out[..., 1] = out[..., 2] = out[..., 0]
    return out
