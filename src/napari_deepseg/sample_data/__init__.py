"""Bundled sample tiles from the 2018 Data Science Bowl (CC0) with simulated stroke labels.

Labels: 1 = background, 2 = nucleus, 0 = unlabelled. The npe2 sample-data functions return
napari layer-data tuples without importing napari.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

_HERE = Path(__file__).parent
SAMPLES = ("fluorescence", "he")
CLASS_NAMES = ("background", "nucleus")


def _read(name: str) -> np.ndarray:
    import imageio.v3 as iio

    return np.asarray(iio.imread(_HERE / name))


def _check(sample: str) -> None:
    if sample not in SAMPLES:
        raise ValueError(f"unknown sample {sample!r}; choose one of {', '.join(SAMPLES)}")


def load_sample(sample: str) -> tuple[np.ndarray, np.ndarray]:
    """(image, stroke labels) of a bundled sample: ``"fluorescence"`` (256x256 grey uint8) or
    ``"he"`` (256x320x3 RGB uint8)."""
    _check(sample)
    return _read(f"{sample}_image.png"), _read(f"{sample}_strokes.png")


def load_fluorescence_sample() -> tuple[np.ndarray, np.ndarray]:
    return load_sample("fluorescence")


def load_he_sample() -> tuple[np.ndarray, np.ndarray]:
    return load_sample("he")


def load_sample_mask(sample: str) -> np.ndarray:
    """The dense ground truth of a sample as bool (True = nucleus), for checking results."""
    _check(sample)
    return _read(f"{sample}_mask.png") > 0


def _layers(sample: str, title: str) -> list[tuple[Any, dict[str, Any], str]]:
    image, strokes = load_sample(sample)
    return [
        (image, {"name": f"{title} tile (DSB2018)", "rgb": image.ndim == 3}, "image"),
        (strokes, {"name": f"{title} strokes", "metadata": {"class_names": list(CLASS_NAMES)}}, "labels"),
    ]


def fluorescence_sample_layers() -> list[tuple[Any, dict[str, Any], str]]:
    """npe2 sample data: the fluorescence tile and its strokes."""
    return _layers("fluorescence", "Fluorescence")


def he_sample_layers() -> list[tuple[Any, dict[str, Any], str]]:
    """npe2 sample data: the H&E tile and its strokes."""
    return _layers("he", "H&E")
