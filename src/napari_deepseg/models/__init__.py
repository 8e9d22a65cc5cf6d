"""Segmentation architectures, built by name through one registry.

Every model maps images (N, C, H, W) of any H and W to logits (N, K, H, W) at input size.
"""

from ._registry import ArchitectureSpec, architecture_spec, available_architectures, build_model
from .encoders import pretrained_weights_available

__all__ = [
    "ArchitectureSpec",
    "architecture_spec",
    "available_architectures",
    "build_model",
    "pretrained_weights_available",
]
