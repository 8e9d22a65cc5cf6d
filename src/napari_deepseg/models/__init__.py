"""Segmentation architectures, built by name through one registry.

Every model is a :class:`SegmentationNetwork`, which states the input and output contract.
"""

from ._base import SegmentationNetwork
from ._download import WeightsDownloadError, download_pretrained
from ._pretrained import PretrainedWeights, pretrained_weights_available, pretrained_weights_status
from ._registry import ArchitectureSpec, architecture_spec, available_architectures, build_model

__all__ = [
    "ArchitectureSpec",
    "PretrainedWeights",
    "SegmentationNetwork",
    "WeightsDownloadError",
    "architecture_spec",
    "available_architectures",
    "build_model",
    "download_pretrained",
    "pretrained_weights_available",
    "pretrained_weights_status",
]
