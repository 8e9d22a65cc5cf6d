from __future__ import annotations

import os

# pytest-qt picks its own binding (PySide6, PyQt6, PyQt5 first found) unless told; qtpy then follows
# whichever was imported first. QT_API alone should choose both.
if "QT_API" in os.environ:
    os.environ.setdefault("PYTEST_QT_API", os.environ["QT_API"])

import numpy as np
import pytest
import torch

from napari_deepseg.config import AugmentationConfig, TrainingConfig


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)
    np.random.seed(0)  # noqa: NPY002 (legacy global seed: code under test may still draw from it)


def fast_config(**changes) -> TrainingConfig:
    """Small, deterministic CPU settings for tests."""
    base = dict(
        pretrained=False,
        iterations=5,
        batch_size=2,
        patch_size=64,
        device="cpu",
        precision="fp32",
        validation_fraction=0.0,
        augmentation=AugmentationConfig.disabled(),
        seed=0,
    )
    base.update(changes)
    return TrainingConfig(**base)


@pytest.fixture(scope="session")
def fluo_crop() -> tuple[np.ndarray, np.ndarray]:
    """A real 64x64 fluorescence crop (DSB2018) with labels from its ground truth: 1 background, 2 nucleus,
    and 0 (unlabelled) on a random half of the pixels."""
    from napari_deepseg import sample_data

    image, _ = sample_data.load_fluorescence_sample()
    mask = sample_data.load_sample_mask("fluorescence")
    best = max(
        ((y, x) for y in range(0, 192, 16) for x in range(0, 192, 16)),
        key=lambda yx: -abs(mask[yx[0] : yx[0] + 64, yx[1] : yx[1] + 64].mean() - 0.35),
    )
    y, x = best
    crop = np.ascontiguousarray(image[y : y + 64, x : x + 64])
    labels = mask[y : y + 64, x : x + 64].astype(np.uint8) + 1
    labels[np.random.default_rng(1).random(labels.shape) < 0.5] = 0
    return crop, labels


def pytest_report_header(config: pytest.Config) -> str:
    """Free disk space where tmp_path goes: a full disk fails the tests that write files."""
    import shutil
    import tempfile

    free = shutil.disk_usage(tempfile.gettempdir()).free
    return f"napari-deepseg: {free / 2**30:.1f} GiB free in {tempfile.gettempdir()}"
