"""The live preview, computed in the training worker between iterations.

Only the part of the current plane the user looks at is predicted (with the model's averaged
weights), into a full-plane buffer that keeps what earlier previews showed elsewhere. Each
preview also carries its uncertainty and how much of it changed since the last one. Nothing here
touches Qt or the viewer: the GUI thread only writes the plane index and the region it shows.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import SegmentationModel, apply_threshold, uncertainty
from . import layers as layer_io

PREVIEW_BUDGET = 0.1  # previews may cost at most this share of the training time
PREVIEW_SECONDS = 3.0  # a preview at least this often, budget permitting
UNCERTAIN = 0.5  # uncertainty above which a pixel counts as uncertain in the status line
# The preview keeps full-plane buffers (labels, uncertainty, their copies and the layers' arrays:
# ~18 bytes a pixel), so planes above this (a slide) are not previewed: 64 M pixels ~ 1.2 GB.
PREVIEW_MAX_PIXELS = 64 * 2**20

Region = tuple[int, int, int, int]  # (y0, y1, x0, x1) of a plane


@dataclass
class PreviewSettings:
    """The image whose plane is previewed and how often; ``index``, ``region`` and ``enabled``
    may be changed from the GUI thread while the job runs (plain attribute writes)."""

    image: layer_io.ImageCopy
    interval: int = 25  # iterations
    seconds: float = PREVIEW_SECONDS
    tile_size: int = 512
    enabled: bool = True
    index: tuple[int, ...] = ()  # of the plane among the stack axes
    region: Region | None = None  # the visible part of the plane; None for all of it
    stop: threading.Event = field(default_factory=threading.Event)

    @property
    def plane_shape(self) -> tuple[int, int]:
        height, width = self.image.spatial_shape[-2:]
        return int(height), int(width)

    @property
    def too_large(self) -> bool:
        """Whether the plane is too large for the live preview's full-plane buffers."""
        height, width = self.plane_shape
        return height * width > PREVIEW_MAX_PIXELS

    def plane(self, index: tuple[int, ...]) -> np.ndarray:
        n = len(self.image.spatial_shape) - 2  # stack axes before (H, W)
        return self.image.data[index] if n else self.image.data

    def valid_index(self) -> tuple[int, ...]:
        n = len(self.image.spatial_shape) - 2
        return self.index if len(self.index) == n else (0,) * n


@dataclass(frozen=True)
class Preview:
    """One preview of a plane: the region just predicted, written into full-plane arrays.

    ``labels`` (classes 1..K, 0 where no preview has looked yet) and ``uncertainty`` (0 certain,
    1 uniform) have the plane's shape; ``changed_fraction`` is the share of pixels whose class
    changed since the previous preview of the same region (``nan`` after a pan, zoom or new plane);
    ``uncertain_fraction`` the share of the region with uncertainty above ``UNCERTAIN``.
    """

    labels: np.ndarray
    uncertainty: np.ndarray
    index: tuple[int, ...]
    region: Region
    changed_fraction: float
    uncertain_fraction: float

    @property
    def stability(self) -> float:
        """Share of the compared pixels whose class did not change (``nan`` if none compared)."""
        return 1.0 - self.changed_fraction


class PreviewSchedule:
    """A preview every ``interval`` iterations or ``seconds``, whichever comes first, but each
    one followed by at least ``1 / PREVIEW_BUDGET`` times its cost in training."""

    def __init__(self, interval: int, seconds: float) -> None:
        self.interval, self.seconds = interval, seconds
        self._next_step, self._next_time = interval, time.monotonic() + seconds

    def due(self, steps: int) -> bool:
        return steps >= self._next_step or time.monotonic() >= self._next_time

    def done(self, steps: int, cost: float, seconds_per_step: float) -> None:
        gap = math.ceil(cost / max(PREVIEW_BUDGET * seconds_per_step, 1e-9))
        self._next_step = steps + max(self.interval, gap)
        self._next_time = time.monotonic() + max(self.seconds, cost / PREVIEW_BUDGET)


def clip_region(region: Region | None, shape: tuple[int, int]) -> Region:
    """``region`` inside a plane of ``shape``; the whole plane for ``None`` or an empty overlap."""
    height, width = shape
    if region is not None:
        y0, y1, x0, x1 = region
        y0, y1, x0, x1 = max(0, y0), min(height, y1), max(0, x0), min(width, x1)
        if y1 > y0 and x1 > x0:
            return y0, y1, x0, x1
    return 0, height, 0, width


class PlanePreviewer:
    """Predicts the requested region of the requested plane into that plane's buffers."""

    def __init__(self, settings: PreviewSettings) -> None:
        self.settings = settings
        self._index: tuple[int, ...] | None = None
        self._labels = self._uncertainty = np.zeros((0, 0))
        self._normalisation: Any = None
        self._last_region: Region | None = None

    def _start_plane(self, model: SegmentationModel, index: tuple[int, ...]) -> None:
        shape = self.settings.plane_shape
        self._index, self._last_region = index, None
        self._labels = np.zeros(shape, np.uint8 if model.num_classes < 256 else np.uint16)
        self._uncertainty = np.zeros(shape, np.float32)
        # Per-image bounds are those of the whole image (the whole stack, as in training), measured
        # once per run rather than per preview.
        if self._normalisation is None:
            whole = model.view(self.settings.image.data, self._channel_axis).data
            self._normalisation = model.normalisation.for_image(whole)

    @property
    def _channel_axis(self) -> int | None:
        return -1 if self.settings.image.channels else None

    def __call__(self, model: SegmentationModel) -> Preview | None:
        settings = self.settings
        index = settings.valid_index()
        height, width = settings.plane_shape
        region = clip_region(settings.region, (height, width))
        plane = settings.plane(index)
        if index != self._index:
            self._start_plane(model, index)
        whole = region == (0, height, 0, width)
        try:
            compact = model.predict_compact(
                plane,
                channel_axis=self._channel_axis,
                region=None if whole else region,
                image_normalisation=self._normalisation,
                tile_size=settings.tile_size,
                overlap=min(32, settings.tile_size // 4),
                batch_size=1,
                precision="auto",
                should_stop=settings.stop.is_set,
            )
        except InterruptedError:
            return None
        y0, y1, x0, x1 = region
        labels, certainty = apply_threshold(compact, 0.0), uncertainty(compact)
        # Only the same region compares weights with weights: another region sees other context.
        changed = (
            float(np.mean(self._labels[y0:y1, x0:x1] != labels)) if region == self._last_region else math.nan
        )
        self._labels[y0:y1, x0:x1] = labels
        self._uncertainty[y0:y1, x0:x1] = certainty
        self._last_region = region
        # Copies: the GUI thread shows them while this thread writes the next preview.
        return Preview(
            self._labels.copy(),
            self._uncertainty.copy(),
            index,
            region,
            changed,
            float(np.mean(certainty > UNCERTAIN)),
        )
