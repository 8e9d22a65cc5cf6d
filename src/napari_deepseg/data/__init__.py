"""From napari layers' arrays to training patches: array layout, pair checks, normalisation, the
validation split, sampling and augmentation."""

from .augmentation import Augmenter
from .layout import SliceView, to_slices
from .normalisation import Normalisation, compute_normalisation
from .pairs import training_slices, validate_label_set
from .sampling import PatchSampler, validation_crops
from .split import validation_masks
from .training_set import TrainingSet

__all__ = [
    "Augmenter",
    "Normalisation",
    "PatchSampler",
    "TrainingSet",
    "SliceView",
    "compute_normalisation",
    "to_slices",
    "training_slices",
    "validate_label_set",
    "validation_crops",
    "validation_masks",
]
