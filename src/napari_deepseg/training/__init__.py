"""Training: the loop (a generator), its progress records and the sparse-label losses."""

from .events import TrainingProgress, ValidationMetrics
from .loop import Trainer

__all__ = ["Trainer", "TrainingProgress", "ValidationMetrics"]
