"""From napari layers' arrays to training patches: layout, normalisation, sampling, augmentation."""

from .augmentation import Augmenter
from .layout import SliceView, to_slices, training_slices, validate_label_set
from .normalisation import Normalisation, compute_normalisation
from .sampling import PatchSampler, split_validation, validation_crops

__all__ = [
    "Augmenter",
    "Normalisation",
    "PatchSampler",
    "SliceView",
    "compute_normalisation",
    "split_validation",
    "to_slices",
    "training_slices",
    "validate_label_set",
    "validation_crops",
]
