from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_deepseg import SegmentationModel
from napari_deepseg.data.normalisation import Normalisation
from napari_deepseg.models import build_model

# Small untrained networks: the two fastest architectures on their lightest encoders.
ARCHITECTURES = (("unet", "resnet18"), ("fcn8s", "vgg16"))


def small_model(architecture: str = "unet", encoder: str = "resnet18", mode: str = "per_image"):
    torch.manual_seed(0)
    module = build_model(architecture, num_classes=3, in_channels=1, encoder=encoder).eval()
    return SegmentationModel(
        module,
        architecture=architecture,
        encoder=encoder,
        num_classes=3,
        normalisation=Normalisation(low=(10.0,), high=(200.0,), mode=mode),
        class_names=("background", "nucleus", "edge"),
    )


def blobs(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth uint16 image with structure at a few pixels' scale (not constant per tile)."""
    noise = np.random.default_rng(seed).random((height, width))
    fy, fx = np.fft.fftfreq(height)[:, None], np.fft.rfftfreq(width)[None, :]
    smooth = np.fft.irfft2(np.fft.rfft2(noise) * np.exp(-(fy**2 + fx**2) / 0.002), s=(height, width))
    smooth = (smooth - smooth.min()) / np.ptp(smooth)
    return (100 + 3000 * smooth).astype(np.uint16)


def network_input(model: SegmentationModel, image: np.ndarray) -> np.ndarray:
    """What the exported networks take: the image normalised as prediction does, (1, C, H, W)."""
    view = model.view(image)
    return model.normalisation.for_image(view.data).apply(view.data)


@pytest.fixture(scope="module", params=ARCHITECTURES, ids=lambda a: "-".join(a))
def model(request) -> SegmentationModel:
    return small_model(*request.param)
