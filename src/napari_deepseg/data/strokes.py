"""Simulated brush strokes: what a person paints on an image, derived from a dense mask.

Used to make the bundled sample labels and by the accuracy benchmark. Strokes are thin
random walks kept away from class boundaries, as careful annotators paint.
"""

from __future__ import annotations

import numpy as np


def simulate_strokes_multiclass(
    class_map: np.ndarray,
    *,
    rng: np.random.Generator,
    pixel_fraction: float = 0.01,
    stroke_width: int = 3,
    boundary_margin: int = 3,
    max_stroke_length: int = 30,
) -> np.ndarray:
    """Sparse labels from a dense class map with values ``0..K-1``.

    Returns uint8 labels where class ``c`` of the map becomes label ``c + 1`` on stroke pixels
    and everything else is 0 (unlabelled). Each class receives about
    ``pixel_fraction / K`` of the image's pixels, in strokes that stay at least
    ``boundary_margin`` pixels inside their class region.
    """
    from scipy import ndimage  # only needed here: sample-data making and benchmarks

    class_map = np.asarray(class_map)
    if class_map.ndim != 2:
        raise ValueError(f"class_map must be 2D, got shape {class_map.shape}")
    radius = stroke_width // 2
    disk = np.add.outer(np.arange(-radius, radius + 1) ** 2, np.arange(-radius, radius + 1) ** 2) <= radius**2
    classes = np.unique(class_map)
    target = pixel_fraction * class_map.size / len(classes)
    labels = np.zeros(class_map.shape, np.uint8)
    for c in classes:
        inside = ndimage.distance_transform_edt(class_map == c) > boundary_margin + radius
        candidates = np.argwhere(inside)
        painted = 0
        attempts = 0
        while painted < target and len(candidates) and attempts < 500:
            attempts += 1
            # Best of a few random starts, farthest from this class's earlier strokes: people spread
            # their strokes over the image rather than painting one corner.
            starts = candidates[rng.integers(len(candidates), size=8)]
            if painted:
                distance = ndimage.distance_transform_edt(labels != c + 1)
                start = starts[np.argmax(distance[tuple(np.transpose(starts))])]
            else:
                start = starts[0]
            path = random_walk(start, inside, rng, max_stroke_length)
            stroke = np.zeros(class_map.shape, bool)
            stroke[tuple(np.transpose(path))] = True
            stroke = ndimage.binary_dilation(stroke, structure=disk) & (class_map == c)
            new = stroke & (labels == 0)
            labels[new] = c + 1
            painted += int(new.sum())
    return labels


def simulate_strokes(
    mask: np.ndarray,
    *,
    rng: np.random.Generator,
    pixel_fraction: float = 0.01,
    stroke_width: int = 3,
    boundary_margin: int = 3,
) -> np.ndarray:
    """Strokes for a foreground mask: 1 = background, 2 = foreground (e.g. nucleus), 0 unlabelled."""
    return simulate_strokes_multiclass(
        np.asarray(mask, bool).astype(np.uint8),
        rng=rng,
        pixel_fraction=pixel_fraction,
        stroke_width=stroke_width,
        boundary_margin=boundary_margin,
    )


def random_walk(
    start: np.ndarray, allowed: np.ndarray, rng: np.random.Generator, max_length: int
) -> np.ndarray:
    """A smooth random walk from ``start`` (row, column) that stops where ``allowed`` ends; the
    path as an (n, 2) array of pixels, ``start`` first."""
    angle = rng.uniform(0, 2 * np.pi)
    position = start.astype(float)
    path = [start]
    for _ in range(max_length):
        angle += rng.normal(0, 0.3)
        position = position + (np.sin(angle), np.cos(angle))
        pixel = np.rint(position).astype(int)
        inside = 0 <= pixel[0] < allowed.shape[0] and 0 <= pixel[1] < allowed.shape[1]
        if not inside or not allowed[tuple(pixel)]:
            break
        path.append(pixel)
    return np.asarray(path)
