"""The pairs a run trains on: private copies, per-image normalisation, the train / validation
split and the patch sampler. Labels can be replaced while training runs (the user keeps painting).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..config import TrainingConfig
from .normalisation import Normalisation, compute_normalisation
from .pairs import check_labels, check_training_pair, labelled_slices, pair_slices, validate_label_set
from .sampling import PatchSampler, validation_crops
from .split import validation_masks


@dataclass
class _Pair:
    slices: np.ndarray  # (S, C, H, W) view of the private image copy, original dtype
    labels: np.ndarray  # (S, H, W) int64, private
    labels_shape: tuple[int, ...]  # as the caller passed them
    normalisation: Normalisation  # this image's bounds
    normalised: dict[int, np.ndarray] = field(default_factory=dict)  # slice -> float32 (C, H, W)

    def network_input(self, s: int) -> np.ndarray:
        if s not in self.normalised:  # a slice becomes needed when it is first painted
            self.normalised[s] = self.normalisation.apply(self.slices[s])
        return self.normalised[s]


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
        self._pairs: list[_Pair] = []
        pooled = []
        for index, (image, label) in enumerate(zip(image_list, label_list)):
            try:
                image, label, axis = check_training_pair(image, label, channel_axis=channel_axis)
            except (ValueError, TypeError) as err:
                raise type(err)(f"pair {index + 1}: {err}" if len(image_list) > 1 else str(err)) from None
            slices = pair_slices(np.array(image, copy=True), axis)
            flat = np.array(label, dtype=np.int64, copy=True).reshape(-1, *label.shape[-2:])
            self._pairs.append(_Pair(slices, flat, tuple(label.shape), normalisation))  # type: ignore[arg-type]
            pooled += [slices[s] for s in labelled_slices(flat)]
        channels = {p.slices.shape[1] for p in self._pairs}
        if len(channels) > 1:
            raise ValueError(f"all images must have the same number of channels, got {sorted(channels)}")
        self.num_classes = validate_label_set([p.labels for p in self._pairs], num_classes=num_classes)
        if normalisation is None:
            pooled_bounds = compute_normalisation(pooled, rng=rng)
            normalisation = dataclasses.replace(pooled_bounds, mode=config.normalisation)
        elif normalisation.in_channels != self.in_channels:
            raise ValueError(
                f"the model expects {normalisation.in_channels} channel(s) but the images have "
                f"{self.in_channels}"
            )
        self.normalisation = normalisation
        for pair in self._pairs:
            pair.normalisation = normalisation.for_image(pair.slices)
        self.patch_size, self.labelled_fraction = config.patch_size, config.labelled_patch_fraction
        self.validation_fraction, self._seed, self._rng = config.validation_fraction, config.seed, rng
        self._lock = threading.Lock()
        self._pending: dict[int, np.ndarray] = {}
        # Per pair, counted once per change: a bincount over every pixel each iteration cost
        # 70 ms on 267 tiles.
        self._counts = {i: _class_counts(p.labels, self.num_classes) for i, p in enumerate(self._pairs)}
        self.version = 0  # counts accepted label updates that reached the sampler
        self._rebuild()

    @property
    def in_channels(self) -> int:
        return int(self._pairs[0].slices.shape[1])

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
        new = np.asarray(labels)
        target = self._pairs[pair]
        if tuple(new.shape) != target.labels_shape:
            raise ValueError(
                f"labels of pair {pair} must keep the shape {target.labels_shape}; got {tuple(new.shape)}"
            )
        check_labels(new)
        top = int(new.max()) if new.size else 0
        if top > self.num_classes:
            raise ValueError(
                f"class {top} was not painted when training started, so the network has no "
                f"output for it (classes 1..{self.num_classes}); Stop and Start again to "
                "train with the new class"
            )
        copy = np.array(new, dtype=np.int64, copy=True).reshape(target.labels.shape)
        with self._lock:
            others = any(
                np.any(self._pending.get(i, p.labels)) for i, p in enumerate(self._pairs) if i != pair
            )
            if not others and not copy.any():
                raise ValueError(
                    "these labels would leave no painted pixel to train on; the last strokes are kept"
                )
            self._pending[pair] = copy
            self._counts[pair] = _class_counts(copy, self.num_classes)

    def apply_updates(self) -> bool:
        """Bring queued labels into the split and the sampler; whether anything changed."""
        with self._lock:  # taken and stored at once, so update_labels never sees stale labels
            pending, self._pending = self._pending, {}
            for index, labels in pending.items():
                self._pairs[index].labels = labels
        if not pending:
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
        labels, keys, inputs = [], [], []
        for index, pair in enumerate(self._pairs):
            for s in labelled_slices(pair.labels):
                labels.append(pair.labels[s])
                keys.append((index, int(s)))
                inputs.append(pair.network_input(int(s)))
        masks = validation_masks(labels, keys, fraction=self.validation_fraction, seed=self._seed)
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
