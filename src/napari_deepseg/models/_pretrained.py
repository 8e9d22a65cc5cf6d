"""ImageNet weights of the encoders: where they are looked for, and reading them.

Only files already on disk are used (an explicit file or the torch hub cache); training never
downloads. :func:`~._download.download_pretrained` fetches a file into the cache when the user
asks for it. An encoder whose weights are missing warns once per session.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torchvision.models import (
    ResNet18_Weights,
    ResNet34_Weights,
    ResNet50_Weights,
    ResNet101_Weights,
    VGG16_BN_Weights,
    VGG16_Weights,
    WeightsEnum,
)

# Hub-cache candidates per encoder, in order of preference (torchvision's DEFAULT first).
IMAGENET_WEIGHTS: dict[str, tuple[WeightsEnum, ...]] = {
    "vgg16": (VGG16_Weights.IMAGENET1K_V1,),
    "vgg16_bn": (VGG16_BN_Weights.IMAGENET1K_V1,),
    "resnet18": (ResNet18_Weights.IMAGENET1K_V1,),
    "resnet34": (ResNet34_Weights.IMAGENET1K_V1,),
    "resnet50": (ResNet50_Weights.IMAGENET1K_V2, ResNet50_Weights.IMAGENET1K_V1),
    "resnet101": (ResNet101_Weights.IMAGENET1K_V2, ResNet101_Weights.IMAGENET1K_V1),
}

# Encoders already warned about, so a session that builds many models warns once.
_warned_encoders: set[str] = set()


@dataclass(frozen=True)
class PretrainedWeights:
    """Whether ImageNet weights for an encoder are on disk, and where to put them if not.

    Attributes
    ----------
    encoder
        The encoder's name.
    url
        torchvision's download address of the preferred file.
    expected_path
        Where that file is looked for (the torch hub cache).
    found
        The cache file that ``pretrained=True`` will load, or ``None``.
    """

    encoder: str
    url: str
    expected_path: Path
    found: Path | None

    @property
    def available(self) -> bool:
        return self.found is not None

    @property
    def instructions(self) -> str:
        """What a user does to make the weights available offline."""
        return f"download {self.url} and save it as {self.expected_path}"


def weights_cache_paths(encoder: str) -> list[Path]:
    """Torch hub cache files that hold ImageNet weights for ``encoder``, most preferred first."""
    check_encoder(encoder)
    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    return [checkpoints / Path(w.url).name for w in IMAGENET_WEIGHTS[encoder]]


def pretrained_weights_status(encoder: str) -> PretrainedWeights:
    """Look for ImageNet weights of ``encoder`` in the torch hub cache (no download is tried).

    Parameters
    ----------
    encoder
        One of :data:`~napari_deepseg.models.encoders.ENCODERS`.

    Raises
    ------
    ValueError
        For an unknown encoder.
    """
    candidates = weights_cache_paths(encoder)
    found = next((p for p in candidates if p.is_file()), None)
    return PretrainedWeights(encoder, IMAGENET_WEIGHTS[encoder][0].url, candidates[0], found)


def pretrained_weights_available(encoder: str) -> bool:
    """Whether ImageNet weights for ``encoder`` are in the torch hub cache (no download is tried)."""
    return pretrained_weights_status(encoder).available


def check_encoder(name: str) -> None:
    if name not in IMAGENET_WEIGHTS:
        raise ValueError(f"unknown encoder {name!r}; available: {', '.join(IMAGENET_WEIGHTS)}")


def pretrained_state_dict(
    encoder: str, weights_path: str | Path | None
) -> tuple[dict[str, torch.Tensor], Path] | None:
    """The state dict in ``weights_path``, else in the hub cache, and its file; ``None`` (after
    one warning per encoder) when there is none."""
    if weights_path is not None:
        path = Path(weights_path)
        if not path.is_file():
            raise FileNotFoundError(f"weights file {path} for the {encoder} encoder does not exist")
    else:
        status = pretrained_weights_status(encoder)
        if status.found is None:
            if encoder not in _warned_encoders:
                _warned_encoders.add(encoder)
                warnings.warn(
                    f"Pretrained ImageNet weights for the {encoder} encoder are not available offline, so "
                    f"training starts from scratch. To use them, run `napari-deepseg weights download "
                    f"{encoder}` (or press 'Download ImageNet weights' in the Train widget), or "
                    f"{status.instructions}",
                    UserWarning,
                    stacklevel=5,
                )  # stacklevel 5 is the caller of build_model
            return None
        path = status.found
    return _read_state_dict(path), path


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load raises many types for damaged files
        raise ValueError(f"weights file {path} could not be read: {error}") from error
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"weights file {path} does not hold a state dict of tensors")
    return state
