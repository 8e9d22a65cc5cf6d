"""Where the network is unsure, and so where a stroke teaches it the most."""

from __future__ import annotations

import numpy as np

from .prediction import CompactProbabilities


def uncertainty(probabilities: np.ndarray | CompactProbabilities) -> np.ndarray:
    """Per-pixel uncertainty in [0, 1]: 0 where one class has probability 1, 1 where all K
    classes are equally likely.

    It is the normalised least confidence ``(1 - max_k p_k) * K / (K - 1)``: it needs only the
    most probable class' probability, so it is the same on float probabilities and on the
    compact result that the Predict widget keeps (there at the compact result's 1/255 steps).

    Parameters
    ----------
    probabilities
        Float ``(K, ...)`` as returned by ``SegmentationModel.predict_proba``, or
        :class:`CompactProbabilities`.

    Returns
    -------
    float32 array of the spatial shape ``(...)``.
    """
    if isinstance(probabilities, CompactProbabilities):
        k = probabilities.num_classes
        top = probabilities.best_probability.astype(np.float32) / np.float32(255)
    else:
        probabilities = np.asarray(probabilities)
        if probabilities.ndim < 2 or probabilities.shape[0] < 1:
            raise ValueError(f"probabilities must have shape (K, ...), got {probabilities.shape}")
        if not np.issubdtype(probabilities.dtype, np.floating):
            raise TypeError(f"probabilities must be floating point, got {probabilities.dtype}")
        k = probabilities.shape[0]
        top = probabilities.max(axis=0).astype(np.float32)
    if k == 1:
        return np.zeros(top.shape, np.float32)
    out: np.ndarray = (np.float32(1) - top) * np.float32(k / (k - 1))
    return np.clip(out, 0, 1, out=out)


def suggest_next_region(
    uncertainty_map: np.ndarray, labels: np.ndarray | None = None, window: int = 64
) -> tuple[int, int] | None:
    """Centre ``(row, column)`` of the ``window x window`` region of a plane with the highest mean
    uncertainty that holds no stroke, or ``None`` when every region has one.

    Parameters
    ----------
    uncertainty_map
        ``(H, W)`` values from :func:`uncertainty`.
    labels
        ``(H, W)`` strokes of the plane (0 = unlabelled) or ``None``.
    window
        Side of the regions; clipped to the plane. Regions are laid on a grid of half a window.
    """
    u = np.asarray(uncertainty_map, dtype=np.float64)
    if u.ndim != 2:
        raise ValueError(f"uncertainty must be one plane (H, W), got shape {u.shape}")
    if labels is not None and np.shape(labels) != u.shape:
        raise ValueError(f"labels of shape {np.shape(labels)} do not match the uncertainty {u.shape}")
    h, w = u.shape
    wy, wx = min(window, h), min(window, w)
    # Summed-area tables give every window's sum in O(1).
    sums = np.pad(u.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    painted = np.zeros(u.shape) if labels is None else (np.asarray(labels) > 0).astype(np.float64)
    strokes = np.pad(painted.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    ys = np.unique(np.r_[np.arange(0, h - wy + 1, max(wy // 2, 1)), h - wy])
    xs = np.unique(np.r_[np.arange(0, w - wx + 1, max(wx // 2, 1)), w - wx])
    y0, x0 = np.meshgrid(ys, xs, indexing="ij")

    def window_sum(table: np.ndarray) -> np.ndarray:
        total: np.ndarray = table[y0 + wy, x0 + wx] - table[y0, x0 + wx] - table[y0 + wy, x0] + table[y0, x0]
        return total

    score = window_sum(sums)
    score[window_sum(strokes) > 0] = -np.inf
    if not np.isfinite(score).any():
        return None
    iy, ix = np.unravel_index(int(np.argmax(score)), score.shape)
    return int(y0[iy, ix] + wy // 2), int(x0[iy, ix] + wx // 2)
