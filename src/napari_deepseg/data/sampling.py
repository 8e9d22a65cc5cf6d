"""Patch sampling from images with sparse labels, and fixed crops of the validation labels."""

from __future__ import annotations

import numpy as np


def pad_to(image: np.ndarray, labels: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pad a ``(C, H, W)`` image and ``(H, W)`` labels so both spatial sides are >= ``size``.

    The image is reflected along each axis longer than one pixel, else padded with 0; labels
    are padded with 0 (unlabelled) so padding never adds supervision. Returns the inputs
    themselves when no padding is needed.
    """
    h, w = labels.shape
    if h >= size and w >= size:
        return image, labels
    widths = [(0, 0), (0, 0)]
    for axis, n in enumerate((h, w)):
        extra = max(size - n, 0)
        widths[axis] = (extra // 2, extra - extra // 2)
        if extra:
            pad = [(0, 0), (0, 0), (0, 0)]
            pad[axis + 1] = widths[axis]
            image = np.pad(image, pad, mode="reflect" if n > 1 else "constant")
    labels = np.pad(labels, widths, mode="constant")
    return image, labels


class PatchSampler:
    """Draws random training patches, most of them centred near a labelled pixel.

    Parameters
    ----------
    images
        Normalised float32 ``(C, H, W)`` slices, all with the same ``C``.
    labels
        int64 ``(H, W)`` labels (0 = unlabelled), one per image.
    patch_size
        Side ``P`` of the square patches; smaller slices are padded.
    labelled_fraction
        Probability that a patch is centred (with a jitter of up to ``P // 4``) on a
        labelled pixel; the others are centred on a pixel drawn uniformly over all slices.
    rng
        Source of all randomness; the same seed gives the same patches.
    class_balanced_centres
        Pick the centre's class uniformly among the present classes first, so rare classes
        are seen as often as common ones; otherwise every labelled pixel is equally likely.
    """

    def __init__(
        self,
        images: list[np.ndarray],
        labels: list[np.ndarray],
        *,
        patch_size: int,
        labelled_fraction: float,
        rng: np.random.Generator,
        class_balanced_centres: bool = True,
    ) -> None:
        if not images or len(images) != len(labels):
            raise ValueError(
                f"need one label slice per image slice; got {len(images)} images and {len(labels)} labels"
            )
        if patch_size < 1:
            raise ValueError(f"patch_size must be >= 1, got {patch_size}")
        if not 0 <= labelled_fraction <= 1:
            raise ValueError(f"labelled_fraction must be in [0, 1], got {labelled_fraction}")
        channels: int = images[0].shape[0]
        self._images: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []
        for image, lab in zip(images, labels):
            if image.ndim != 3 or lab.shape != image.shape[1:] or image.shape[0] != channels:
                raise ValueError(
                    f"expected (C, H, W) images with matching (H, W) labels and C = {channels}; "
                    f"got {image.shape} and {lab.shape}"
                )
            image, lab = pad_to(image, lab, patch_size)
            self._images.append(image)
            self._labels.append(lab)
        self.patch_size = patch_size
        self.labelled_fraction = float(labelled_fraction)
        self.class_balanced_centres = class_balanced_centres
        self._rng = rng
        self._channels = channels
        sizes = np.array([lab.size for lab in self._labels], dtype=np.int64)
        self._offsets = np.concatenate([[0], np.cumsum(sizes)])
        # Global flat indices (over all padded slices) of the labelled pixels, per class.
        flat = [np.flatnonzero(lab) + off for lab, off in zip(self._labels, self._offsets)]
        where = np.concatenate(flat)
        classes = np.concatenate(
            [lab.ravel()[f - off] for lab, f, off in zip(self._labels, flat, self._offsets)]
        )
        order = np.argsort(classes, kind="stable")
        self.classes, starts = np.unique(classes[order], return_index=True)
        self._all_labelled = where
        self._by_class = np.split(where[order], starts[1:]) if len(where) else []
        if not len(where) and labelled_fraction > 0:
            raise ValueError("labels contain no labelled pixel to centre patches on")

    @property
    def in_channels(self) -> int:
        return self._channels

    def sample(self, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """Draw ``batch_size`` patches.

        Returns
        -------
        images, labels
            float32 ``(B, C, P, P)`` and int64 ``(B, P, P)`` new arrays.
        """
        rng, p = self._rng, self.patch_size
        labelled = rng.random(batch_size) < self.labelled_fraction
        centres = rng.integers(0, self._offsets[-1], size=batch_size)  # uniform over all pixels
        n_labelled = int(labelled.sum())
        if n_labelled:
            if self.class_balanced_centres:
                pools = [self._by_class[k] for k in rng.integers(0, len(self._by_class), size=n_labelled)]
                picks = np.array([pool[rng.integers(0, len(pool))] for pool in pools], dtype=np.int64)
            else:
                picks = self._all_labelled[rng.integers(0, len(self._all_labelled), size=n_labelled)]
            centres[labelled] = picks
        jitter = rng.integers(-(p // 4), p // 4 + 1, size=(batch_size, 2))
        jitter[~labelled] = 0
        slice_idx = np.searchsorted(self._offsets, centres, side="right") - 1
        out_images = np.empty((batch_size, self._channels, p, p), dtype=np.float32)
        out_labels = np.empty((batch_size, p, p), dtype=np.int64)
        for b in range(batch_size):
            lab = self._labels[slice_idx[b]]
            h, w = lab.shape
            y, x = divmod(int(centres[b] - self._offsets[slice_idx[b]]), w)
            top = min(max(y + int(jitter[b, 0]) - p // 2, 0), h - p)
            left = min(max(x + int(jitter[b, 1]) - p // 2, 0), w - p)
            out_images[b] = self._images[slice_idx[b]][:, top : top + p, left : left + p]
            out_labels[b] = lab[top : top + p, left : left + p]
        return out_images, out_labels


def validation_crops(
    val_images: list[np.ndarray], val_labels: list[np.ndarray], *, patch_size: int, max_crops: int = 16
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Fixed crops covering the validation labels, for cheap, deterministic IoU / Dice.

    Crops are placed greedily: the first uncovered labelled pixel in raster order gives the
    crop's top row and the crop is centred horizontally on the uncovered labels below it.
    Slices smaller than the patch are padded (labels with 0) so every crop is ``(C, P, P)``.
    When more than ``max_crops`` crops are needed, those covering the most labelled pixels win.

    Returns
    -------
    list of (image ``(C, P, P)``, labels ``(P, P)``)
        New arrays (copies).
    """
    p = patch_size
    found: list[tuple[int, int, int, np.ndarray, np.ndarray]] = []  # (-covered, order, slice, image, labels)
    for s, (image, lab) in enumerate(zip(val_images, val_labels)):
        image, lab = pad_to(image, lab, p)
        h, w = lab.shape
        ys, xs = np.nonzero(lab)
        uncovered = np.ones(len(ys), dtype=bool)
        for _ in range(4 * max_crops):  # then keep the best max_crops over all slices
            if not uncovered.any():
                break
            first = int(np.argmax(uncovered))  # nonzero() is in raster order
            y0, x0 = int(ys[first]), int(xs[first])
            near = uncovered & (ys < y0 + p) & (np.abs(xs - x0) < p)
            x_mid = (int(xs[near].min()) + int(xs[near].max())) // 2
            left = min(max(x_mid - p // 2, x0 - p + 1, 0), x0, w - p)
            top = min(y0, h - p)
            inside = (ys >= top) & (ys < top + p) & (xs >= left) & (xs < left + p)
            covered = int((inside & uncovered).sum())
            uncovered &= ~inside
            found.append(
                (
                    -covered,
                    len(found),
                    s,
                    image[:, top : top + p, left : left + p].copy(),
                    lab[top : top + p, left : left + p].copy(),
                )
            )
    found.sort(key=lambda item: (item[0], item[1]))
    return [(image, lab) for _, _, _, image, lab in found[:max_crops]]
