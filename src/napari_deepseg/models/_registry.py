"""Architectures are registered by name and built through one function.

Each is a :class:`~napari_deepseg.models._base.SegmentationNetwork` subclass, built by its ``build``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ._base import SegmentationNetwork

Network = TypeVar("Network", bound=type[SegmentationNetwork])


@dataclass(frozen=True)
class ArchitectureSpec:
    name: str
    display_name: str
    encoders: tuple[str, ...]
    default_encoder: str
    hint: str  # one line for users choosing between architectures
    network: type[SegmentationNetwork]
    default_learning_rate: float = 1e-3


_ARCHITECTURES: dict[str, ArchitectureSpec] = {}


def register_architecture(
    name: str,
    *,
    display_name: str,
    encoders: tuple[str, ...],
    default_encoder: str,
    hint: str,
    default_learning_rate: float = 1e-3,
) -> Callable[[Network], Network]:
    """Class decorator that adds a :class:`SegmentationNetwork` subclass to the registry; a
    duplicate name is an error."""
    if default_encoder not in encoders:
        raise ValueError(f"default encoder {default_encoder!r} is not among {encoders}")

    def decorate(network: Network) -> Network:
        if name in _ARCHITECTURES:
            raise ValueError(f"architecture {name!r} is already registered")
        _ARCHITECTURES[name] = ArchitectureSpec(
            name, display_name, tuple(encoders), default_encoder, hint, network, default_learning_rate
        )
        return network

    return decorate


def available_architectures() -> list[str]:
    """Names of the registered architectures, the default (``unet``) first, then sorted."""
    _load_builtin_architectures()
    return sorted(_ARCHITECTURES, key=lambda n: (n != "unet", n))


def architecture_spec(name: str) -> ArchitectureSpec:
    _load_builtin_architectures()
    try:
        return _ARCHITECTURES[name]
    except KeyError:
        known = ", ".join(available_architectures())
        raise ValueError(f"unknown architecture {name!r}; available: {known}") from None


def build_model(
    architecture: str,
    *,
    num_classes: int,
    in_channels: int,
    encoder: str | None = None,
    pretrained: bool = False,
    weights_path: str | Path | None = None,
    options: Mapping[str, Any] | None = None,
) -> SegmentationNetwork:
    """Build a registered architecture.

    ``options`` are the architecture's own arguments (``SegmentationNetwork.options``; for
    U-Net ``{"upsampling": "nearest" | "bilinear"}``), its defaults when ``None``.

    ``pretrained=True`` loads ImageNet encoder weights when they are available offline
    (``weights_path`` or the torch hub cache) and otherwise warns once and starts from scratch.
    """
    spec = architecture_spec(architecture)
    encoder = encoder or spec.default_encoder
    if encoder not in spec.encoders:
        choices = ", ".join(spec.encoders)
        raise ValueError(f"encoder {encoder!r} is not available for {architecture}; choose one of {choices}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if in_channels < 1:
        raise ValueError(f"in_channels must be >= 1, got {in_channels}")
    return spec.network.build(
        num_classes=num_classes,
        in_channels=in_channels,
        encoder=encoder,
        pretrained=pretrained,
        weights_path=weights_path,
        options=options,
    )


def _load_builtin_architectures() -> None:
    # Importing the modules runs their @register_architecture decorators.
    from . import deeplabv3plus, fcn8s, unet  # noqa: F401
