"""napari-deepseg: train semantic-segmentation networks from sparse strokes.

The public API below never imports Qt or napari; the widgets live in ``napari_deepseg._qt``.
"""

from __future__ import annotations

__version__ = "0.1.0"

from ._llvm_guard import hide_triton_if_llvm_is_loaded

hide_triton_if_llvm_is_loaded()  # before torch/torchvision are imported below


from .config import AugmentationConfig, TrainingConfig
from .errors import DeviceOutOfMemoryError, TrainingDivergedError
from .export import ExportError
from .models import available_architectures
from .prediction import CompactProbabilities, PredictionOptions, apply_threshold
from .segmentation_model import SegmentationModel
from .tiling import TilingOptions
from .training import Trainer, TrainingProgress, ValidationMetrics
from .training.tensorboard import TensorBoardLogger
from .uncertainty import suggest_next_region, uncertainty

__all__ = [
    "AugmentationConfig",
    "CompactProbabilities",
    "DeviceOutOfMemoryError",
    "ExportError",
    "PredictionOptions",
    "SegmentationModel",
    "TensorBoardLogger",
    "TilingOptions",
    "Trainer",
    "TrainingConfig",
    "TrainingDivergedError",
    "TrainingProgress",
    "ValidationMetrics",
    "apply_threshold",
    "available_architectures",
    "suggest_next_region",
    "uncertainty",
    "__version__",
]
