"""The train / validation split of painted pixels, stable while the user keeps painting.

Whole ``block_size`` blocks of the image are held out, chosen by a hash of (seed, pair, slice,
block): a stroke painted later into a held-out block is validation, one painted elsewhere is
training, and what was already split stays where it was, except when the labelled total first
reaches 200 pixels (validation starts) or a class that had to be kept whole in training gets
pixels elsewhere (its blocks are held out again). Scores on held-out blocks measure how the
network does on strokes it never trained on, a block away from most training strokes.
"""

from __future__ import annotations

from typing import cast

import numpy as np

MIN_LABELLED_FOR_VALIDATION = 200
BLOCK_SIZE = 64
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a well-spread 64-bit hash of each entry."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        mixed: np.ndarray = x ^ (x >> np.uint64(31))
    return mixed


def block_uniforms(seed: int, pair: int, slice_index: int, rows: int, cols: int) -> np.ndarray:
    """A uniform [0, 1) number per block of a ``rows x cols`` block grid, fixed by its keys."""
    h = np.uint64(seed & 0xFFFFFFFFFFFFFFFF)
    with np.errstate(over="ignore"):
        for key in (pair, slice_index):
            h = _mix(np.asarray(h ^ np.uint64(key) + _GOLDEN, dtype=np.uint64))
        by, bx = np.meshgrid(
            np.arange(rows, dtype=np.uint64), np.arange(cols, dtype=np.uint64), indexing="ij"
        )
        x = _mix(_mix(h ^ (by + _GOLDEN)) ^ (bx + _GOLDEN))
    uniforms: np.ndarray = (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    return uniforms


def validation_masks(
    labels: list[np.ndarray],
    keys: list[tuple[int, int]],
    *,
    fraction: float,
    seed: int,
    block_size: int = BLOCK_SIZE,
) -> list[np.ndarray]:
    """Which labelled pixels of each ``(H, W)`` label slice are held out for validation.

    Parameters
    ----------
    labels
        Label slices (0 = unlabelled).
    keys
        ``(pair, slice)`` of each label slice: what the hash of a block depends on, besides ``seed``.
    fraction
        Share of blocks held out, in [0, 1).

    Returns
    -------
    list of bool arrays
        True where a labelled pixel is held out. All False with ``fraction == 0`` or fewer than
        200 labelled pixels. A class that would lose all its training pixels keeps the blocks it
        is painted in, so every painted class is trained on.
    """
    if not 0 <= fraction < 1:
        raise ValueError(f"validation fraction must be in [0, 1), got {fraction}")
    if len(labels) != len(keys):
        raise ValueError(f"need one key per label slice; got {len(labels)} and {len(keys)}")
    if fraction == 0 or sum(int(np.count_nonzero(lab)) for lab in labels) < MIN_LABELLED_FOR_VALIDATION:
        return [np.zeros(lab.shape, bool) for lab in labels]
    held = [
        _held_blocks(lab, key, fraction=fraction, seed=seed, block_size=block_size)
        for lab, key in zip(labels, keys)
    ]
    _keep_every_class_trained(labels, held, block_size)
    return [_expand(blocks, block_size, lab.shape) & (lab > 0) for lab, blocks in zip(labels, held)]


def _held_blocks(
    labels: np.ndarray, key: tuple[int, int], *, fraction: float, seed: int, block_size: int
) -> np.ndarray:
    """The blocks of one slice that its hash holds out."""
    rows, cols = -(-labels.shape[0] // block_size), -(-labels.shape[1] // block_size)
    return block_uniforms(seed, *key, rows, cols) < fraction


def _keep_every_class_trained(labels: list[np.ndarray], held: list[np.ndarray], block_size: int) -> None:
    """Release (in place) the blocks painted with a class that has no pixel outside the held-out
    blocks, one class after the other, so every painted class is trained on."""
    classes = np.unique(np.concatenate([np.unique(lab[lab > 0]) for lab in labels]))
    for c in classes:
        trained = (
            np.any((lab == c) & ~_expand(blocks, block_size, lab.shape)) for lab, blocks in zip(labels, held)
        )
        if any(trained):
            continue
        for lab, blocks in zip(labels, held):
            blocks &= ~_block_any(lab == c, block_size)


def _expand(blocks: np.ndarray, block_size: int, shape: tuple[int, ...]) -> np.ndarray:
    return np.repeat(np.repeat(blocks, block_size, 0), block_size, 1)[: shape[0], : shape[1]]


def _block_any(mask: np.ndarray, block_size: int) -> np.ndarray:
    rows, cols = -(-mask.shape[0] // block_size), -(-mask.shape[1] // block_size)
    padded = np.zeros((rows * block_size, cols * block_size), bool)
    padded[: mask.shape[0], : mask.shape[1]] = mask
    # numpy's stubs type any(axis=...) as a scalar or an array: over 2 of 4 axes it is (rows, cols).
    return cast(np.ndarray, padded.reshape(rows, block_size, cols, block_size).any(axis=(1, 3)))
