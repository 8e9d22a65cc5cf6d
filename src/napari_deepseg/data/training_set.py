"""The pairs a run trains on: private copies, per-image normalisation, the train / validation
split and the patch sampler. Labels can be replaced while training runs (the user keeps painting).

A large or lazy image (a slide, a dask / zarr / memory-mapped array: see
:func:`.regions.trains_from_regions`) is not copied whole: only the boxes around its strokes are
read (:mod:`.regions`), each a sub-image with the whole image's normalisation that holds the labels
of its region's core alone (every labelled pixel is trained or held out once).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..config import TrainingConfig
from .normalisation import Normalisation, compute_normalisation, finite_sample
from .pairs import (
    NO_LABELLED_PIXEL,
    ImageSlices,
    check_labels,
    check_pair_shapes,
    check_training_pair,
    labelled_slices,
    pair_slices,
    validate_label_set,
)
from .regions import Box, assemble, read_labels, scan_labels, trains_from_regions
from .sampling import PatchSampler, validation_crops
from .split import BLOCK_SIZE, MIN_LABELLED_FOR_VALIDATION, block_uniforms
from .split import _expand as expand_blocks
from .split import _keep_every_class_trained as keep_every_class_trained


@dataclass
class _Part:
    """A labelled sub-image: a whole slice, or a box of a large one."""

    key: tuple[int, int]  # (pair, slice): what the split hashes
    origin: tuple[int, int]  # (top, left) in the slice, on the split's block grid
    slice_shape: tuple[int, int]
    labels: np.ndarray  # int64 (h, w)
    network_input: np.ndarray  # float32 (C, h, w)


@dataclass
class _Pair:
    """An image copied whole."""

    slices: np.ndarray  # (S, C, H, W) view of the private image copy, original dtype
    labels: np.ndarray  # (S, H, W) int64, private
    labels_shape: tuple[int, ...]  # as the caller passed them
    normalisation: Normalisation  # this image's bounds
    normalised: dict[int, np.ndarray] = field(default_factory=dict)  # slice -> float32 (C, H, W)

    @property
    def channels(self) -> int:
        return int(self.slices.shape[1])

    def network_input(self, s: int) -> np.ndarray:
        if s not in self.normalised:  # a slice becomes needed when it is first painted
            self.normalised[s] = self.normalisation.apply(self.slices[s])
        return self.normalised[s]

    def label_arrays(self) -> list[np.ndarray]:
        return [self.labels]

    def pooled(self) -> list[np.ndarray]:
        """The labelled slices, for the dataset-wide bounds."""
        return [self.slices[s] for s in labelled_slices(self.labels)]

    def parts(self, index: int) -> list[_Part]:
        shape = (int(self.labels.shape[1]), int(self.labels.shape[2]))
        return [
            _Part((index, int(s)), (0, 0), shape, self.labels[s], self.network_input(int(s)))
            for s in labelled_slices(self.labels)
        ]

    def prepare(self, labels: Any) -> tuple[np.ndarray, int]:
        """A private copy of new labels (checked) and their largest class."""
        new = np.asarray(labels)
        check_labels(new)
        top = int(new.max()) if new.size else 0
        return np.array(new, dtype=np.int64, copy=True).reshape(self.labels.shape), top

    def apply(self, update: np.ndarray) -> None:
        self.labels = update

    def counts(self, num_classes: int, update: np.ndarray | None = None) -> np.ndarray:
        """Labelled pixels per class 0..K of ``update`` (``None``: of the current labels)."""
        return _class_counts(self.labels if update is None else update, num_classes)


@dataclass
class _Regions:
    """The boxes around the strokes of a large image and their labels (an update, or the current)."""

    boxes: list[Box]
    labels: list[np.ndarray]  # int64, one per box: the labels of its core, 0 elsewhere


class _RegionPair:
    """A large image read only around its strokes: one sub-image per box of :mod:`.regions`."""

    def __init__(self, image: Any, labels: Any, axis: int | None, margin: int) -> None:
        self.slices = ImageSlices(image, axis)
        self.labels_shape = tuple(int(n) for n in labels.shape)
        self.margin = margin
        self.normalisation: Normalisation = None  # type: ignore[assignment]  # set by the TrainingSet
        self.regions = _Regions([], [])
        self.raw: dict[Box, np.ndarray] = {}  # box -> image crop, original dtype
        self.normalised: dict[Box, np.ndarray] = {}
        regions, _ = self.prepare(labels)
        if not regions.boxes:
            raise ValueError(NO_LABELLED_PIXEL)
        self.apply(regions)  # the crops are read (copied) now

    @property
    def channels(self) -> int:
        return int(self.slices.shape[1])

    def label_arrays(self) -> list[np.ndarray]:
        return self.regions.labels

    def pooled(self) -> list[np.ndarray]:
        """The labelled slices on the grid the image's own bounds are measured on."""
        sample = finite_sample(self.slices)
        return [sample[s] for s in sorted({b.slice_index for b in self.regions.boxes})]

    def parts(self, index: int) -> list[_Part]:
        shape = (self.labels_shape[-2], self.labels_shape[-1])
        return [
            _Part((index, b.slice_index), (b.top, b.left), shape, lab, self._network_input(b))
            for b, lab in zip(self.regions.boxes, self.regions.labels)
            if lab.any()
        ]

    def _network_input(self, box: Box) -> np.ndarray:
        if box not in self.normalised:
            self.normalised[box] = self.normalisation.apply(self.raw[box])
        return self.normalised[box]

    def prepare(self, labels: Any) -> tuple[_Regions, int]:
        """The boxes of new labels (read in bands), their labels and the largest class."""
        labels = labels if hasattr(labels, "shape") and hasattr(labels, "dtype") else np.asarray(labels)
        scan = scan_labels(labels)
        found = scan.regions(self.margin)
        boxes, cores = [r.box for r in found], [r.core for r in found]
        return _Regions(boxes, read_labels(labels, boxes, cores)), scan.top

    def apply(self, update: _Regions) -> None:
        """Take new boxes: crops already read are kept or copied from, only new pixels are read."""
        raw = {b: self.raw[b] if b in self.raw else assemble(self.slices, b, self.raw) for b in update.boxes}
        self.normalised = {b: x for b, x in self.normalised.items() if b in raw}
        self.raw, self.regions = raw, update

    def counts(self, num_classes: int, update: _Regions | None = None) -> np.ndarray:
        total = np.zeros(num_classes + 1, np.int64)
        for lab in (self.regions if update is None else update).labels:
            total += _class_counts(lab, num_classes)
        return total


def _open_pair(image: Any, labels: Any, channel_axis: int | None, margin: int) -> _Pair | _RegionPair:
    """Check a pair and copy it whole, or read its stroke regions when it is large or lazy."""
    shaped = all(hasattr(a, "shape") and hasattr(a, "dtype") for a in (image, labels))
    if shaped and trains_from_regions(image, int(np.prod(labels.shape))):
        axis = check_pair_shapes(image, labels, channel_axis=channel_axis)
        return _RegionPair(image, labels, axis, margin)
    image, labels, axis = check_training_pair(image, labels, channel_axis=channel_axis)
    slices = pair_slices(np.array(image, copy=True), axis)
    flat = np.array(labels, dtype=np.int64, copy=True).reshape(-1, *labels.shape[-2:])
    return _Pair(slices, flat, tuple(labels.shape), None)  # type: ignore[arg-type]


class TrainingSet:
    """Images with sparse labels, ready to sample patches from.

    Parameters
    ----------
    images, labels, channel_axis
        As :class:`napari_deepseg.Trainer` takes them. Both are copied here; later changes to
        the caller's arrays do not reach the run.
    config
        The run's settings: patch size, labelled-patch share, validation share, seed and
        normalisation mode are read from it.
    normalisation
        Use these bounds (continuing a model); ``None`` measures them in ``config.normalisation``.
    num_classes
        The classes of a model being continued; ``None`` takes the largest painted class.
    """

    def __init__(
        self,
        images: Any,
        labels: Any,
        config: TrainingConfig,
        *,
        channel_axis: int | None = None,
        normalisation: Normalisation | None = None,
        num_classes: int | None = None,
    ) -> None:
        rng = np.random.default_rng(config.seed)
        image_list, label_list = _as_pairs(images, labels)
        self._pairs: list[_Pair | _RegionPair] = []
        for index, (image, label) in enumerate(zip(image_list, label_list)):
            try:
                # A margin of one patch: every patch and validation crop around a stroke fits.
                self._pairs.append(_open_pair(image, label, channel_axis, config.patch_size))
            except (ValueError, TypeError) as err:
                raise type(err)(f"pair {index + 1}: {err}" if len(image_list) > 1 else str(err)) from None
        channels = {p.channels for p in self._pairs}
        if len(channels) > 1:
            raise ValueError(f"all images must have the same number of channels, got {sorted(channels)}")
        self.num_classes = validate_label_set(
            [lab for p in self._pairs for lab in p.label_arrays()], num_classes=num_classes
        )
        if normalisation is None:
            pooled_bounds = compute_normalisation([x for p in self._pairs for x in p.pooled()], rng=rng)
            normalisation = dataclasses.replace(pooled_bounds, mode=config.normalisation)
        elif normalisation.in_channels != self.in_channels:
            raise ValueError(
                f"the model expects {normalisation.in_channels} channel(s) but the images have "
                f"{self.in_channels}"
            )
        self.normalisation = normalisation
        for pair in self._pairs:
            pair.normalisation = normalisation.for_image(pair.slices)
            if isinstance(pair.slices, ImageSlices):
                pair.slices.forget()
        self.patch_size, self.labelled_fraction = config.patch_size, config.labelled_patch_fraction
        self.validation_fraction, self._seed, self._rng = config.validation_fraction, config.seed, rng
        self._lock = threading.Lock()
        self._pending: dict[int, Any] = {}
        self._held_grids: dict[tuple[int, int], np.ndarray] = {}  # (pair, slice) -> held-out blocks
        # Per pair, counted once per change: a bincount over every pixel each iteration cost
        # 70 ms on 267 tiles.
        self._counts = {i: p.counts(self.num_classes) for i, p in enumerate(self._pairs)}
        self.version = 0  # counts accepted label updates that reached the sampler
        # Why updates that apply_updates could not bring in were dropped, oldest first.
        self.rejected_updates: list[str] = []
        self._rebuild()

    @property
    def in_channels(self) -> int:
        return self._pairs[0].channels

    @property
    def num_pairs(self) -> int:
        return len(self._pairs)

    # ------------------------------------------------------------------ updates
    def update_labels(self, labels: Any, pair: int = 0) -> None:
        """Queue new labels for ``pair`` (thread-safe); :meth:`apply_updates` brings them in.

        Raises
        ------
        ValueError, TypeError
            For a pair index out of range, another shape, non-integer or negative labels, a
            class the network was not built for, or no labelled pixel left in any pair. The
            current labels are kept.
        """
        index_ok = not isinstance(pair, bool) and isinstance(pair, (int, np.integer))
        if not index_ok or not 0 <= pair < self.num_pairs:
            raise ValueError(f"pair must be an index in 0..{self.num_pairs - 1}, got {pair!r}")
        target = self._pairs[pair]
        shape = tuple(np.shape(labels))
        if shape != target.labels_shape:
            raise ValueError(f"labels of pair {pair} must keep the shape {target.labels_shape}; got {shape}")
        update, top = target.prepare(labels)
        if top > self.num_classes:
            raise ValueError(
                f"class {top} was not painted when training started, so the network has no "
                f"output for it (classes 1..{self.num_classes}); Stop and Start again to "
                "train with the new class"
            )
        counts = target.counts(self.num_classes, update)  # type: ignore[arg-type]
        with self._lock:
            others = any(self._counts[i][1:].any() for i in range(self.num_pairs) if i != pair)
            if not others and not counts[1:].any():
                raise ValueError(
                    "these labels would leave no painted pixel to train on; the last strokes are kept"
                )
            self._pending[pair] = update
            self._counts[pair] = counts

    def apply_updates(self) -> bool:
        """Bring queued labels into the split and the sampler; whether anything changed.

        An update that cannot be brought in (a large image with NaN or infinite values, or a
        read that fails, near a new stroke) is dropped: its pair keeps the labels it had, the
        other pairs' updates are applied, and the reason is appended to :attr:`rejected_updates`.
        """
        with self._lock:
            pending, self._pending = self._pending, {}
        applied = 0
        for index, update in pending.items():  # outside the lock: a large pair may read image crops
            pair = self._pairs[index]
            try:
                pair.apply(update)
            except (ValueError, TypeError, OSError) as err:
                kept = pair.counts(self.num_classes)
                message = f"pair {index}: " if self.num_pairs > 1 else ""
                message += f"the labels painted during the run were not taken: {err}. Training goes on "
                message += "with the strokes it had"
                with self._lock:
                    if index not in self._pending:  # a later update has its own counts
                        self._counts[index] = kept
                    self.rejected_updates.append(message)
                continue
            applied += 1
        if not applied:
            return False
        self._rebuild()
        self.version += 1
        return True

    # ------------------------------------------------------------------ state
    @property
    def painted_pixels(self) -> tuple[int, ...]:
        """Labelled pixels per class 1..K, training and validation, queued updates included."""
        with self._lock:
            total = np.sum(list(self._counts.values()), axis=0)
        return tuple(int(n) for n in total[1:])

    def _rebuild(self) -> None:
        parts = [part for index, pair in enumerate(self._pairs) for part in pair.parts(index)]
        labels, inputs = [p.labels for p in parts], [p.network_input for p in parts]
        masks = self._validation_masks(parts)
        train_x, train_y, val_x, val_y = [], [], [], []
        for x, lab, held in zip(inputs, labels, masks):
            if held.any():
                val_x.append(x)
                val_y.append(np.where(held, lab, 0))
            train = np.where(held, 0, lab) if held.any() else lab
            if train.any():
                train_x.append(x)
                train_y.append(train)
        self.train_labels = train_y
        self.sampler = PatchSampler(
            train_x,
            train_y,
            patch_size=self.patch_size,
            labelled_fraction=self.labelled_fraction,
            rng=self._rng,
        )
        self.validation = validation_crops(val_x, val_y, patch_size=self.patch_size) if val_x else []
        self.training_pixels = int(sum(int(np.count_nonzero(y)) for y in train_y))
        self.validation_pixels = int(sum(int(np.count_nonzero(y)) for _, y in self.validation))

    def _validation_masks(self, parts: list[_Part]) -> list[np.ndarray]:
        """:func:`.split.validation_masks` for sub-images: a box's blocks are its slice's blocks, so a
        stroke stays on its side of the split when boxes grow, merge or split."""
        labels = [p.labels for p in parts]
        painted = sum(int(np.count_nonzero(lab)) for lab in labels)
        if self.validation_fraction == 0 or painted < MIN_LABELLED_FOR_VALIDATION:
            return [np.zeros(lab.shape, bool) for lab in labels]
        held = []
        for part in parts:
            grid = self._held_grids.get(part.key)
            if grid is None:
                rows, cols = (-(-n // BLOCK_SIZE) for n in part.slice_shape)
                grid = block_uniforms(self._seed, *part.key, rows, cols) < self.validation_fraction
                self._held_grids[part.key] = grid
            top, left = (n // BLOCK_SIZE for n in part.origin)
            rows, cols = (-(-n // BLOCK_SIZE) for n in part.labels.shape)
            held.append(grid[top : top + rows, left : left + cols].copy())
        keep_every_class_trained(labels, held, BLOCK_SIZE)
        return [expand_blocks(blocks, BLOCK_SIZE, lab.shape) & (lab > 0) for lab, blocks in zip(labels, held)]


def _class_counts(labels: np.ndarray, num_classes: int) -> np.ndarray:
    return np.bincount(labels.reshape(-1), minlength=num_classes + 1)[: num_classes + 1]


def _as_pairs(images: Any, labels: Any) -> tuple[Sequence[Any], Sequence[Any]]:
    if isinstance(images, (list, tuple)) != isinstance(labels, (list, tuple)):
        raise TypeError("pass one image and one labels array, or two sequences of the same length")
    if isinstance(images, (list, tuple)):
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels arrays")
        if not images:
            raise ValueError("no images were given")
        return list(images), list(labels)
    return [images], [labels]
